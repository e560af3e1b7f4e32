"""Accuracy under cuts: the sensitivity of each layer, and the greedy's carried model.

A `Tuner` holds one copy of the baseline with its searched layers wrapped in pruning masks.
Cutting a layer to a width masks its filters of least L2 norm (the prune stage's
criterion), with everything that makes their channels (a BatchNorm, a depthwise conv, the
other branch of a residual `Add`: `tfprune.pruning.groups`); the model is then fine-tuned for a few
steps (the rest of the network adapts, as it will in the real training; the teacher distils
if there is one), its BatchNorm statistics are recomputed (`tfprune.pruning.batchnorm`) and its
accuracy is measured on the validation split. One compiled copy
serves every cut (weights reset, masks set, optimizer state zeroed), so Keras traces its
training step once.

- `measure`, the sensitivity analysis: each layer alone cut to a few widths, from the
  baseline. `Sensitivity` turns these points into a predicted accuracy loss for any
  candidate (per layer, linear between measured widths, never less for a narrower width,
  summed over the layers, as in the sensitivity analyses of Han et al. and Distiller).
- `Path`, the greedy's model, NetAdapt's way (Yang et al. 2018): each step's proposals
  start from the weights of the step before, so a candidate many steps down has been cut
  gradually and fine-tuned at every step, as gradual pruning trains it, and its accuracy
  is measured, not summed.
"""

import numpy as np

from tfprune.pruning import batchnorm
from tfprune.stats import correct

# Training images each cut's BatchNorm statistics are recomputed on before it is measured.
BATCHNORM_IMAGES = 1024
# Fractions of a layer's units whose accuracy is measured; the grid between is interpolated.
FRACTIONS = (0.7, 0.5, 0.35, 0.25, 0.15, 0.1, 0.05, 0.02)


def points(units, fractions=FRACTIONS):
    """The widths measured for a layer of `units` units, widest first (1 at the least)."""
    return sorted({max(1, round(units * f)) for f in fractions} - {units}, reverse=True)


