"""The Keras-level API on whatever backend this process runs: prune and fit, strip, fuse,
shrink, their plans, channel groups, distillation, `.keras` files.

Written backend-neutral (NumPy data, no TensorFlow calls): `.ci/run` runs this file again
under KERAS_BACKEND=jax, and it passes under KERAS_BACKEND=torch where torch is installed.
The cross-backend checks (the same sparsity step by step, a file written under JAX exported
under TensorFlow) are in `test_backends_cross.py`.
"""

import keras
import numpy as np
import pytest

import tfprune

pytestmark = [pytest.mark.slow, pytest.mark.backend_neutral]

L = keras.layers


def _cnn():
    """Conv-BN-ReLU-pool twice, then a classifier: the shape of the issue's check."""
    return keras.Sequential([
        keras.Input((12, 12, 1)),
        L.Conv2D(8, 3, padding="same", name="conv1"), L.BatchNormalization(name="bn1"),
        L.ReLU(), L.MaxPooling2D(),
        L.Conv2D(12, 3, padding="same", name="conv2"), L.BatchNormalization(name="bn2"),
        L.ReLU(), L.MaxPooling2D(), L.Flatten(),
        L.Dense(16, activation="relu", name="fc1"), L.Dense(4, name="fc2"),
    ])


def _data(n=128):
    rng = np.random.default_rng(0)
    return rng.random((n, 12, 12, 1), dtype=np.float32), rng.integers(0, 4, n)


def _fit_pruned(model, granularity, sparsity=0.5, epochs=2, batch_size=16, **compile_args):
    schedule = tfprune.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=8, frequency=2)
    pruned = tfprune.prune(model, schedule, granularity=granularity)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   **compile_args)
    x, y = _data()
    pruned.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=False,
               callbacks=[tfprune.UpdatePruningStep()])
    return pruned


def _close(a, b, atol=1e-5):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) <= atol


@pytest.mark.parametrize("granularity", ["weight", "filter"])
def test_fit_reaches_the_schedules_sparsity_and_the_trainer_used_the_masks(granularity):
    pruned = _fit_pruned(_cnn(), granularity)
    found = tfprune.sparsity(pruned)
    if granularity == "weight":
        assert found == {"conv1": 0.5, "conv2": 0.5, "fc1": 0.5, "fc2": 0.5}
    else:   # whole filters and units; the classifier is left whole
        assert found == {"conv1": 0.5, "conv2": 0.5, "fc1": 0.5, "fc2": 0.0}
    wrapper = pruned.get_layer("prune_low_magnitude_conv1")
    assert int(np.asarray(wrapper.pruning_step)) == 15   # 2 epochs of 8 batches
    # The weights the trainer ended with hold the zeros (apply_masks at the epoch's end
    # reached them), and the step after the last mask update trained through the masks.
    kernel, mask = (np.asarray(v) for v in (wrapper.layer.kernel, wrapper.masks[0]))
    assert np.all(kernel[mask == 0] == 0)


def test_filter_pruning_zeroes_whole_channels_and_batchnorm_statistics_still_train():
    model = _cnn()
    before = np.asarray(model.get_layer("bn2").moving_mean).copy()
    pruned = _fit_pruned(model, "filter")
    bn = pruned.get_layer("prune_low_magnitude_bn2")
    # The BatchNorm inside its wrapper still updated its statistics in the trainer's step.
    assert not np.allclose(np.asarray(bn.layer.moving_mean), before)
    dead = np.asarray(bn.channel_mask) == 0
    assert dead.sum() == 6
    assert np.all(np.asarray(bn.layer.gamma)[dead] == 0)
    assert np.all(np.asarray(bn.layer.beta)[dead] == 0)


def test_strip_fuse_and_shrink_are_exact():
    pruned = _fit_pruned(_cnn(), "filter")
    x, _ = _data(32)
    expected = pruned.predict(x, verbose=0)
    stripped = tfprune.strip(pruned)
    assert _close(stripped.predict(x, verbose=0), expected)
    fused = tfprune.fuse(stripped)
    assert not any(isinstance(layer, L.BatchNormalization) for layer in fused.layers)
    assert _close(fused.predict(x, verbose=0), expected, atol=1e-4)
    small = tfprune.shrink(fused)
    assert small.get_layer("conv1").filters == 4 and small.get_layer("conv2").filters == 6
    assert small.get_layer("fc1").units == 8
    assert _close(small.predict(x, verbose=0), expected, atol=1e-4)


def test_the_plans_and_channel_groups():
    model = _cnn()
    assert tfprune.pruning.plan(model, "filter") == {
        "conv1": "filter", "bn1": "filter", "conv2": "filter", "bn2": "filter",
        "fc1": "filter"}
    assert "bn1" in str(tfprune.fusion.plan(model))
    groups = tfprune.graph.ChannelGroups(tfprune.graph.LayerGraph.from_model(model))
    assert groups.find(groups.slot("conv1", 3)) == groups.find(groups.slot("bn1", 3))
    stripped = tfprune.strip(_fit_pruned(model, "filter"))
    plan = tfprune.shrink_plan(stripped)
    assert "conv1" in str(plan) and "conv2" in str(plan)


def test_a_pruned_model_round_trips_through_a_keras_file(tmp_path):
    pruned = _fit_pruned(_cnn(), "weight")
    x, _ = _data(16)
    pruned.save(tmp_path / "pruned.keras")
    loaded = keras.saving.load_model(tmp_path / "pruned.keras")
    assert _close(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0))
    wrapper = loaded.get_layer("prune_low_magnitude_conv2")
    assert int(np.asarray(wrapper.pruning_step)) == 15
    assert tfprune.sparsity(loaded) == tfprune.sparsity(pruned)


def test_a_loaded_pruned_model_keeps_training_from_its_step(tmp_path):
    pruned = _fit_pruned(_cnn(), "weight", epochs=1)
    pruned.save(tmp_path / "pruned.keras")
    loaded = keras.saving.load_model(tmp_path / "pruned.keras")
    x, y = _data()
    loaded.fit(x, y, batch_size=16, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    assert int(np.asarray(loaded.get_layer("prune_low_magnitude_fc1").pruning_step)) == 15
    assert tfprune.sparsity(loaded)["fc1"] == 0.5


def test_a_distiller_prunes_its_student():
    teacher = _cnn()
    schedule = tfprune.ConstantSparsity(0.5, begin_step=0, frequency=4)
    student = tfprune.prune(teacher, schedule, granularity="filter")
    distiller = tfprune.distill.Distiller(student, teacher, temperature=2.0, from_logits=True)
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    history = distiller.fit(x, y, batch_size=16, verbose=0,
                            callbacks=[tfprune.UpdatePruningStep()])
    assert np.isfinite(history.history["loss"][-1])
    assert tfprune.sparsity(student) == {"conv1": 0.5, "conv2": 0.5, "fc1": 0.5, "fc2": 0.0}
    stripped = tfprune.strip(student)
    assert _close(stripped.predict(x[:8], verbose=0), distiller.predict(x[:8], verbose=0))
