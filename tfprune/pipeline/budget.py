"""The recovery budget: how long pruning and retraining run, and how often masks move,
when the user gives no number.

tfmot's defaults (a mask update every 100 steps) were made for weight pruning over many
thousand steps. A run of a few hundred steps then makes two to five updates, each cutting
a large share of the channels at once, and a BatchNorm CNN loses most of its accuracy. So
by default:

- the prune stage runs about `1000 x sparsity` steps (whole epochs, 1 to 10), so that a
  deeper cut gets longer to adapt;
- masks move about `UPDATES` times before the schedule's end, each a small share;
- the retrain stage runs until the validation accuracy has not improved for `PATIENCE`
  epochs, at most twice the prune epochs, its learning rate falling after each epoch that
  did not improve it, and keeps its best epoch (`best_epoch_callback`).

An explicit flag always wins; the stage's result records what was used.
"""

import math

import numpy as np

UPDATES = 32  # mask updates before the polynomial schedule's end
STEPS_PER_SPARSITY = 1000  # prune steps per unit of sparsity cut
MAX_PRUNE_EPOCHS = 10
PATIENCE = 3  # retrain epochs without a better validation accuracy before stopping
LR_FACTOR = 0.3  # the retrain rate's fall after an epoch without a better accuracy


def prune_epochs(config, train_size, sparsity):
    """The prune stage's epochs: `config.prune_epochs`, or sized to the cut.

    Args:
        config: The `PipelineConfig`.
        train_size: Integer, training images.
        sparsity: Float, the share of units the stage cuts (the largest per-layer one).

    Example:

    >>> from tfprune.pipeline import PipelineConfig
    >>> prune_epochs(PipelineConfig(), train_size=9000, sparsity=0.5)   # 71 steps an epoch
    8
    >>> prune_epochs(PipelineConfig(), train_size=54000, sparsity=0.8)
    2
    >>> prune_epochs(PipelineConfig(prune_epochs=3), train_size=54000, sparsity=0.8)
    3
    """
    if config.prune_epochs is not None:
        return config.prune_epochs
    per_epoch = math.ceil(train_size / config.prune_batch_size)
    epochs = math.ceil(STEPS_PER_SPARSITY * sparsity / per_epoch)
    return int(np.clip(epochs, 1, MAX_PRUNE_EPOCHS))


def frequency(config, steps):
    """Steps between mask updates: `config.frequency`, or about `UPDATES` updates in the
    first 3/4 of `steps` (the schedule's automatic end).

    Example:

    >>> from tfprune.pipeline import PipelineConfig
    >>> frequency(PipelineConfig(), steps=568), frequency(PipelineConfig(frequency=50), 568)
    (13, 50)
    """
    if config.frequency is not None:
        return config.frequency
    return max(1, math.floor((0.75 * steps - config.begin_step) / UPDATES))


def end_step(config, steps, every):
    """The schedule's end: `config.end_step`, or 3/4 of the steps on a mask update (so it
    is reached), `every` being the steps between updates."""
    if config.end_step != -1:
        return config.end_step
    from tfprune.pruning import schedules  # imports Keras: not when the pipeline package loads

    return schedules.end_step(steps, every, config.begin_step)


def retrain_epochs(config, prune_epochs):
    """`(epochs, early)`: the retrain stage's epochs, and whether it stops early.

    As asked (`early` false), or at most twice the prune epochs (at least 2), stopping
    when the validation accuracy stops improving.

    Example:

    >>> from tfprune.pipeline import PipelineConfig
    >>> retrain_epochs(PipelineConfig(), 4), retrain_epochs(PipelineConfig(retrain_epochs=3), 4)
    ((8, True), (3, False))
    """
    if config.retrain_epochs is not None:
        return config.retrain_epochs, False
    return max(2, 2 * prune_epochs), config.validation_split > 0


def best_epoch_callback(validation, measure, patience=PATIENCE, factor=LR_FACTOR):
    """A Keras callback that keeps the best epoch on the validation split, lowers the
    learning rate when an epoch does not beat it, and stops `patience` epochs after it.

    Early stopping cuts a decaying schedule (cosine) short while its rate is still high, so
    the rate falls on a plateau instead (Keras' `ReduceLROnPlateau`, with a patience of one
    epoch): compile with a constant rate.

    Args:
        validation: `(x, y)` arrays.
        measure: Function `measure(model, validation) -> accuracy`; it is given the model
            being trained (a `Distiller`'s student).
        patience: Integer, epochs without improvement before stopping.
        factor: Float, what the learning rate is multiplied by after an epoch without
            improvement.

    Returns:
        A `keras.callbacks.Callback` with `best` (accuracy), `best_epoch` (1-based),
        `epochs_run` and `learning_rates` (each epoch's) after training; at the end of
        training the model holds the best epoch's weights.
    """
    import keras

    class BestEpoch(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best, self.best_epoch, self.epochs_run, self.weights = -1.0, 0, 0, None
            self.learning_rates = []

        def on_epoch_end(self, epoch, logs=None):
            student = getattr(self.model, "student", self.model)
            accuracy = measure(student, validation)
            rate = self.model.optimizer.learning_rate
            self.learning_rates.append(float(np.asarray(rate)))
            self.epochs_run = epoch + 1
            if accuracy > self.best:
                self.best, self.best_epoch = accuracy, epoch + 1
                self.weights = student.get_weights()
            elif epoch + 1 - self.best_epoch >= patience:
                self.model.stop_training = True
            elif isinstance(rate, keras.Variable):
                rate.assign(rate * factor)

        def on_train_end(self, logs=None):
            if self.weights is not None:
                getattr(self.model, "student", self.model).set_weights(self.weights)

    return BestEpoch()