class Tuner:
    """One wrapped, compiled copy of the baseline that cuts layers and fine-tunes.

    Args:
        model: The baseline Keras model (not changed).
        layers: Its `tfprune.search.candidates.Layers`.
        train: `(x, y)` arrays to fine-tune on: a seeded permutation, read in slices of
            `steps * batch_size` (slice `depth` for a cut `depth` steps from the baseline).
        validation: `(x, y)` arrays the accuracy is measured on.
        steps: Integer, fine-tuning steps after a cut (0: none).
        batch_size: Integer.
        optimizer: Function returning a new Keras optimizer.
        loss: A Keras loss on the labels.
        teacher: A Keras model to distil from, or `None`.
        temperature: Float, the distillation temperature, defaults to `4.0`.
        weight: Float, the distillation term's share of the loss, defaults to `0.5`.
        from_logits: Boolean, whether the models output logits, defaults to `False`.
        seed: Integer, seeds the permutation and each fine-tuning, defaults to `0`.
    """

    def __init__(self, model, layers, train, validation, *, steps, batch_size, optimizer,
                 loss, teacher=None, temperature=4.0, weight=0.5, from_logits=False, seed=0):
        import tfprune
        from tfprune.distill import Distiller
        from tfprune.pruning.groups import FilterGroups

        self.layers, self.validation, self.steps, self.seed = layers, validation, steps, seed
        self.base_right = correct(model, validation)  # pairs every cut with the baseline
        self.table = None
        self.batch_size = batch_size
        self.x, self.y = train
        self.order = np.random.default_rng(seed).permutation(len(self.y))
        # The layers that follow a searched one's channels (its BatchNorm, a depthwise conv)
        # are wrapped too and cut with it, by channel group, as the prune stage cuts them.
        self.wrapped = tfprune.prune(model, tfprune.ConstantSparsity(0.0, begin_step=0),
                                     granularity={layer: "filter" for layer in layers.units})
        self.wrappers = {w.layer.name: w for w in self.wrapped.layers
                         if isinstance(w, tfprune.PruneLowMagnitude)}
        self.groups = FilterGroups.of(self.wrapped)
        self.start = self.wrapped.get_weights()
        self.trainer = self.wrapped if teacher is None else Distiller(
            self.wrapped, teacher, temperature=temperature, weight=weight,
            from_logits=from_logits)
        self.trainer.compile(optimizer=optimizer(), loss=loss)
        self.trainer.optimizer.build(self.trainer.trainable_variables)
        self.batchnorm_images = batchnorm.sample(self.x, BATCHNORM_IMAGES, seed)
        self._fresh = [np.asarray(v) for v in self.trainer.optimizer.variables]

    def cut(self, state, cuts, depth=0):
        """Cuts layers from `state` and fine-tunes; `(validation accuracy, new state)`.

        The cut model's answers are paired with the baseline's on the validation images:
        `table` holds the counts `(both right, only the baseline, only the cut, neither)`
        of the last cut (`tfprune.stats.PairedDrop.of(*table)`).

        Args:
            state: Weights of the wrapped model (`start`, or a state this returned).
            cuts: Dict of layer name -> width to cut it to (within the filters kept).
            depth: Integer, which slice of the training data fine-tunes.
        """
        from tfprune.pruning.groups import update_masks

        self.wrapped.set_weights(state)
        due = {self.wrappers[layer]: self.layers.sparsities({layer: width})[layer]
               for layer, width in cuts.items()}  # masks fixed from here: no UpdatePruningStep
        if self.groups is not None:
            self.groups.sync()  # the channels `state` had already cut stay cut
        update_masks(self.groups, due)
        if self.steps:
            for variable, value in zip(self.trainer.optimizer.variables, self._fresh,
                                       strict=True):
                variable.assign(value)
            size = self.steps * self.batch_size
            start = (depth * size) % len(self.y)
            pick = np.take(self.order, range(start, start + size), mode="wrap")
            _seed(self.seed + depth)
            self.trainer.fit(self.x[pick], self.y[pick], batch_size=self.batch_size,
                             epochs=1, shuffle=True, verbose=0)
        from tfprune import stats

        # The cut's own BatchNorm statistics (adaptive BatchNorm), or its accuracy would be
        # judged with the statistics of the wider model it was cut from.
        batchnorm.recalibrate(self.wrapped, self.batchnorm_images, self.batch_size)
        right = correct(self.wrapped, self.validation)
        self.table = list(stats.paired(self.base_right, right).table)
        return int(np.sum(right)) / len(right), self.wrapped.get_weights()


def measure(tuner, memo, time_left=None, log=None, fractions=FRACTIONS, sets=None):
    """Measures every searched layer alone at its `points` into `memo`.

    Args:
        tuner: A `Tuner`.
        memo: Dict-like of `"layer:width"` -> validation accuracy; points already in it
            are not measured again.
        time_left: Function returning the seconds left, or `None`; measuring stops at 0.
        log: Function taking a line of progress, or `None`.
        fractions: The fractions of a layer's units measured, defaults to `FRACTIONS`.
        sets: Groups of layers cut together (coupled by a residual `Add`: the prune stage
            cuts their channels to the widest), recorded under their first layer; `None`
            (the default) cuts each layer alone.

    Returns:
        `memo`.
    """
    units = tuner.layers.units
    for group in sets or [[layer] for layer in units]:
        layer = group[0]
        for width in points(units[layer], fractions):
            key = f"{layer}:{width}"
            if key in memo:
                continue
            if time_left is not None and time_left() <= 0:
                return memo
            memo[key] = tuner.cut(tuner.start, {member: width for member in group})[0]
            if log:
                together = f" (with {', '.join(group[1:])})" if len(group) > 1 else ""
                log(f"sensitivity {layer}{together} {units[layer]} -> {width}: validation "
                    f"accuracy {memo[key]:.2%}")
    return memo


