import importlib
import sys

import keras
import numpy as np
import pytest
from keras import layers

import tfprune
from tfprune.bench import count
from tfprune.errors import UnsupportedModelError
from tfprune.models import lenet5


def _zero_units(model, plan, rng, bias_scale=0.1):
    """Zeroes `n` random output units of each named layer; gives every layer random biases."""
    for name, n in plan.items():
        layer = model.get_layer(name)
        separable = isinstance(layer, layers.SeparableConv2D)
        variable = layer.pointwise_kernel if separable else layer.kernel
        kernel = variable.numpy()
        axis = -2 if isinstance(layer, layers.Conv2DTranspose) else -1
        idx = rng.choice(kernel.shape[axis], n, replace=False)
        np.moveaxis(kernel, axis, 0)[idx] = 0
        variable.assign(kernel)
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(size=layer.bias.shape) * bias_scale)


def _assert_same(a, b, x):
    ya, yb = np.asarray(a(x)), np.asarray(b(x))
    assert ya.shape == yb.shape
    assert np.abs(ya - yb).max() <= 1e-5 * np.abs(ya).max()


def test_lenet5_shrinks_exactly_with_bias_folding():
    rng = np.random.default_rng(0)
    model = lenet5()
    _zero_units(model, {"conv1": 12, "conv2": 30, "ip1": 400}, rng)
    before = model.get_layer("conv1").kernel.numpy().copy()
    small = tfprune.shrink(model)
    assert isinstance(small, keras.Sequential)
    assert [small.get_layer(n).kernel.shape[-1] for n in ("conv1", "conv2", "ip1", "ip2")] == [
        8, 20, 100, 10]
    _assert_same(model, small, rng.normal(size=(4, 28, 28, 1)).astype("float32"))
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), before)
    assert count(small).macs < count(model).macs / 5


def test_output_layer_units_are_never_removed():
    rng = np.random.default_rng(1)
    model = lenet5()
    _zero_units(model, {"ip2": 4}, rng)
    small = tfprune.shrink(model)
    assert small.output_shape == (None, 10)
    assert small.get_layer("ip2").kernel.shape == (500, 10)


def test_plan_reads_well_and_round_trips_to_dict():
    rng = np.random.default_rng(2)
    model = lenet5()
    _zero_units(model, {"conv1": 5, "ip1": 100}, rng)
    plan = tfprune.shrink_plan(model)
    text = str(plan)
    assert "conv1 (Conv2D): 20 -> 15 filters" in text and "ip1 (Dense): 500 -> 400 units" in text
    assert plan.num_removed == 105
    assert plan.to_dict()["removed"]["pool1"]["after"] == 15 and "flatten" not in plan.removed
    assert len(plan.removed["conv1"]) == 5


def test_same_padding_keeps_non_zero_constants_and_says_why():
    model = keras.Sequential([
        keras.Input((8, 8, 2)),
        layers.Conv2D(4, 3, padding="same", name="a"),
        layers.Conv2D(3, 3, padding="same", name="b"),
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(2, name="out"),
    ])
    a = model.get_layer("a")
    kernel = a.kernel.numpy()
    kernel[..., :2] = 0
    a.kernel.assign(kernel)
    a.bias.assign(np.array([0.0, 0.5, 0.1, 0.2], "float32"))  # unit 0 outputs 0, unit 1 0.5
    plan = tfprune.shrink_plan(model)
    assert plan.removed["a"] == [0]
    assert "cannot fold" in str(plan) and "a units 1" in str(plan)
    small = plan.apply()
    _assert_same(model, small, np.random.rand(2, 8, 8, 2).astype("float32"))


def test_dead_dense_with_relu_and_no_bias_consumer_gets_a_bias():
    model = keras.Sequential([
        keras.Input((6,)),
        layers.Dense(5, activation="relu", name="h"),
        layers.Dense(3, use_bias=False, name="out0"),
        layers.Dense(2, name="out"),
    ])
    h = model.get_layer("h")
    h.kernel.assign(np.where(np.arange(5) < 2, 0.0, h.kernel.numpy()).astype("float32"))
    h.bias.assign(np.array([1.0, -1.0, 0, 0, 0], "float32"))  # relu: 1 and 0
    small = tfprune.shrink(model)
    assert small.get_layer("h").units == 3 and small.get_layer("out0").use_bias
    _assert_same(model, small, np.random.rand(3, 6).astype("float32"))


