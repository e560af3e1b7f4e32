"""`EpochBackup`: Keras' `BackupAndRestore`, one complete file per epoch, agreed by workers.

A `fit` killed in its 40th epoch of 50 and started again with the same callback goes on
from epoch 40, not from the start. The pipeline gives each training stage one, in a
folder of the run (`backup/<stage>-<hash>/`).
"""

import re
import shutil
from pathlib import Path

import keras

from tfprune import atomic, compat, distribute
from tfprune.errors import TfpruneError

_FILE = re.compile(r"^epoch-(\d+)\.weights\.h5$")
KEEP = 2  # files kept: the newest, and the one before for a worker that lags behind


class EpochBackup(keras.callbacks.BackupAndRestore):
    """Backs up the training state after each epoch; a new `fit` resumes from the last one.

    A `keras.callbacks.BackupAndRestore` that is safe to kill at any moment and under
    `MultiWorkerMirroredStrategy`:

    - each epoch's state is one file, `epoch-<n>.weights.h5` after `n` epochs, written under
      a temporary name and renamed: it is complete or absent, and it names its own epoch
      (Keras writes the weights and the epoch number to two files, each in place);
    - the two newest files are kept; at `on_train_begin` the workers of a multi-worker run
      agree on the newest epoch that every one of them has (`tfprune.distribute.agree_min`)
      and all restore it, so they all run the same steps.

    The state is what `model.save_weights` holds: the weights, the pruning masks and steps
    of `PruneLowMagnitude` layers, and the optimizer's variables and iteration count (so a
    learning-rate schedule resumes where it stopped). List it after
    `tfprune.UpdatePruningStep`, so that it saves an epoch's weights after that callback has
    applied the masks to them.

    Args:
        backup_dir: String or path, the folder of the backups (made on the first save);
            nothing else may write there.
        delete_checkpoint: Boolean, remove `backup_dir` when `fit` ends, defaults to `True`.
            `False` leaves that to the caller: the pipeline removes it once the stage's
            model is saved and recorded.

    Attributes:
        restored_epoch: Integer, the epoch the last `fit` resumed from (0: from the start).

    Example:

    >>> import os
    >>> class Kill(keras.callbacks.Callback):
    ...     def on_epoch_begin(self, epoch, logs=None):
    ...         if epoch == 3:
    ...             raise KeyboardInterrupt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> x, y = np.ones((16, 4)), np.ones((16, 1))
    >>> backup = tfprune.backup.EpochBackup("backup")
    >>> try:
    ...     model.fit(x, y, epochs=5, verbose=0, callbacks=[Kill(), backup])
    ... except KeyboardInterrupt:
    ...     pass
    >>> sorted(os.listdir("backup"))
    ['epoch-2.weights.h5', 'epoch-3.weights.h5']
    >>> model.fit(x, y, epochs=5, verbose=0, callbacks=[backup]).epoch
    [3, 4]
    >>> os.path.exists("backup")
    False
    """

    def __init__(self, backup_dir, delete_checkpoint=True):
        super().__init__(str(backup_dir), save_freq="epoch", double_checkpoint=True,
                         delete_checkpoint=delete_checkpoint)
        self.restored_epoch = 0

    def epochs_saved(self):
        """The epoch counts whose backups are in `backup_dir`, in increasing order."""
        folder = Path(self.backup_dir)
        found = [_FILE.match(path.name) for path in folder.iterdir()] if folder.is_dir() else []
        return sorted(int(match.group(1)) for match in found if match)

    def _path(self, epochs):
        return Path(self.backup_dir) / f"epoch-{epochs}.weights.h5"

    def on_train_begin(self, logs=None):
        saved = self.epochs_saved()
        epoch = distribute.agree_min(saved[-1] if saved else 0, self.model.distribute_strategy)
        self.restored_epoch = epoch
        if not epoch:
            return
        if epoch not in saved:  # another worker is behind by more than the kept files
            raise TfpruneError(
                f"The workers' backups in {self.backup_dir!r} disagree (this one has epochs "
                f"{saved}, another only {epoch}): remove the backup folders and rerun. "
                f"Received: backup_dir={self.backup_dir!r}")
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)  # its slots, to load
        self.model.load_weights(self._path(epoch))
        compat.set_initial_epoch(self.model, epoch)  # as Keras' own BackupAndRestore resumes

    def on_epoch_end(self, epoch, logs=None):
        epochs = epoch + 1
        Path(self.backup_dir).mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(self._path(epochs), suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
        for old in self.epochs_saved()[:-KEEP]:
            self._path(old).unlink(missing_ok=True)

    def on_train_end(self, logs=None):
        compat.set_initial_epoch(self.model, None)  # a later fit starts at its own epoch
        if self.delete_checkpoint:
            shutil.rmtree(self.backup_dir, ignore_errors=True)