class Path:
    """The greedy's carried model: a candidate is its parent with one layer cut, fine-tuned.

    Each candidate's accuracy is kept in `memo` (name -> `val_accuracy`, `parent`,
    `layer`, `depth`), so that a resumed search reads it back; the weights along the path
    are kept in memory and, after a resume, made again from the parent's (each cut is
    seeded, so they come out the same).

    Args:
        tuner: A `Tuner`.
        baseline_accuracy: Float, the uncut model's validation accuracy.
        memo: Dict-like, see above.
    """

    def __init__(self, tuner, baseline_accuracy, memo):
        from tfprune.search.candidates import name

        self.tuner, self.memo, self._name = tuner, memo, name
        full = tuner.layers.full
        self.states = {name(full): tuner.start}
        self.full, self.baseline_accuracy = name(full), baseline_accuracy

    def accuracy(self, widths):
        """The validation accuracy of `widths` reached along the path (uncut: baseline)."""
        key = self._name(widths)
        return self.baseline_accuracy if key == self.full else self.memo[key]["val_accuracy"]

    def step(self, parent, layer, width):
        """The accuracy of `parent` with `layer` cut to `width`, fine-tuned from `parent`."""
        widths = {**parent, layer: width}
        key = self._name(widths)
        if key not in self.memo:
            self._make(parent, layer, width)
        return self.memo[key]["val_accuracy"]

    def losses(self, widths):
        """The accuracy each layer's cuts lost on the way to `widths`, in points.

        Walks back from `widths` (a candidate on the path) to the full model: each step
        cut one layer, and lost what its parent's accuracy exceeds its own (a gain counts
        as nothing lost).

        Returns:
            A dict of layer name -> list of `(from width, to width, points lost)`, the
            last cut first.
        """
        result = {layer: [] for layer in self.tuner.layers.units}
        key = self._name(widths)
        while key != self.full and key in self.memo:
            info = self.memo[key]
            lost = 100.0 * (self._accuracy_of(info["parent"]) - info["val_accuracy"])
            width = int(key.split("-")[list(result).index(info["layer"])])
            result[info["layer"]].append((info["from"], width, max(lost, 0.0)))
            key = info["parent"]
        return result

    def _accuracy_of(self, key):
        return self.baseline_accuracy if key == self.full else self.memo[key]["val_accuracy"]

    def paired(self, widths):
        """The drop of `widths` (reached along the path) from the baseline, paired on the
        validation images (`tfprune.stats.PairedDrop`), or `None` if not recorded."""
        from tfprune import stats

        info = self.memo.get(self._name(widths)) or {}
        return stats.PairedDrop.of(*info["table"]) if info.get("table") else None

    def keep(self, path):
        """Forgets the weights of candidates not on `path` (a list of width dicts)."""
        names = {self._name(widths) for widths in path} | {self.full}
        self.states = {k: v for k, v in self.states.items() if k in names}

    def _state(self, widths):
        key = self._name(widths)
        if key not in self.states:  # after a resume: made again from its parent's
            info = self.memo[key]
            parent = {**widths, info["layer"]: info["from"]}
            self._make(parent, info["layer"], widths[info["layer"]])
        return self.states[key]

    def _make(self, parent, layer, width):
        widths = {**parent, layer: width}
        key, depth = self._name(widths), self._depth(parent) + 1
        value, state = self.tuner.cut(self._state(parent), {layer: width}, depth)
        self.states[key] = state
        if key not in self.memo:
            self.memo[key] = {"val_accuracy": value, "parent": self._name(parent),
                              "layer": layer, "from": parent[layer], "depth": depth,
                              "table": self.tuner.table}

    def _depth(self, widths):
        key = self._name(widths)
        return 0 if key == self.full else self.memo[key]["depth"]


def _seed(seed):
    import keras

    keras.utils.set_random_seed(seed)


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
