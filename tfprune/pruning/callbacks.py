"""Training callbacks: `UpdatePruningStep` moves the masks, `AdaptiveBatchNorm` keeps the
BatchNorm statistics true to them, `PruningSummaries` logs sparsity."""

import keras
import numpy as np

from tfprune.backend import sync_trainer_state
from tfprune.errors import TfpruneError
from tfprune.pruning import batchnorm
from tfprune.pruning.groups import FilterGroups, update_masks
from tfprune.pruning.wrapper import PruneLowMagnitude


def pruning_wrappers(model):
    """Every `PruneLowMagnitude` in `model`, nested models included, in layer order."""
    found = []
    for layer in model.layers if hasattr(model, "layers") else []:
        if isinstance(layer, PruneLowMagnitude):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(pruning_wrappers(layer))
    return found


def _filter_groups(model):
    """The `FilterGroups` of the model that holds the wrappers: `model` itself, or the one a
    trainer wraps (a `Distiller`'s student), so that a BatchNorm and a depthwise conv are
    cut with the filters before them however the pruned model is trained."""
    groups = FilterGroups.of(model)
    if groups is None:
        for layer in getattr(model, "layers", []):
            if isinstance(layer, keras.Model) and pruning_wrappers(layer):
                return _filter_groups(layer)
    return groups


def _wrappers_or_raise(model):
    wrappers = pruning_wrappers(model)
    if not wrappers:
        raise TfpruneError(
            f"Model {model.name!r} has no PruneLowMagnitude layer: prune it with "
            "tfprune.prune(model, schedule) before fitting with pruning callbacks."
        )
    return wrappers


class UpdatePruningStep(keras.callbacks.Callback):
    """Advances the pruning step each batch and recomputes masks when the schedule says.

    Required when fitting a pruned model: without it the masks stay all ones. At each batch
    the step goes up by one; a wrapper whose schedule says `should_prune` at that step
    recomputes its masks on the host and zeroes its pruned weights. Under `"filter"`
    granularity the masks move by coupled channel group (`tfprune.pruning.groups.FilterGroups`): a
    pruned filter takes its bias, the BatchNorm channel after it and the channels coupled
    with it by a residual `Add`. The step is counted on
    the host and written to every wrapper's `pruning_step` variable when masks change, at
    epoch ends, at the end of training and whenever the model is saved (so a checkpoint
    resumes where it stopped); ordinary batches run no TensorFlow op here. At the end of every
    epoch and of training the masks are applied to the weights again (the optimizer's
    momentum can move pruned weights), so saved and stripped weights equal mask x weight.
    On every Keras backend: under JAX, whose trainer holds the weights during an epoch, a
    batch that updates masks first writes them back (`tfprune.backend.sync_trainer_state`),
    and the trainer's next step reads the new masks.

    With `steps_per_execution=k` in `compile`, Keras calls the callback once per `k`
    batches: the step still counts batches, and a mask update due within those `k` steps
    happens at their start.

    Raises:
        TfpruneError: at `on_train_begin`, if the model has no `PruneLowMagnitude` layer.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="hidden"),
    ...                           keras.layers.Dense(2, name="out")])
    >>> pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.75, begin_step=0, frequency=4))
    >>> pruned.compile("adam", "mse")
    >>> x, y = np.random.rand(64, 8), np.random.rand(64, 2)
    >>> _ = pruned.fit(x, y, batch_size=8, epochs=2, verbose=0,
    ...                callbacks=[tfprune.UpdatePruningStep()])
    >>> tfprune.sparsity(pruned)
    {'hidden': 0.75, 'out': 0.75}
    >>> int(pruned.get_layer("prune_low_magnitude_hidden").pruning_step)   # 16 batches
    15
    """

    def __init__(self):
        super().__init__()
        self.wrappers = []
        self.groups = None
        self.step = -1
        self._per_call = 1
        self._epoch_base = -1

    def on_train_begin(self, logs=None):
        self.wrappers = _wrappers_or_raise(self.model)
        self.groups = _filter_groups(self.model)
        self.step = max(int(np.asarray(w.pruning_step)) for w in self.wrappers)
        self._per_call = max(1, int(getattr(self.model, "steps_per_execution", 1) or 1))

    def on_epoch_begin(self, epoch, logs=None):
        # The step is read, and the wrappers attached, here rather than at train begin: a
        # BackupAndRestore listed after this callback restores the steps after our
        # on_train_begin (and a fit it resumes at its last epoch runs no epoch at all).
        self.step = max(int(np.asarray(w.pruning_step)) for w in self.wrappers)
        self._epoch_base = self.step
        for wrapper in self.wrappers:
            wrapper.attach_step_source(self)

    def on_train_batch_begin(self, batch, logs=None):
        # Host work only, unless masks change: no TensorFlow op on an ordinary batch.
        # With steps_per_execution = k, Keras calls this once per k batches: the k steps
        # are counted, and a mask update due inside them happens at their start.
        first = self._epoch_base + batch + 1
        count = self._per_call
        if (self.params or {}).get("steps"):  # the last execution of an epoch may be short
            count = max(1, min(count, self.params["steps"] - batch))
        steps = range(first, first + count)
        self.step = steps[-1]
        answers, due = {}, {}
        for wrapper in self.wrappers:
            key = id(wrapper.schedule)
            if key not in answers:
                answers[key] = self._due(wrapper.schedule, steps)
            if answers[key] is not None:
                due[wrapper] = answers[key]
        if not due:
            return
        # Under JAX the trainer holds the weights during an epoch: write them back first,
        # so that the masks are computed from them and the next step reads the new ones.
        sync_trainer_state(self.model)
        for wrapper in due:
            wrapper.sync_step()
        update_masks(self.groups, due)

    @staticmethod
    def _due(schedule, steps):
        """The sparsity of the last step in `steps` that prunes, or None."""
        due = None
        for step in steps:
            should_prune, sparsity = schedule(step)
            if should_prune:
                due = sparsity
        return due

    def on_epoch_end(self, epoch, logs=None):
        for wrapper in self.wrappers:
            wrapper.sync_step()
            wrapper.apply_masks()

    def on_train_end(self, logs=None):
        self.on_epoch_end(None)
        for wrapper in self.wrappers:
            wrapper.attach_step_source(None)


