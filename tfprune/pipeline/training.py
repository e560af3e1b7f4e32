"""Training for the stages: optimizer, loss, compile, fit, evaluate, and `hold_zeros`.

The training stages run in the run's `tf.distribute` scope when there is one (the runner
enters it, see `tfprune.pipeline.distributed`): `in_scope` gives them a model whose
variables the strategy made, and `fit` trains with the global batch size and backs up
each epoch.

`fit` stops a stage the moment its loss or weights stop being finite numbers
(`DivergedError`, naming the stage, the epoch and the learning rate): a diverged model is
never saved, so nothing is exported from it and the finished stages stay for `--resume`.

`learner` wraps what a stage trains in a `tfprune.distill.Distiller` when the run distils.

Keras is imported inside the functions, when a stage first trains: importing the
pipeline (the command line does, to check its flags) stays free of TensorFlow.
"""

import contextlib
import functools
import math

import numpy as np

from tfprune import faults
from tfprune.errors import TfpruneError


class DivergedError(TfpruneError):
    """Training diverged: the loss or a weight became nan or infinite."""


def optimizer(config, learning_rate, steps):
    """The optimizer `config.optimizer`, its rate decaying over `steps` with `"cosine"`."""
    import keras

    if config.lr_schedule == "cosine" and steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    return {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD,
            "rmsprop": keras.optimizers.RMSprop}[config.optimizer](learning_rate)


def compile_model(model, config, learning_rate, steps):
    """Compiles `model` for classification with integer labels and an accuracy metric."""
    import keras

    from tfprune.distill import ends_in_softmax

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
    from tfprune.pipeline.validation import distills

    if teacher is None or not distills(config):
        return model
    from tfprune.distill import Distiller, ends_in_softmax

    return Distiller(model, teacher, temperature=config.distill_temperature,
                     weight=config.distill_weight, from_logits=not ends_in_softmax(model))


def fit(model, train, epochs, batch_size, config, callbacks=(), backup=None):
    """Trains `model` on `train = (x, y)`, shuffled, with `config.verbose` output.

    The random state is reset to `config.seed` first, so that a stage trains the same way
    whatever ran before it (a resumed run, or the search training a candidate to check it,
    gives the same weights as a full run). Under a `tf.distribute` strategy `batch_size` is
    the global batch, split over the replicas, so an epoch has the same steps as on one
    device.

    Args:
        model: A compiled Keras model.
        train: `(x, y)` NumPy arrays.
        epochs: Integer, epochs to train.
        batch_size: Integer, the (global) batch size.
        config: The `PipelineConfig` (its `verbose`).
        callbacks: Keras callbacks.
        backup: Folder or `None`. With a folder, the state after each epoch is kept there
            (`tfprune.backup.EpochBackup`, listed after `callbacks`): a fit that was killed
            and starts again with the same folder resumes after its last finished epoch.
            The caller removes the folder once the result is safe.

    Returns:
        Integer, the epoch training started from: 0, or the one restored from `backup`.

    Raises:
        DivergedError: the loss or a weight became nan or infinite (see `stop_on_divergence`).
    """
    import keras

    from tfprune import distribute

    keras.utils.set_random_seed(config.seed)
    callbacks = [*callbacks, stop_on_divergence(config)]  # before a backup of a diverged epoch
    if backup is not None:
        from tfprune.backup import EpochBackup

        callbacks.append(EpochBackup(backup, delete_checkpoint=False))
    x, y = train
    distribute.fit(model, x, y, batch_size=batch_size, epochs=epochs, shuffle=True,
                   callbacks=callbacks, verbose=config.verbose)
    return callbacks[-1].restored_epoch if backup is not None else 0