@pytest.mark.parametrize("beta, kept", [(3.0, 6), (-3.0, 4)])
def test_batchnorm_depthwise_and_transposed_follow(beta, kept):
    x = keras.Input((12, 12, 3))
    y = layers.Conv2D(6, 3, name="c")(x)
    y = layers.BatchNormalization(name="bn")(y)
    y = layers.ReLU(name="relu")(y)
    y = layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(y)
    y = layers.Conv2DTranspose(4, 3, name="t")(y)
    y = layers.SeparableConv2D(5, 3, name="sep")(y)
    y = layers.Flatten(name="flat")(y)
    model = keras.Model(x, layers.Dense(3, name="out")(y))
    rng = np.random.default_rng(3)
    bn = model.get_layer("bn")
    bn.set_weights([rng.uniform(0.5, 1.5, 6), np.full(6, beta), np.zeros(6),
                    rng.uniform(0.5, 2, 6)])
    _zero_units(model, {"c": 2, "t": 1, "sep": 2}, rng, bias_scale=0.0)
    plan = tfprune.shrink_plan(model)
    small = plan.apply()
    # With beta > 0, c's dead channels are positive constants after BN+ReLU: the depthwise
    # conv (valid) keeps them constant, and the transposed conv cannot fold them, so they
    # stay. With beta < 0 the ReLU makes them 0 and they go, with BN and depthwise channels.
    assert small.get_layer("c").filters == kept
    assert small.get_layer("dw").kernel.shape == (3, 3, kept, 2)
    assert small.get_layer("t").filters == 3 and small.get_layer("sep").filters == 3
    assert (kept == 6) == ("cannot fold" in str(plan))
    _assert_same(model, small, rng.normal(size=(2, 12, 12, 3)).astype("float32"))


def test_threshold_removes_small_units():
    model = keras.Sequential([keras.Input((4,)), layers.Dense(3, name="h"),
                              layers.Dense(2, name="out")])
    h = model.get_layer("h")
    h.kernel.assign(np.array([[1, 1e-4, 1]] * 4, "float32"))
    assert tfprune.shrink(model).get_layer("h").units == 3
    assert tfprune.shrink(model, threshold=1e-3).get_layer("h").units == 2
    with pytest.raises(tfprune.TfpruneError, match="threshold"):
        tfprune.shrink(model, threshold=-1)


def test_shrink_is_the_function_and_shrinking_the_module():
    import tfprune.shrinking  # noqa: F401  (importing the module must not hide the function)

    assert callable(tfprune.shrink) and tfprune.shrink.__name__ == "shrink"
    module = importlib.import_module("tfprune.shrinking")
    assert module is sys.modules["tfprune.shrinking"] is tfprune.shrinking
    assert module.shrink is tfprune.shrink and module.shrink_plan is tfprune.shrink_plan
    from tfprune import shrink

    assert shrink is tfprune.shrink


def test_wrapped_models_must_be_stripped_first():
    class Wrap(layers.Wrapper):
        def call(self, x):
            return self.layer(x)

    model = keras.Sequential([keras.Input((4,)), Wrap(layers.Dense(2))])
    with pytest.raises(UnsupportedModelError, match="strip"):
        tfprune.shrink(model)


def test_plan_applies_twice_and_handles_reshape_and_dropout():
    model = keras.Sequential([
        keras.Input((6, 6, 1)),
        layers.Conv2D(5, 3, activation="relu", name="c"),
        layers.Dropout(0.5, name="drop"),
        layers.Reshape((4 * 4 * 5,), name="flat"),
        layers.Dense(4, name="out"),
    ])
    rng = np.random.default_rng(5)
    _zero_units(model, {"c": 2}, rng)
    plan = tfprune.shrink_plan(model)
    first, second = plan.apply(), plan.apply()
    for small in (first, second):
        assert small.get_layer("c").filters == 3 and small.get_layer("out").kernel.shape[0] == 48
        _assert_same(model, small, rng.normal(size=(2, 6, 6, 1)).astype("float32"))
