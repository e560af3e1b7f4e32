"""Per-epoch backups: a training killed mid-way resumes from its last epoch, pruning intact.

A kill is simulated by a callback that raises `KeyboardInterrupt` (what Ctrl-C raises) at the
start of an epoch; the files on disk are then those a SIGKILL at that moment would leave,
since each backup is written atomically at the end of its epoch.
"""

import dataclasses
import json

import keras
import numpy as np
import pytest

import tfprune
from tfprune.backup import EpochBackup
from tfprune.errors import TfpruneError
from tfprune.pipeline import RECORD, Context, PipelineConfig, Stage, execute, training
from tfprune.pipeline.runner import BACKUP

EPOCHS, STEPS_PER_EPOCH = 5, 8


class Kill(keras.callbacks.Callback):
    """Raises `KeyboardInterrupt` when epoch `at` begins (or, with `at=None`, as fit ends)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt

    def on_train_end(self, logs=None):
        if self.at is None:
            raise KeyboardInterrupt


def pruned_model():
    """A pruned classifier whose schedule and learning rate change at every step."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, name="a"),
                              keras.layers.Dense(2, name="b")])
    steps = EPOCHS * STEPS_PER_EPOCH
    pruned = tfprune.prune(model, tfprune.PolynomialDecay(0.0, 0.75, begin_step=0,
                                                          end_step=steps // 2, frequency=2))
    rate = keras.optimizers.schedules.CosineDecay(1e-2, steps)
    pruned.compile(keras.optimizers.Adam(rate), "sparse_categorical_crossentropy")
    return pruned


def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((STEPS_PER_EPOCH * 8, 12)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32")


def fit(model, callbacks):
    x, y = data()
    return model.fit(x, y, batch_size=8, epochs=EPOCHS, verbose=0, callbacks=callbacks)


def state(model):
    """What must survive a kill: pruning step and sparsity, optimizer step and rate."""
    step = {int(w.pruning_step.numpy()) for w in tfprune.pruning.callbacks.pruning_wrappers(model)}
    optimizer = model.optimizer
    return {"pruning_step": step, "sparsity": tfprune.sparsity(model),
            "iterations": int(optimizer.iterations.numpy()),
            "learning_rate": round(float(optimizer.learning_rate.numpy()), 9)}


@pytest.fixture(scope="module")
def uninterrupted():
    model = pruned_model()
    fit(model, [tfprune.UpdatePruningStep()])
    return state(model)


@pytest.mark.slow
def test_a_killed_fit_resumes_from_its_last_epoch_with_masks_step_and_rate(
        tmp_path, uninterrupted):
    backup_dir = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        fit(pruned_model(), [tfprune.UpdatePruningStep(), Kill(at=3), EpochBackup(backup_dir)])
    assert sorted(p.name for p in backup_dir.iterdir()) == [  # atomic, two kept
        "epoch-2.weights.h5", "epoch-3.weights.h5"]

    resumed, backup = pruned_model(), EpochBackup(backup_dir)  # as a new process would
    history = fit(resumed, [tfprune.UpdatePruningStep(), backup])
    assert backup.restored_epoch == 3 and history.epoch == [3, 4]  # not from epoch 0
    assert state(resumed) == uninterrupted
    assert uninterrupted["pruning_step"] == {EPOCHS * STEPS_PER_EPOCH - 1}
    assert uninterrupted["sparsity"] == {"a": 0.75, "b": 0.75}
    assert not backup_dir.exists()  # removed when fit ends


@pytest.mark.slow
def test_keras_backup_listed_after_the_pruning_callback_restores_the_step(
        tmp_path, uninterrupted):
    # Keras' own BackupAndRestore restores in on_train_begin, after UpdatePruningStep's.
    backup_dir = str(tmp_path / "keras_backup")
    with pytest.raises(KeyboardInterrupt):
        fit(pruned_model(), [tfprune.UpdatePruningStep(), Kill(at=2),
                             keras.callbacks.BackupAndRestore(backup_dir)])
    resumed = pruned_model()
    history = fit(resumed, [tfprune.UpdatePruningStep(),
                            keras.callbacks.BackupAndRestore(backup_dir)])
    assert history.epoch == [2, 3, 4]
    assert state(resumed) == uninterrupted


@pytest.mark.slow
def test_a_fit_killed_after_its_last_epoch_keeps_its_step(tmp_path, uninterrupted):
    backup_dir = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):  # killed before the caller saved the model
        fit(pruned_model(), [tfprune.UpdatePruningStep(), Kill(at=None),
                             EpochBackup(backup_dir)])
    resumed, backup = pruned_model(), EpochBackup(backup_dir)
    assert fit(resumed, [tfprune.UpdatePruningStep(), backup]).epoch == []
    assert backup.restored_epoch == EPOCHS
    assert state(resumed) == uninterrupted  # the restored step is not overwritten by -1


@pytest.mark.slow
def test_workers_restore_the_epoch_they_agree_on(tmp_path, monkeypatch):
    backup_dir = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        fit(pruned_model(), [tfprune.UpdatePruningStep(), Kill(at=3), EpochBackup(backup_dir)])
    # Another worker was killed before writing epoch 3: all resume from epoch 2.
    monkeypatch.setattr(tfprune.backup.distribute, "agree_min", lambda value, strategy: 2)
    resumed, backup = pruned_model(), EpochBackup(backup_dir, delete_checkpoint=False)
    assert fit(resumed, [tfprune.UpdatePruningStep(), backup]).epoch == [2, 3, 4]
    assert backup.restored_epoch == 2
    monkeypatch.setattr(tfprune.backup.distribute, "agree_min", lambda value, strategy: 1)
    with pytest.raises(TfpruneError, match="disagree"):  # epoch 1 is gone: one line, no hang
        fit(pruned_model(), [EpochBackup(backup_dir)])


# ----------------------------------------------------------------------------- the runner


def backup_stage(seen, fail):
    """A stage that notes its backup folder's files, saves one, then fails if `fail[0]`."""

    def run(context):
        folder = context.backup_dir
        seen.append(sorted(p.name for p in folder.iterdir()) if folder.exists() else [])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "epoch-1.weights.h5").write_text("state")
        if fail[0]:
            raise KeyboardInterrupt
        (context.folder / "out.txt").write_text("done")
        return ["out.txt"], {}, "done"

    return Stage("train", run, keys=("prune_epochs",), writes=("out.txt",), trains=True)


def test_runner_keeps_a_failed_stages_backup_only_for_a_resume_with_its_settings(tmp_path):
    seen, fail = [], [True]
    stage = backup_stage(seen, fail)

    def go(**settings):
        config = PipelineConfig(export_dir=str(tmp_path), **settings)
        try:
            execute([stage], Context(config))
        except KeyboardInterrupt:
            pass

    go()                                    # killed: its backup stays
    go(resume=True)                         # resumed: finds it
    go(prune_epochs=7, resume=True)         # other settings: not the same training
    go()                                    # no --resume: starts over
    fail[0] = False
    go(resume=True)                         # finds its own, finishes, removes it
    assert seen == [[], ["epoch-1.weights.h5"], [], [], ["epoch-1.weights.h5"]]
    assert not (tmp_path / BACKUP).exists()
    assert "train" in json.loads((tmp_path / RECORD).read_text())


# ----------------------------------------------------------------------------- the pipeline


@pytest.mark.slow
def test_pipeline_resumes_a_killed_stage_from_its_last_epoch(mnist_dir, tmp_path, monkeypatch,
                                                             capsys):
    config = PipelineConfig(
        data_dir=mnist_dir, train_limit=128, baseline_epochs=0, prune_epochs=3,
        prune_batch_size=32, final_sparsity=0.5, frequency=1,
        granularity="Conv2D:filter,Dense:filter,ip2:none", export_dir=str(tmp_path / "killed"),
        verbose=0, stop_after="prune", keep_going=True)  # an untrained baseline is at chance
    real_fit = training.fit

    def killed_in_prune(model, train, epochs, batch_size, config, callbacks=(), backup=None):
        if backup is not None and backup.name.startswith("prune-"):
            callbacks = [*callbacks, Kill(at=2)]
        return real_fit(model, train, epochs, batch_size, config, callbacks, backup)

    monkeypatch.setattr(training, "fit", killed_in_prune)
    with pytest.raises(KeyboardInterrupt):
        tfprune.pipeline.run(config)
    (prune_backup,) = (tmp_path / "killed" / BACKUP).glob("prune-*")
    assert sorted(p.name for p in prune_backup.iterdir()) == [
        "epoch-1.weights.h5", "epoch-2.weights.h5"]
    monkeypatch.setattr(training, "fit", real_fit)
    capsys.readouterr()

    tfprune.pipeline.run(dataclasses.replace(config, resume=True))
    assert "skipped" in capsys.readouterr().out.splitlines()[0]  # the baseline
    resumed = json.loads((tmp_path / "killed" / RECORD).read_text())["prune"]["result"]
    assert resumed["resumed_from_epoch"] == 2
    assert not (tmp_path / "killed" / BACKUP).exists()

    # The same sparsity as a run that was never killed (the fits above compare the two
    # exactly): half of each pruned layer's filters and neurons, the classifier whole.
    zeros = {layer["name"]: layer["kernel_zeros"] for layer in resumed["layers"]}
    assert zeros == {"conv1": 0.5, "conv2": 0.5, "ip1": 0.5, "ip2": 0.0}
