"""Training for the stages: optimizer, loss, compile, fit, evaluate, and `hold_zeros`.

`learner` wraps what a stage trains in a `tfprune.distill.Distiller` when the run distils.

Keras is imported inside the functions, when a stage first trains: importing the
pipeline (the command line does, to check its flags) stays free of TensorFlow.
"""

import contextlib
import math

import numpy as np


def optimizer(config, learning_rate, steps):
    """The optimizer `config.optimizer`, its rate decaying over `steps` with `"cosine"`."""
    import keras

    if config.lr_schedule == "cosine" and steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    return {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD,
            "rmsprop": keras.optimizers.RMSprop}[config.optimizer](learning_rate)


def ends_in_softmax(model):
    """Whether `model`'s output is a softmax (probabilities) rather than logits.

    Reads the layer that makes the output, through pruning wrappers: a `Softmax` layer, or
    a layer whose `activation` is softmax (a `Dense(..., activation="softmax")` or an
    `Activation("softmax")`).

    Example:

    >>> import keras
    >>> from tfprune.pipeline.training import ends_in_softmax
    >>> dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> ends_in_softmax(dense)
    False
    >>> ends_in_softmax(keras.Sequential([dense, keras.layers.Softmax()]))
    True
    """
    import keras

    from tfprune.wrapper import unwrap

    try:
        last = model.outputs[0]._keras_history.operation  # the layer that makes the output
    except (AttributeError, IndexError, TypeError, ValueError):
        last = model.layers[-1]
    last = unwrap(last)
    if isinstance(last, keras.layers.Softmax):
        return True
    if isinstance(last, keras.Model):  # a nested model: its own output layer decides
        return ends_in_softmax(last)
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"


def compile_model(model, config, learning_rate, steps):
    """Compiles `model` for classification with integer labels and an accuracy metric."""
    import keras

    student = getattr(model, "student", model)  # a Distiller's loss is its student's
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not ends_in_softmax(student))
    model.compile(optimizer=optimizer(config, learning_rate, steps), loss=loss,
                  metrics=["accuracy"])


def steps(train, batch_size, epochs):
    """Optimizer steps of `epochs` over `train` in batches of `batch_size`."""
    return math.ceil(len(train[1]) / batch_size) * epochs


def learner(model, teacher, config):
    """What a stage trains: `model`, or a `tfprune.distill.Distiller` of it and `teacher`
    when the run distils (`config.distill`; by default, when a target is set).

    Compile and fit what it returns; the trained weights are `model`'s either way.
    """
    from tfprune.pipeline.config import distills

    if teacher is None or not distills(config):
        return model
    from tfprune.distill import Distiller

    return Distiller(model, teacher, temperature=config.distill_temperature,
                     weight=config.distill_weight, from_logits=not ends_in_softmax(model))


def fit(model, train, epochs, batch_size, config, callbacks=()):
    """Trains `model` on `train = (x, y)`, shuffled, with `config.verbose` output.

    The random state is reset to `config.seed` first, so that a stage trains the same way
    whatever ran before it (a resumed run, or the search training a candidate to check it,
    gives the same weights as a full run).
    """
    import keras

    keras.utils.set_random_seed(config.seed)
    x, y = train
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True,
              callbacks=list(callbacks), verbose=config.verbose)


def accuracy(model, test, batch_size=1000):
    """Top-1 accuracy of `model` on `test = (x, y)`.

    It calls the model eagerly batch by batch: `predict` would retrace for every new model.
    """
    x, y = test
    correct = sum(int(np.sum(np.argmax(np.asarray(model(x[i:i + batch_size], training=False)),
                                       axis=-1) == y[i:i + batch_size]))
                  for i in range(0, len(y), batch_size))
    return correct / len(y)


def clone(model):
    """A copy of `model` with its own weights (the caller's model is left alone)."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


@contextlib.contextmanager
def hold_zeros(model):
    """Keeps every zero in the model's kernels at zero while training inside the block.

    It sets a constraint on each kernel variable (the optimizer applies it after each
    update) and restores the previous one on exit, so nothing of it is saved with the model.

    Args:
        model: A Keras model whose zero weights must stay zero.

    Yields:
        The model.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from tfprune.pipeline import hold_zeros
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
    >>> _ = model.layers[0].kernel.assign([[0.0, 1.0], [1.0, 0.0]])
    >>> with hold_zeros(model):
    ...     model.compile("sgd", "mse")
    ...     _ = model.fit(np.ones((4, 2)), np.ones((4, 2)), epochs=2, verbose=0)
    >>> kernel = model.layers[0].kernel.numpy()
    >>> print(kernel[0, 0], kernel[1, 1])
    0.0 0.0
    """
    import keras

    saved = []
    try:
        for layer in model.layers:
            for var in getattr(layer, "trainable_weights", []):
                if len(var.shape) < 2:
                    continue
                mask = keras.ops.convert_to_tensor((np.asarray(var.numpy()) != 0)
                                                   .astype(var.dtype))
                saved.append((var, var.constraint))
                var.constraint = _Mask(mask)
        yield model
    finally:
        for var, constraint in saved:
            var.constraint = constraint


class _Mask:
    """A constraint that multiplies a variable by a fixed 0/1 mask."""

    def __init__(self, mask):
        self.mask = mask

    def __call__(self, w):
        return w * self.mask

