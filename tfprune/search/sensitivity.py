"""Sensitivity: the validation accuracy each layer keeps when it alone is cut to a width.

For each searched layer and a few widths, the baseline's filters of least L2 norm in that
layer are masked (the prune stage's criterion), the model is fine-tuned for a few steps
(the rest of the network adapts, as it will in the real training; the teacher distils if
there is one) and its accuracy is measured on the validation split. `Sensitivity` turns
these points into a predicted accuracy loss for any candidate: per layer, the loss at its
width (linear between measured widths, never less for a narrower width), summed over the
layers, as in the sensitivity analyses of Han et al. and Distiller.
"""

import numpy as np

# Fractions of a layer's units whose accuracy is measured; the grid between is interpolated.
FRACTIONS = (0.7, 0.5, 0.35, 0.25, 0.15, 0.1, 0.05, 0.02)


def points(units, fractions=FRACTIONS):
    """The widths measured for a layer of `units` units, widest first (1 at the least)."""
    return sorted({max(1, round(units * f)) for f in fractions} - {units}, reverse=True)


def measure(model, layers, train, validation, memo, *, steps, batch_size, optimizer, loss,
            teacher=None, temperature=4.0, weight=0.5, from_logits=False, seed=0,
            time_left=None, log=None):
    """Measures every layer at its `points` into `memo` (`"layer:width"` -> accuracy).

    Args:
        model: The baseline Keras model (not changed).
        layers: Its `tfprune.search.candidates.Layers`.
        train: `(x, y)` arrays; the fine-tuning draws `steps * batch_size` of them (seeded).
        validation: `(x, y)` arrays the accuracy is measured on.
        memo: Dict-like; points already in it are not measured again.
        steps: Integer, fine-tuning steps after the cut (0: none).
        batch_size: Integer.
        optimizer: Function returning a new Keras optimizer.
        loss: A Keras loss on the labels.
        teacher: A Keras model to distil from, or `None`.
        temperature: Float, the distillation temperature.
        weight: Float, the distillation term's share of the loss.
        from_logits: Boolean, whether the models output logits.
        seed: Integer, seeds the draw and the training.
        time_left: Function returning the seconds left, or `None`; measuring stops at 0.
        log: Function taking a line of progress, or `None`.

    Returns:
        `memo`.
    """
    import tfprune
    from tfprune.distill import Distiller

    todo = [(layer, width) for layer, units in layers.units.items() for width in points(units)
            if f"{layer}:{width}" not in memo]
    if not todo:
        return memo
    x, y = train
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(y), size=min(len(y), max(1, steps) * batch_size), replace=False)
    # One wrapped copy serves every point: weights reset, masks set, optimizer state zeroed,
    # so Keras traces its training step once (a new model per point would retrace each time).
    wrapped = tfprune.prune(model, tfprune.ConstantSparsity(0.0, begin_step=0),
                            granularity={layer: "filter" for layer in layers.units},
                            layers=list(layers.units))
    wrappers = {w.layer.name: w for w in wrapped.layers
                if isinstance(w, tfprune.PruneLowMagnitude)}
    start = wrapped.get_weights()
    trainer = wrapped if teacher is None else Distiller(
        wrapped, teacher, temperature=temperature, weight=weight, from_logits=from_logits)
    trainer.compile(optimizer=optimizer(), loss=loss)
    trainer.optimizer.build(trainer.trainable_variables)
    fresh = [np.asarray(v) for v in trainer.optimizer.variables]  # step 0, zero moments
    for layer, width in todo:
        if time_left is not None and time_left() <= 0:
            return memo
        wrapped.set_weights(start)
        for name, wrapper in wrappers.items():  # the masks are fixed: no UpdatePruningStep
            wrapper.update_masks(layers.sparsities({layer: width})[layer] if name == layer
                                 else 0.0)
        if steps:
            for variable, value in zip(trainer.optimizer.variables, fresh, strict=True):
                variable.assign(value)
            _seed(seed)
            trainer.fit(x[pick], y[pick], batch_size=batch_size, epochs=1, shuffle=True,
                        verbose=0)
        memo[f"{layer}:{width}"] = accuracy(wrapped, validation)
        if log:
            log(f"sensitivity {layer} {layers.units[layer]} -> {width}: validation accuracy "
                f"{memo[f'{layer}:{width}']:.2%}")
    return memo


def _seed(seed):
    import keras

    keras.utils.set_random_seed(seed)


def accuracy(model, data, batch_size=1000):
    """Top-1 accuracy of `model` on `data = (x, y)`, called eagerly batch by batch."""
    x, y = data
    correct = sum(int(np.sum(np.argmax(np.asarray(model(x[i:i + batch_size], training=False)),
                                       axis=-1) == y[i:i + batch_size]))
                  for i in range(0, len(y), batch_size))
    return correct / len(y)


class Sensitivity:
    """Predicted accuracy loss (percentage points) of candidates, from measured points.

    Args:
        layers: The searched `Layers`.
        baseline_accuracy: Float, the baseline's validation accuracy.
        memo: Dict of `"layer:width"` -> validation accuracy (from `measure`).

    Example:

    >>> from tfprune.search.sensitivity import Sensitivity
    >>> class Two:   # the searched layers: their units
    ...     units = {"a": 10, "b": 10}
    >>> memo = {"a:5": 0.98, "a:2": 0.90, "b:5": 0.991}
    >>> s = Sensitivity(Two, 0.99, memo)
    >>> round(s.loss("a", 5), 6), round(s.loss("a", 8), 6), s.loss("b", 5)
    (1.0, 0.4, 0.0)
    >>> round(s.predict({"a": 5, "b": 10}), 6)
    1.0
    """

    def __init__(self, layers, baseline_accuracy, memo):
        self.baseline_accuracy = baseline_accuracy
        self.curves = {}
        for layer, units in layers.units.items():
            measured = sorted(((int(key.split(":")[1]), acc) for key, acc in memo.items()
                               if key.rsplit(":", 1)[0] == layer), reverse=True)
            widths, losses = [units], [0.0]
            for width, acc in measured:
                # Never less loss for a narrower cut: the measurements' noise is not a gain.
                widths.append(width)
                losses.append(max(losses[-1], 100.0 * (baseline_accuracy - acc)))
            self.curves[layer] = (np.array(widths[::-1], float), np.array(losses[::-1]))

    def loss(self, layer, width):
        """The predicted loss (pp) of cutting `layer` alone to `width`."""
        widths, losses = self.curves[layer]
        if len(widths) > 1 and width < widths[0]:  # below the narrowest measured: extend
            slope = (losses[1] - losses[0]) / (widths[1] - widths[0])
            return float(losses[0] + slope * (width - widths[0]))
        return float(np.interp(width, widths, losses))

    def predict(self, widths):
        """The predicted loss (pp) of a candidate: the sum of its layers' losses."""
        return sum(self.loss(layer, width) for layer, width in widths.items())