def stop_on_divergence(config, stage=None):
    """A Keras callback that stops training at once when it diverges.

    After every batch it checks the loss, after every epoch the weights; a nan or an
    infinity raises `DivergedError`, whose one line names the stage, the epoch and the
    learning rate and suggests a lower one.

    Args:
        config: The run's `PipelineConfig` (the stage's learning rate is read from it).
        stage: The `Stage` that trains, defaults to the one the runner is running.

    Returns:
        A `keras.callbacks.Callback`.

    Example:

    >>> import keras
    >>> from tfprune.pipeline import PipelineConfig, training
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(1e30), "mse")
    >>> model.fit(np.ones((8, 2)), np.ones((8, 1)), epochs=3, verbose=0,
    ...           callbacks=[training.stop_on_divergence(PipelineConfig())])
    Traceback (most recent call last):
    ...
    tfprune.pipeline.training.DivergedError: Training diverged: the loss is inf in epoch 2 ...
    """
    from tfprune.pipeline.runner import running

    return _divergence_callback_class()(config, stage or running())


@functools.cache
def _divergence_callback_class():
    import keras

    class StopOnDivergence(keras.callbacks.Callback):
        """Raises `DivergedError` on a non-finite loss (each batch) or weight (each epoch)."""

        def __init__(self, config, stage):
            super().__init__()
            self.config, self.stage, self.epoch = config, stage, 0
            self.point = f"train:{stage.name if stage else None}"

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise self._diverged(f"the loss is {float(loss)} in epoch {self.epoch + 1} "
                                     f"(batch {batch + 1})")
            faults.point(self.point)

        def on_epoch_end(self, epoch, logs=None):
            for weight in self.model.weights:
                if not np.all(np.isfinite(np.asarray(weight.numpy(), dtype=np.float64))):
                    raise self._diverged(f"the weight {weight.path!r} holds nan or inf after "
                                         f"epoch {epoch + 1}")

        def _diverged(self, what):
            return DivergedError(_diverged_message(self.config, self.stage, self.model, what))

    return StopOnDivergence


def _diverged_message(config, stage, model, what):
    """The one line of a divergence: stage, epoch, learning rate, and a lower one to try."""
    keys = [key for key in (stage.keys if stage else ()) if key.endswith("learning_rate")]
    if keys:
        key, rate = keys[0], getattr(config, keys[0])
        fix = f"lower --{key} (try {rate / 10:g})"
        received = f"{key}={rate:g}"
    else:
        rate = float(np.asarray(model.optimizer.learning_rate))
        fix = "lower the learning rate"
        received = f"learning_rate={rate:g}"
    where = f"Stage {stage.name!r} diverged" if stage else "Training diverged"
    return (f"{where}: {what} at learning rate {rate:g}: {fix}. Nothing of this stage was "
            f"saved; the finished stages are kept (--resume). Received: {received}")


def finite(model):
    """Whether every weight of `model` is a finite number (no nan, no infinity).

    Example:

    >>> import keras
    >>> from tfprune.pipeline.training import finite
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> finite(model)
    True
    >>> _ = model.layers[0].bias.assign([float("nan")])
    >>> finite(model)
    False
    """
    return all(np.all(np.isfinite(np.asarray(w, dtype=np.float64)))
               for w in model.get_weights())


def in_scope(model):
    """`model`, or under a `tf.distribute` strategy a copy whose variables the strategy made.

    Keras trains a model under a strategy only if the strategy made its variables (mirrored
    on each replica); a model built or loaded before the scope was entered is copied.
    """
    import tensorflow as tf

    return clone(model) if tf.distribute.has_strategy() else model


def clone(model):
    """A copy of `model` with its own weights (the caller's model is left alone)."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


@contextlib.contextmanager
def hold_zeros(model):
    """Keeps every zero in the model's kernels at zero while training inside the block.

    The biases (and BatchNorm scales and offsets) of channels pruned whole stay zero too
    (`tfprune.pruning.groups.dead_channel_masks`): such a channel keeps outputting exactly zero,
    and `shrink` removes it.

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

    from tfprune.pruning import groups

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
        for var, keep in groups.dead_channel_masks(model):
            saved.append((var, var.constraint))
            var.constraint = _Mask(keras.ops.convert_to_tensor(keep.astype(var.dtype)))
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

