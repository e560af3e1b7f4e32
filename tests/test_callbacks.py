"""UpdatePruningStep and PruningSummaries on a tiny model."""

import glob

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune.errors import TfpruneError

# Also run under KERAS_BACKEND=jax by .ci/run.
pytestmark = pytest.mark.backend_neutral


class Recording(tfprune.PruningSchedule):
    """ConstantSparsity that records the steps it was asked about."""

    def __init__(self, sparsity=0.5, every=4):
        self.sparsity, self.every, self.asked = sparsity, every, []

    def __call__(self, step):
        self.asked.append(step)
        return step % self.every == 0, self.sparsity

    def get_config(self):
        return {"sparsity": self.sparsity, "every": self.every}


def _model():
    return keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, name="a"),
                             keras.layers.Dense(3, name="b")])


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 16)).astype("float32"), rng.integers(0, 3, n)


@pytest.mark.slow
def test_step_advances_each_batch_and_masks_follow_the_schedule():
    schedule = Recording(0.5, every=4)
    pruned = tfprune.prune(_model(), schedule)
    pruned.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data()
    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    wrappers = [layer for layer in pruned.layers if isinstance(layer, tfprune.PruneLowMagnitude)]
    assert [int(w.pruning_step) for w in wrappers] == [15, 15]   # 16 batches: steps 0..15
    assert schedule.asked == list(range(16))   # once per step for a shared schedule
    for w in wrappers:
        mask = np.asarray(w.masks[0])
        assert mask.mean() == pytest.approx(0.5, abs=0.01)
        # Saved weights hold mask x weight.
        assert (np.asarray(w.layer.kernel)[mask == 0] == 0).all()
    # Training resumes from the stored step.
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    assert int(wrappers[0].pruning_step) == 23


@pytest.mark.slow
def test_without_masks_update_the_kernel_stays_dense():
    pruned = tfprune.prune(_model(), tfprune.ConstantSparsity(0.9, 0, frequency=1))
    pruned.compile("adam", "mse")
    x, _ = _data()
    pruned.fit(x, np.zeros((64, 3)), epochs=1, verbose=0)
    with pytest.warns(UserWarning, match=r"\['a', 'b'\] were never pruned.*"
                      r"callbacks=\[tfprune.UpdatePruningStep\(\)\]") as record:
        assert max(tfprune.sparsity(pruned).values()) < 0.05
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert record[0].filename == __file__   # points at the caller's line


def test_callbacks_refuse_a_model_without_wrappers():
    model = _model()
    model.compile("adam", "mse")
    x, _ = _data(8)
    for callback in (tfprune.UpdatePruningStep(), tfprune.PruningSummaries("unused")):
        with pytest.raises(TfpruneError, match="no PruneLowMagnitude layer.*tfprune.prune"):
            model.fit(x, np.zeros((8, 3)), verbose=0, callbacks=[callback])


@pytest.mark.slow
def test_pruning_summaries_write_sparsity_per_layer(tmp_path):
    pruned = tfprune.prune(_model(), tfprune.ConstantSparsity(0.75, 0, frequency=2))
    pruned.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data()
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0,
               callbacks=[tfprune.UpdatePruningStep(),
                          tfprune.PruningSummaries(tmp_path, update_freq=2)])
    values = {}
    for path in glob.glob(str(tmp_path / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                values.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor))))
    assert set(values) == {"sparsity/a", "sparsity/b", "target_sparsity/a",
                           "target_sparsity/b"}
    # Before batches 3, 5 and 7 (every 2 batches, at the next batch start) and 2 epoch ends.
    assert len(values["sparsity/a"]) == 3 + 2
    assert values["sparsity/a"][-1] == (7, pytest.approx(0.75, abs=0.01))
    assert values["target_sparsity/b"][-1][1] == pytest.approx(0.75)


def _events(folder):
    values = {}
    for path in sorted(glob.glob(str(folder / "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                values.setdefault(value.tag, []).append(event.step)
    return values


@pytest.mark.slow
def test_pruning_summaries_start_afresh_each_fit(tmp_path):
    """One callback, two fits of 5 batches, update_freq=4: each fit writes before its
    5th batch and at its end (a batch count carried over would write before the 4th)."""
    pruned = tfprune.prune(_model(), tfprune.ConstantSparsity(0.5, 0, frequency=2))
    pruned.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data(40)
    summaries = tfprune.PruningSummaries(tmp_path, update_freq=4)
    for _ in range(2):
        pruned.fit(x, y, batch_size=8, verbose=0,
                   callbacks=[tfprune.UpdatePruningStep(), summaries])
    assert _events(tmp_path)["sparsity/a"] == [4, 4, 9, 9]


def test_pruning_summaries_bad_arguments():
    with pytest.raises(TfpruneError, match="Received: log_dir=3"):
        tfprune.PruningSummaries(3)
    with pytest.raises(TfpruneError, match="Received: update_freq=0"):
        tfprune.PruningSummaries("logs", update_freq=0)


@pytest.mark.slow
def test_a_checkpoint_saved_mid_epoch_holds_the_current_step(tmp_path):
    class SaveAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 5:
                self.model.save(tmp_path / "mid.keras")

    pruned = tfprune.prune(_model(), tfprune.ConstantSparsity(0.5, 0, frequency=4))
    pruned.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data()
    pruned.fit(x, y, batch_size=8, verbose=0,
               callbacks=[tfprune.UpdatePruningStep(), SaveAt()])
    loaded = keras.models.load_model(tmp_path / "mid.keras")
    assert [int(layer.pruning_step) for layer in loaded.layers] == [5, 5]
    assert int(pruned.layers[0].pruning_step) == 7
    assert pruned.layers[0].current_step() == 7   # detached after training


@pytest.mark.slow
def test_steps_per_execution_still_counts_batches():
    schedule = Recording(0.5, every=6)
    pruned = tfprune.prune(_model(), schedule)
    pruned.compile("adam", "sparse_categorical_crossentropy", steps_per_execution=4)
    x, y = _data(80)
    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    assert int(pruned.layers[0].pruning_step) == 19       # 2 x 10 batches, in 4 + 4 + 2
    assert schedule.asked == list(range(20))
    assert tfprune.sparsity(pruned)["a"] == pytest.approx(0.5, abs=0.01)
