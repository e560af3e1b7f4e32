"""PruneLowMagnitude: masks in build(), masked weights in call(), prunable weights by handler."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import wrapper as wrapper_lib
from tfprune.errors import TfpruneError, UnsupportedModelError

SCHEDULE = tfprune.ConstantSparsity(0.5, begin_step=0, frequency=1)
L = keras.layers
# Also run under KERAS_BACKEND=jax by .ci/run.
pytestmark = pytest.mark.backend_neutral

CASES = [
    ("Dense", lambda: L.Dense(8), (12,), ["kernel"]),
    ("Conv1D", lambda: L.Conv1D(8, 3), (10, 4), ["kernel"]),
    ("Conv2D", lambda: L.Conv2D(8, 3), (8, 8, 4), ["kernel"]),
    ("Conv3D", lambda: L.Conv3D(4, 2), (5, 5, 5, 4), ["kernel"]),
    ("Conv2DTranspose", lambda: L.Conv2DTranspose(8, 3), (6, 6, 4), ["kernel"]),
    ("DepthwiseConv2D", lambda: L.DepthwiseConv2D(3, depth_multiplier=2), (8, 8, 4),
     ["kernel"]),
    ("SeparableConv2D", lambda: L.SeparableConv2D(8, 3), (8, 8, 4),
     ["depthwise_kernel", "pointwise_kernel"]),
    ("Embedding", lambda: L.Embedding(30, 8), None, ["embeddings"]),
]


def _input(shape):
    if shape is None:
        return np.random.default_rng(0).integers(0, 30, (4, 6)), keras.Input((6,), dtype="int32")
    return (np.random.default_rng(0).standard_normal((4, *shape)).astype("float32"),
            keras.Input(shape))


@pytest.mark.parametrize("name, factory, shape, kernels", CASES, ids=[c[0] for c in CASES])
def test_wrapped_layer_computes_with_masked_weights(name, factory, shape, kernels):
    x, inp = _input(shape)
    wrapped = tfprune.PruneLowMagnitude(factory(), SCHEDULE)
    model = keras.Model(inp, wrapped(inp))
    assert wrapped.layer.name in wrapped.name
    assert [m.name for m in wrapped.masks] == [f"{k}_mask" for k in kernels]
    assert all(not m.trainable for m in wrapped.masks) and not wrapped.pruning_step.trainable
    assert int(wrapped.pruning_step) == -1
    before = model(x)
    np.testing.assert_allclose(before, wrapped.layer(x), rtol=1e-5, atol=1e-5)  # all ones

    # Masks chosen by hand (not via the weights) so the kernel keeps its values.
    rng = np.random.default_rng(1)
    for mask in wrapped.masks:
        mask.assign((rng.random(mask.shape) < 0.5).astype("float32"))
    expected_layer = factory()
    keras.Model(inp, expected_layer(inp))
    expected_layer.set_weights(wrapped.masked_weights())
    np.testing.assert_allclose(model(x), expected_layer(x), rtol=1e-5, atol=1e-5)
    # update_masks zeroes half of every kernel and writes mask * weight into it; biases
    # have no mask and keep their values.
    biases = [v for v in wrapped.layer.weights if "bias" in v.path]
    for b in biases:
        b.assign(rng.standard_normal(b.shape).astype("float32"))
    before_bias = [np.asarray(v).copy() for v in biases]
    wrapped.update_masks(0.5)
    assert len(wrapped.masks) == len(kernels) and (name == "Embedding" or biases)
    for b, value in zip(biases, before_bias, strict=True):
        np.testing.assert_array_equal(np.asarray(b), value)
    for pw, mask in zip(wrapped.prunable, wrapped.masks, strict=True):
        value = np.asarray(pw.variable)
        assert np.asarray(mask).mean() == pytest.approx(0.5, abs=0.02)
        assert (value[np.asarray(mask) == 0] == 0).all()


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.GradientTape")
def test_gradients_reach_only_kept_weights():
    wrapped = tfprune.PruneLowMagnitude(L.Dense(4), SCHEDULE)
    wrapped.build((None, 6))
    wrapped.masks[0].assign(np.tile([1.0, 0.0], (6, 2)).astype("float32"))
    x = tf.random.normal((3, 6))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(wrapped(x) ** 2)
    grad = tape.gradient(loss, wrapped.layer.kernel)
    assert np.all(grad.numpy()[:, 1::2] == 0) and np.any(grad.numpy()[:, ::2] != 0)


def test_activity_regularizer_loss_is_kept():
    wrapped = tfprune.PruneLowMagnitude(L.Dense(4, activity_regularizer="l2"), SCHEDULE)
    model = keras.Sequential([keras.Input((3,)), wrapped])
    model(np.ones((2, 3), "float32"))
    assert len(model.losses) == 1 and float(model.losses[0]) > 0


def test_filter_granularity_on_transposed_conv_zeroes_output_channels():
    wrapped = tfprune.PruneLowMagnitude(L.Conv2DTranspose(6, 3), SCHEDULE, granularity="filter")
    wrapped.build((None, 5, 5, 4))
    wrapped.update_masks(0.5)
    kernel = np.asarray(wrapped.layer.kernel)  # (3, 3, out=6, in=4)
    per_out = np.abs(kernel).sum(axis=(0, 1, 3))
    assert (per_out == 0).sum() == 3


def test_block_and_n_m_granularities():
    wrapped = tfprune.PruneLowMagnitude(L.Dense(8), SCHEDULE, granularity="block",
                                        block_shape=(1, 4), block_pooling="max")
    wrapped.build((None, 16))
    wrapped.update_masks(0.5)
    blocks = np.asarray(wrapped.masks[0]).reshape(16, 2, 4)
    assert set(blocks.sum(axis=-1).ravel().tolist()) <= {0.0, 4.0}
    nm = tfprune.PruneLowMagnitude(L.Conv2D(4, 3), SCHEDULE, granularity="2:4")
    nm.build((None, 8, 8, 8))
    nm.update_masks(0.9)  # N:M fixes the sparsity at 1 - n/m
    groups = np.moveaxis(np.asarray(nm.masks[0]), -2, -1).reshape(-1, 4)
    assert (groups.sum(axis=1) == 2).all()


def test_n_m_on_one_input_channel_conv_raises_at_build():
    wrapped = tfprune.PruneLowMagnitude(L.Conv2D(20, 5, name="conv1"), SCHEDULE, "2:4")
    with pytest.raises(TfpruneError, match="'conv1' cannot take 2:4.*Received: granularity"):
        wrapped.build((None, 28, 28, 1))
    depthwise = tfprune.PruneLowMagnitude(L.DepthwiseConv2D(3), SCHEDULE, "n:m")
    with pytest.raises(TfpruneError, match="one input channels per filter"):
        depthwise.build((None, 8, 8, 8))


def test_unknown_granularity_and_unprunable_layer():
    with pytest.raises(TfpruneError, match="Received: granularity='rows'"):
        tfprune.PruneLowMagnitude(L.Dense(3), SCHEDULE, granularity="rows")
    with pytest.raises(UnsupportedModelError, match="'pool'.*MaxPooling2D.*register_prunable"):
        tfprune.PruneLowMagnitude(L.MaxPooling2D(name="pool"), SCHEDULE)
    with pytest.raises(ValueError, match="schedule"):
        tfprune.PruneLowMagnitude(L.Dense(3), 0.5)


class Scale(L.Layer):
    """A custom layer: y = x * w (one weight per feature)."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w


