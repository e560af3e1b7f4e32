"""Filter pruning by channel group: a pruned filter's whole channel outputs exactly zero."""

import keras
import numpy as np
import pytest

import tfprune
from tfprune.pipeline import hold_zeros
from tfprune.pruning import groups

L = keras.layers
# Also run under KERAS_BACKEND=jax by .ci/run.
pytestmark = pytest.mark.backend_neutral


def _residual(beta=True):
    """Conv-BN-ReLU stem, a residual branch added to it, a 'same'-padded conv after them."""
    x = keras.Input((8, 8, 3))
    stem = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(
        L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(x)))
    branch = L.BatchNormalization(name="a_bn")(L.Conv2D(8, 3, padding="same", name="a")(stem))
    y = L.ReLU(name="relu")(L.Add(name="add")([stem, branch]))
    y = L.ReLU()(L.BatchNormalization(name="c_bn")(L.Conv2D(6, 3, padding="same",
                                                             name="c")(y)))
    out = L.Dense(3, activation="softmax", name="out")(L.GlobalAveragePooling2D()(y))
    model = keras.Model(x, out, name="residual")
    rng = np.random.default_rng(1)
    for name in ("stem_bn", "a_bn", "c_bn"):  # as if trained: offsets and statistics
        bn = model.get_layer(name)
        size = bn.gamma.shape[0]
        bn.set_weights([rng.uniform(0.5, 1.5, size), rng.uniform(0.2, 1, size) * beta,
                        rng.normal(size=size), rng.uniform(0.5, 1.5, size)])
    return model


def _data(n=32, shape=(8, 8, 3), classes=3):
    rng = np.random.default_rng(0)
    return rng.random((n, *shape)).astype("float32"), rng.integers(0, classes, n)


def _fit(pruned, x, y, eager=False, **kw):
    """One epoch with the pruning callback (eager: no tracing, for tests of the masks alone)."""
    pruned.compile("adam", "sparse_categorical_crossentropy", run_eagerly=eager)
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0,
               callbacks=[tfprune.UpdatePruningStep(), *kw.pop("callbacks", [])], **kw)
    return pruned


def _dead(kernel):
    return np.flatnonzero(np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0) == 0)


@pytest.mark.slow
def test_a_pruned_filter_takes_its_batchnorm_and_its_residual_partner(tmp_path):
    model = _residual()
    assert tfprune.pruning.plan(model, "filter") == {
        "stem": "filter", "stem_bn": "filter", "a": "filter", "a_bn": "filter",
        "c": "filter", "c_bn": "filter"}
    pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, 0, frequency=1), "filter")
    x, y = _data()
    _fit(pruned, x, y, callbacks=[tfprune.PruningSummaries(tmp_path / "logs")])
    stem = pruned.get_layer("prune_low_magnitude_stem")
    dead = np.flatnonzero(stem.channel_mask.numpy() == 0)
    assert len(dead) == 4
    # The Add couples stem and a: the same channels in both branches, every layer masked.
    for name in ("stem", "stem_bn", "a", "a_bn"):
        mask = pruned.get_layer(f"prune_low_magnitude_{name}").channel_mask.numpy()
        np.testing.assert_array_equal(np.flatnonzero(mask == 0), dead)
    # In training (batch statistics) and at inference, the pruned channels are exactly zero.
    probe = keras.Model(pruned.input, pruned.get_layer("relu").output)
    for training in (True, False):
        out = np.asarray(probe(x, training=training))
        assert (out[..., dead] == 0).all() and (out[..., np.setdiff1d(np.arange(8), dead)]
                                                 != 0).any()

    # The masks survive a .keras round trip and fitting goes on from them.
    pruned.save(tmp_path / "pruned.keras")
    loaded = keras.models.load_model(tmp_path / "pruned.keras")
    np.testing.assert_allclose(loaded(x), pruned(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(
        loaded.get_layer("prune_low_magnitude_a_bn").channel_mask.numpy(),
        pruned.get_layer("prune_low_magnitude_a_bn").channel_mask.numpy())
    _fit(loaded, x, y, eager=True)
    np.testing.assert_array_equal(
        _dead(tfprune.strip(loaded).get_layer("stem").kernel.numpy()), dead)

    # Stripped: zero filters, zero biases, zero BatchNorm scales and offsets; then the
    # shrink removes every pruned filter, the 'same'-padded consumers notwithstanding.
    small = tfprune.strip(pruned)
    for name in ("stem_bn", "a_bn"):
        bn = small.get_layer(name)
        assert (bn.gamma.numpy()[dead] == 0).all() and (bn.beta.numpy()[dead] == 0).all()
    assert (small.get_layer("a").bias.numpy()[dead] == 0).all()
    plan = tfprune.shrink_plan(small)
    assert not plan.kept, str(plan)
    shrunk = plan.apply()
    assert [shrunk.get_layer(n).filters for n in ("stem", "a", "c")] == [4, 4, 3]
    np.testing.assert_allclose(shrunk(x), small(x), rtol=1e-5, atol=1e-6)
    fused = tfprune.fuse(small)  # the exact merges fold the BatchNorms, zeros and all
    assert tfprune.shrink(fused).get_layer("stem").filters == 4


@pytest.mark.slow
def test_a_coupling_prunes_at_the_smallest_sparsity_its_layers_ask_for():
    model = _residual()
    pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.75, 0, frequency=1), "filter")
    pruned.get_layer("prune_low_magnitude_a").schedule = tfprune.ConstantSparsity(
        0.25, 0, frequency=1)
    _fit(pruned, *_data(), eager=True)
    achieved = tfprune.sparsity(pruned)
    assert achieved["stem"] == achieved["a"] == 0.25 and achieved["c"] == pytest.approx(4 / 6)


