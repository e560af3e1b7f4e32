"""Coupled channels: Add, Concatenate, unknown layers, and MobileNetV2."""

import keras
import numpy as np
import pytest
from keras import layers

import tfprune
from tfprune.bench import count
from tfprune.graph import ChannelGroups, LayerGraph


def _zero(model, name, idx):
    layer = model.get_layer(name)
    kernel = layer.kernel.numpy()
    kernel[..., idx] = 0
    layer.kernel.assign(kernel)
    if layer.bias is not None:
        layer.bias.assign(np.where(np.isin(np.arange(kernel.shape[-1]), idx), 0.0,
                                   layer.bias.numpy()).astype("float32"))


def _rel_err(a, b, x):
    ya, yb = np.asarray(a(x)), np.asarray(b(x))
    assert ya.shape == yb.shape
    return np.abs(ya - yb).max() / np.abs(ya).max()


def _residual():
    x = keras.Input((10, 10, 3))
    stem = layers.Conv2D(8, 3, padding="same", name="stem")(x)
    y = layers.BatchNormalization(name="bn")(stem)
    y = layers.ReLU(name="relu")(y)
    y = layers.Conv2D(8, 1, name="branch")(y)
    y = layers.Add(name="add")([stem, y])
    y = layers.Conv2D(6, 3, name="head")(y)
    y = layers.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, layers.Dense(4, name="out")(y))


def test_groups_couple_add_branches():
    groups = ChannelGroups(LayerGraph.from_model(_residual()))
    assert groups.find(groups.slot("stem", 3)) == groups.find(groups.slot("branch", 3))
    assert groups.find(groups.slot("add", 3)) == groups.find(groups.slot("bn", 3))
    assert groups.find(groups.slot("stem", 3)) != groups.find(groups.slot("head", 3))
    assert groups.rules["add"] == "merge" and groups.rules["head"] == "producer"


def test_add_removes_only_channels_zero_on_every_branch():
    model = _residual()
    _zero(model, "stem", [0, 1, 2])
    _zero(model, "branch", [1, 2, 5])
    plan = tfprune.shrink_plan(model)
    assert plan.removed["stem"] == [1, 2] and plan.removed["branch"] == [1, 2]
    assert "coupled with channel" in str(plan)  # stem 0 and branch 5 stay
    small = plan.apply()
    assert small.get_layer("add").output.shape[-1] == 6
    x = np.random.rand(2, 10, 10, 3).astype("float32")
    assert _rel_err(model, small, x) < 1e-5


def test_concatenate_shifts_indices():
    x = keras.Input((9, 9, 2))
    a = layers.Conv2D(4, 3, activation="relu", name="a")(x)
    b = layers.Conv2D(5, 3, activation="relu", name="b")(x)
    y = layers.Concatenate(name="cat")([a, b])
    y = layers.MaxPooling2D(name="pool")(y)
    y = layers.Conv2D(3, 3, name="c")(y)
    y = layers.Flatten(name="flat")(y)
    model = keras.Model(x, layers.Dense(2, name="out")(y))
    _zero(model, "a", [1])
    _zero(model, "b", [0, 4])
    groups = ChannelGroups(LayerGraph.from_model(model))
    assert groups.find(groups.slot("cat", 4)) == groups.find(groups.slot("b", 0))
    small = tfprune.shrink(model)
    assert small.get_layer("a").filters == 3 and small.get_layer("b").filters == 3
    assert small.get_layer("c").kernel.shape == (3, 3, 6, 3)
    assert _rel_err(model, small, np.random.rand(2, 9, 9, 2).astype("float32")) < 1e-5


def test_unknown_layer_stops_removal_at_its_border():
    x = keras.Input((8, 8, 2))
    a = layers.Conv2D(4, 3, name="a")(x)
    y = layers.LayerNormalization(name="ln")(a)  # mixes channels: not a known pass-through
    y = layers.Conv2D(3, 3, name="b")(y)
    y = layers.Flatten(name="flat")(y)
    model = keras.Model(x, layers.Dense(2, name="out")(y))
    _zero(model, "a", [0, 1])
    _zero(model, "b", [2])
    plan = tfprune.shrink_plan(model)
    assert "a" not in plan.removed and plan.removed["b"] == [2]
    assert "LayerNormalization 'ln'" in str(plan) and "does not know" in str(plan)
    small = plan.apply()
    assert _rel_err(model, small, np.random.rand(2, 8, 8, 2).astype("float32")) < 1e-5


@pytest.mark.slow
def test_mobilenet_v2_with_random_filters_zeroed_shrinks_exactly():
    model = keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(96, 96, 3))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):  # non-trivial constants to fold
            size = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, size), rng.normal(0, 0.1, size),
                               rng.normal(0, 0.1, size), rng.uniform(0.5, 1.5, size)])
        if type(layer) is layers.Conv2D:
            filters = layer.kernel.shape[-1]
            _zero(model, layer.name, rng.choice(filters, filters // 4, replace=False))
    plan = tfprune.shrink_plan(model)
    small = plan.apply()
    before, after = count(model), count(small)
    assert plan.num_removed > 100
    assert after.params < before.params and after.macs < before.macs
    x = rng.uniform(-1, 1, size=(2, 96, 96, 3)).astype("float32")
    assert _rel_err(model, small, x) < 1e-5
