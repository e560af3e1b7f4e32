"""tfprune.backend: the Keras internals it leans on, and the TensorFlow-only guard.

Runs on every backend (`.ci/run` runs it again under KERAS_BACKEND=jax): the tests that
check a JAX trainer's internals skip elsewhere, and say why.
"""

import keras
import numpy as np
import pytest

import tfprune
from tfprune import backend
from tfprune.errors import TfpruneError

pytestmark = pytest.mark.backend_neutral

ON_TF = keras.backend.backend() == "tensorflow"


def test_mask_scope_reads_the_enclosing_scope_and_keeps_its_own_updates():
    mapped, unmapped, updated = (keras.Variable(np.float32(v)) for v in (1.0, 2.0, 3.0))
    with keras.StatelessScope(state_mapping=[(mapped, 10.0), (unmapped, 20.0),
                                             (updated, 30.0)]) as outer:
        with backend.MaskScope(state_mapping=[(mapped, 5.0)]) as inner:
            values = [float(v.value) for v in (mapped, unmapped, updated)]
            updated.assign(7.0)
        assert float(inner.own_value(updated)) == 7.0
        assert inner.own_value(unmapped) is None      # the outer scope's, not its own
        assert float(outer.get_current_value(updated)) == 30.0   # not leaked outward
    assert values == [5.0, 20.0, 30.0]
    assert float(updated.value) == 3.0   # a stateless scope changed no variable


def test_mask_scope_without_an_enclosing_scope_is_a_stateless_scope():
    variable, other = keras.Variable(np.float32(1.0)), keras.Variable(np.float32(2.0))
    with backend.MaskScope(state_mapping=[(variable, 4.0)]) as scope:
        assert float(variable.value) == 4.0 and float(other.value) == 2.0
        assert scope.get_current_value(other) is None


def test_the_keras_internals_mask_scope_uses_are_there():
    # StatelessScope keeps its mapping in `state_mapping` (id -> value) and the scope it
    # replaced in `original_scope`: MaskScope reads both. An upgrade that moves them fails here.
    variable = keras.Variable(np.float32(1.0))
    with keras.StatelessScope() as outer, keras.StatelessScope(
            state_mapping=[(variable, 2.0)]) as inner:
        assert inner.original_scope is outer
        assert set(inner.state_mapping) == {id(variable)}


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="a JAX trainer's internals")
def test_the_jax_trainer_internals_sync_uses_are_there():
    # During fit the JAX trainer keeps the variables' values in its own state; a callback
    # writes them back with jax_state_sync(), which marks the state synced so that the
    # trainer reads the variables again before its next step.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:
                backend.sync_trainer_state(self.model)
                seen.append(self.model._jax_state_synced)
                seen.append(self.model.trainable_variables[0]._value is not None)
                self.model.trainable_variables[0].assign(np.zeros((2, 1)))

    model.fit(np.ones((4, 2)), np.zeros((4, 1)), batch_size=2, verbose=0, shuffle=False,
              callbacks=[Probe()])
    assert seen == [True, True]
    # The zeros written on the host reached the last step: sgd moved them only by it.
    assert np.abs(model.trainable_variables[0].numpy()).max() < 0.1


def test_sync_trainer_state_outside_fit_is_a_no_op():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    before = model.get_weights()
    backend.sync_trainer_state(model)
    backend.sync_trainer_state(object())   # not a model at all
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


@pytest.mark.skipif(not ON_TF, reason="the TensorFlow backend's side of the guard")
def test_require_tensorflow_passes_on_tensorflow():
    backend.require_tensorflow("anything")


@pytest.mark.skipif(ON_TF, reason="the guard only speaks on another backend")
def test_export_on_another_backend_says_the_way_across_in_one_line(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(TfpruneError) as error:
        tfprune.export.to_tflite(model, tmp_path / "m.tflite")
    message = str(error.value)
    assert "\n" not in message and "KERAS_BACKEND=tensorflow" in message
    assert "model.keras" in message and "tfprune.export.to_tflite" in message
    assert message.endswith(f"Received: KERAS_BACKEND={keras.backend.backend()!r}")
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.skipif(ON_TF, reason="the guard only speaks on another backend")
def test_the_pipeline_on_another_backend_fails_before_any_stage(tmp_path):
    config = tfprune.pipeline.PipelineConfig(export_dir=str(tmp_path / "run"))
    with pytest.raises(TfpruneError, match="The tfprune pipeline needs the TensorFlow"):
        tfprune.pipeline.run(config)
    assert not (tmp_path / "run").exists()