@pytest.mark.slow
def test_a_group_with_a_layer_left_unpruned_is_kept_whole():
    model = _residual()
    pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, 0, frequency=1),
                           {"*": "filter", "a": None})
    _fit(pruned, *_data(), eager=True)
    achieved = tfprune.sparsity(pruned)
    assert achieved["stem"] == 0.0 and achieved["c"] == 0.5  # a keeps stem's channels


@pytest.mark.slow
def test_separable_and_depthwise_convs_follow_the_group_of_their_input():
    x = keras.Input((8, 8, 3))
    y = L.ReLU()(L.BatchNormalization(name="bn1")(L.Conv2D(8, 1, name="pw1")(x)))
    y = L.BatchNormalization(name="dw_bn")(L.DepthwiseConv2D(3, padding="same",
                                                            depth_multiplier=2, name="dw")(y))
    y = L.SeparableConv2D(6, 3, padding="same", name="sep")(L.ReLU()(y))
    model = keras.Model(x, L.Dense(3, name="out")(L.GlobalAveragePooling2D()(y)))
    # A class key other than "filter" leaves a depthwise conv in a pruned group to follow.
    granularity = {"Conv2D": "filter", "SeparableConv2D": "filter", "Dense": None}
    assert tfprune.pruning.plan(model, granularity) == {
        "pw1": "filter", "bn1": "filter", "dw": "filter", "dw_bn": "filter", "sep": "filter"}
    pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, 0, frequency=1), granularity)
    _fit(pruned, *_data(), eager=True)
    small = tfprune.strip(pruned)
    dead = _dead(small.get_layer("pw1").kernel.numpy())
    assert len(dead) == 4
    dw = small.get_layer("dw")
    assert (dw.kernel.numpy()[:, :, dead] == 0).all() and (dw.bias.numpy().reshape(8, 2)[
        dead] == 0).all()
    sep = small.get_layer("sep").depthwise_kernel.numpy()  # 16 input channels: dw's outputs
    inputs = (2 * dead[:, None] + [0, 1]).ravel()
    assert (sep[:, :, inputs] == 0).all() and (sep[:, :, np.setdiff1d(np.arange(16), inputs)]
                                               != 0).any()
    shrunk = tfprune.shrink(small)
    assert shrunk.get_layer("pw1").filters == 4 and shrunk.get_layer("sep").filters == 3
    assert shrunk.get_layer("dw").kernel.shape == (3, 3, 4, 2)


@pytest.mark.slow
def test_hold_zeros_holds_the_biases_and_batchnorms_of_pruned_channels():
    x = keras.Input((6, 6, 2))
    y = L.BatchNormalization(name="bn")(L.Conv2D(4, 3, name="conv")(x))
    model = keras.Model(x, L.Dense(2, name="out")(L.Flatten()(L.ReLU()(y))))
    conv, bn = model.get_layer("conv"), model.get_layer("bn")
    conv.kernel.assign(conv.kernel.numpy() * [1.0, 0.0, 1.0, 1.0])
    conv.bias.assign([0.5, 0.0, 0.5, 0.5])
    bn.gamma.assign([1.0, 0.0, 1.0, 1.0])
    bn.beta.assign([0.1, 0.0, 0.1, 0.1])
    found = {v.path: keep.tolist() for v, keep in groups.dead_channel_masks(model)}
    assert found == {"conv/bias": [1, 0, 1, 1], "bn/gamma": [1, 0, 1, 1],
                     "bn/beta": [1, 0, 1, 1]}
    xs = np.random.default_rng(0).random((16, 6, 6, 2)).astype("float32")
    with hold_zeros(model):
        model.compile(keras.optimizers.Adam(0.1), "mse")
        model.fit(xs, np.ones((16, 2)), epochs=2, verbose=0)
    for weight, start in ((conv.bias, 0.5), (bn.gamma, 1.0), (bn.beta, 0.1)):
        value = weight.numpy()
        assert value[1] == 0 and (value[[0, 2, 3]] != start).all()  # the others trained
    assert tfprune.shrink(model).get_layer("conv").filters == 3


def test_a_filter_wrapper_on_its_own_zeroes_the_bias_of_its_pruned_units():
    wrapped = tfprune.PruneLowMagnitude(L.Dense(4), tfprune.ConstantSparsity(0.5, 0), "filter")
    wrapped.build((None, 3))
    wrapped.layer.kernel.assign(np.array([[1.0, 0.1, 2.0, 0.2]] * 3))
    wrapped.layer.bias.assign(np.ones(4))
    wrapped.update_masks(0.5)   # no model around it: this layer's own filters
    np.testing.assert_array_equal(wrapped.channel_mask.numpy(), [1, 0, 1, 0])
    np.testing.assert_array_equal(wrapped.layer.bias.numpy(), [1, 0, 1, 0])
    out = np.asarray(wrapped(np.ones((2, 3), "float32")))
    assert (out[:, [1, 3]] == 0).all() and (out[:, [0, 2]] != 0).all()
    with pytest.raises(tfprune.UnsupportedModelError, match="no prunable weights"):
        tfprune.PruneLowMagnitude(L.ReLU(), tfprune.ConstantSparsity(0.5, 0), "filter").build(
            (None, 3))