class OptIn(Scale):
    def get_prunable_weights(self):
        return [self.w]


def test_registry_is_extensible_and_layers_can_opt_in():
    with pytest.raises(UnsupportedModelError):
        tfprune.PruneLowMagnitude(Scale(), SCHEDULE)
    try:
        tfprune.register_prunable(Scale, lambda layer: [layer.w])
        wrapped = tfprune.PruneLowMagnitude(Scale(), SCHEDULE)
        wrapped.build((None, 10))
        wrapped.layer.w.assign(np.arange(1.0, 11.0, dtype="float32"))
        wrapped.update_masks(0.3)
        out = np.asarray(wrapped(np.ones((1, 10), "float32")))
        assert out.tolist() == [[0, 0, 0, 4, 5, 6, 7, 8, 9, 10]]
    finally:
        wrapper_lib.REGISTRY.unregister(Scale)
    opted = tfprune.PruneLowMagnitude(OptIn(), SCHEDULE)
    opted.build((None, 4))
    assert [pw.variable for pw in opted.prunable] == [opted.layer.w]
    with pytest.raises(TypeError, match="layer_class"):
        tfprune.register_prunable(object, lambda layer: [])


def test_config_round_trip():
    wrapped = tfprune.PruneLowMagnitude(
        L.Conv2D(4, 3, name="c"), tfprune.PolynomialDecay(0.1, 0.7, 2, 50, frequency=3),
        granularity="block", block_shape=(2, 2), block_pooling="max")
    config = wrapped.get_config()
    again = tfprune.PruneLowMagnitude.from_config(config)
    assert again.get_config() == config
    assert again.schedule == wrapped.schedule and again.layer.name == "c"
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(wrapped))
    assert isinstance(restored, tfprune.PruneLowMagnitude)
    assert restored.get_config() == config


def test_mixed_precision_wrapper_follows_the_layer_policy():
    wrapped = tfprune.PruneLowMagnitude(L.Dense(4, dtype="mixed_float16"), SCHEDULE)
    model = keras.Sequential([keras.Input((6,)), wrapped, L.Activation("linear", dtype="float32")])
    assert wrapped.compute_dtype == "float16" and wrapped.masks[0].dtype == "float32"
    wrapped.update_masks(0.5)
    model.compile("adam", "mse")
    model.fit(np.ones((8, 6), "float32"), np.zeros((8, 4), "float32"), verbose=0)
    assert model(np.ones((1, 6), "float32")).dtype == "float32"
    assert np.asarray(wrapped.layer.kernel)[np.asarray(wrapped.masks[0]) == 0].max() < 0.01


@pytest.mark.parametrize("kwargs, match", [
    ({"block_shape": 4}, "Received: block_shape=4"),
    ({"block_pooling": "sum"}, "Received: block_pooling='sum'"),
    ({"n_m": (4, 2)}, "Received: n_m=\\(4, 2\\)"),
])
def test_bad_options_raise(kwargs, match):
    with pytest.raises(TfpruneError, match=match):
        tfprune.PruneLowMagnitude(L.Dense(3), SCHEDULE, **kwargs)