class AdaptiveBatchNorm(keras.callbacks.Callback):
    """Recomputes the BatchNorm statistics wherever they are read: before each evaluation
    inside `fit` (the validation split), when training ends and, if asked, at the end of
    each epoch (for the callbacks listed after it that judge the model then).

    Pruning moves a BatchNorm's inputs faster than its moving averages follow them: a
    model cut during a short `fit` is evaluated, and saved, with the statistics of the
    model it was before (`tfprune.pruning.batchnorm`). This callback recomputes them on a fixed,
    seeded sample of the training images (`tfprune.pruning.batchnorm.recalibrate`). Training
    itself normalises with each batch's own statistics, so it needs no recalibration
    after a mask update: nothing it reads changes.

    Args:
        x: NumPy array of training images.
        images: Integer, how many of them (a seeded sample), defaults to `1024`.
        batch_size: Integer, defaults to `128`.
        seed: Integer, seeds the sample, defaults to `0`.
        at_epoch_end: Boolean, also recompute at the end of each epoch, defaults to
            `False`.

    Raises:
        TfpruneError: `images` or `batch_size` below 1.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="hidden"),
    ...                           keras.layers.BatchNormalization(momentum=0.999),
    ...                           keras.layers.Dense(2, name="out")])
    >>> pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, begin_step=0, frequency=1))
    >>> pruned.compile("adam", "mse")
    >>> x, y = np.random.rand(64, 8) + 5.0, np.random.rand(64, 2)
    >>> _ = pruned.fit(x, y, epochs=1, verbose=0, callbacks=[
    ...     tfprune.UpdatePruningStep(), tfprune.AdaptiveBatchNorm(x, images=64)])
    >>> bn = pruned.layers[1]
    >>> hidden = tfprune.strip(pruned).get_layer("hidden")(x)
    >>> bool(np.allclose(bn.moving_mean, np.mean(hidden, axis=0), atol=1e-4))
    True
    """

    def __init__(self, x, images=1024, batch_size=128, seed=0, at_epoch_end=False):
        super().__init__()
        for name, value in (("images", images), ("batch_size", batch_size)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise TfpruneError(f"`{name}` must be an integer >= 1. Received: "
                                   f"{name}={value!r}")
        self.x = batchnorm.sample(x, int(images), seed)
        self.batch_size = int(batch_size)
        self.at_epoch_end = bool(at_epoch_end)
        self.recalibrated = 0

    def recalibrate(self):
        """Recomputes the statistics of the model being trained now."""
        if batchnorm.recalibrate(self.model, self.x, self.batch_size):
            self.recalibrated += 1

    def on_test_begin(self, logs=None):
        self.recalibrate()

    def on_epoch_end(self, epoch, logs=None):
        if self.at_epoch_end:
            self.recalibrate()

    def on_train_end(self, logs=None):
        self.recalibrate()


class PruningSummaries(keras.callbacks.Callback):
    """Writes each pruned layer's sparsity, and the schedule's target, to TensorBoard.

    Scalars `sparsity/<layer name>` (the fraction of zeros in its masked prunable weights)
    and `target_sparsity/<layer name>` (what the schedule asks for at the current step),
    indexed by the pruning step, at the end of every epoch and every `update_freq` batches.

    Args:
        log_dir: String, the TensorBoard log folder (created if missing).
        update_freq: Integer, also write every this many batches; `None` (the default)
            writes at epoch ends only.

    Raises:
        TfpruneError: a `log_dir` that is not a path or a bad `update_freq`; at
            `on_train_begin`, a model without `PruneLowMagnitude` layers.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, name="out")])
    >>> pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, begin_step=0))
    >>> pruned.compile("adam", "mse")
    >>> x, y = np.random.rand(32, 8), np.random.rand(32, 2)
    >>> _ = pruned.fit(x, y, epochs=2, verbose=0, callbacks=[
    ...     tfprune.UpdatePruningStep(), tfprune.PruningSummaries(log_dir="logs")])
    >>> import os
    >>> [name.startswith("events.out.tfevents") for name in os.listdir("logs")]
    [True]
    """

    def __init__(self, log_dir, update_freq=None):
        super().__init__()
        if not isinstance(log_dir, (str, bytes)) and not hasattr(log_dir, "__fspath__"):
            raise TfpruneError(f"`log_dir` must be a folder path. Received: log_dir={log_dir!r}")
        if update_freq is not None and (not isinstance(update_freq, int) or update_freq < 1):
            raise TfpruneError(f"`update_freq` must be None or an integer >= 1. Received: "
                               f"update_freq={update_freq!r}")
        self.log_dir = str(log_dir)
        self.update_freq = update_freq
        self.wrappers = []
        self._writer = None
        self._batches = 0

    def on_train_begin(self, logs=None):
        import tensorflow as tf  # TensorBoard files need TF's summary writer.

        # A fresh start for each fit, as UpdatePruningStep: the batch count restarts (the
        # step does not: it is the wrappers'), and a writer left by an interrupted fit closes.
        self.on_train_end()
        self.wrappers = _wrappers_or_raise(self.model)
        self._batches = 0
        self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_begin(self, batch, logs=None):
        # A batch-begin hook (state after the previous batch), not batch-end: overriding
        # on_train_batch_end would turn off Keras's asynchronous callback dispatch.
        if self.update_freq and self._batches and self._batches % self.update_freq == 0:
            self._write()
        self._batches += 1

    def on_epoch_end(self, epoch, logs=None):
        self._write()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write(self):
        sync_trainer_state(self.model)  # JAX: the masks and weights of the latest step
        step = max(w.current_step() for w in self.wrappers)
        with self._writer.as_default(step=max(step, 0)):
            for wrapper in self.wrappers:
                if not wrapper.prunable:
                    continue  # a follower: its channels are its filters'
                arrays = wrapper.masked_prunable()
                kept = sum(np.count_nonzero(a) for a in arrays)
                total = sum(a.size for a in arrays)
                _scalar(f"sparsity/{wrapper.layer.name}", 1.0 - kept / total)
                target = wrapper.schedule(max(step, 0))[1]
                _scalar(f"target_sparsity/{wrapper.layer.name}", float(target))
        self._writer.flush()


def _scalar(tag, value):
    """A TensorBoard scalar without the tensorboard package (tf.summary.scalar needs it)."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    tf.summary.write(tag, tf.constant(value, dtype=tf.float32), metadata=metadata)
