"""Property: random CNNs with random units zeroed shrink to the same function, never larger."""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from keras import layers

import tfprune
from tfprune.bench import count

pytestmark = pytest.mark.slow  # see pyproject.toml's markers

_block = st.fixed_dictionaries({
    "filters": st.integers(2, 6),
    "kernel": st.sampled_from([1, 3]),
    "padding": st.sampled_from(["valid", "same"]),
    "activation": st.sampled_from([None, "relu", "tanh"]),
    "bn": st.booleans(),
    "join": st.sampled_from([None, "add", "concat", "depthwise"]),
    "pool": st.sampled_from([None, "max", "avg"]),
})
_spec = st.fixed_dictionaries({
    "blocks": st.lists(_block, min_size=1, max_size=3),
    "head": st.sampled_from(["flatten", "gap"]),
    "hidden": st.integers(2, 8),
    "zero_fraction": st.floats(0.0, 0.9),
    "seed": st.integers(0, 2**16),
})


def _build(spec):
    x = keras.Input((9, 9, 2))
    y = x
    for i, b in enumerate(spec["blocks"]):
        padding = b["padding"] if y.shape[1] >= b["kernel"] else "same"
        conv = layers.Conv2D(b["filters"], b["kernel"], padding=padding,
                             activation=b["activation"], name=f"conv{i}")(y)
        y = layers.BatchNormalization(name=f"bn{i}")(conv) if b["bn"] else conv
        if b["join"] == "add":
            side = layers.Conv2D(b["filters"], 1, name=f"side{i}")(y)
            y = layers.Add(name=f"add{i}")([y, side])
        elif b["join"] == "concat":
            side = layers.Conv2D(3, 1, activation="relu", name=f"side{i}")(y)
            y = layers.Concatenate(name=f"cat{i}")([y, side])
        elif b["join"] == "depthwise":
            y = layers.DepthwiseConv2D(3, padding="same", name=f"dw{i}")(y)
        if b["pool"] and y.shape[1] >= 2:
            pool = layers.MaxPooling2D if b["pool"] == "max" else layers.AveragePooling2D
            y = pool(2, name=f"pool{i}")(y)
    y = layers.Flatten()(y) if spec["head"] == "flatten" else layers.GlobalAveragePooling2D()(y)
    y = layers.Dense(spec["hidden"], activation="relu", name="hidden")(y)
    return keras.Model(x, layers.Dense(3, name="out")(y))


def _randomize(model, rng, fraction):
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.5, n),
                               rng.normal(0, 0.5, n), rng.uniform(0.5, 1.5, n)])
        elif isinstance(layer, (layers.Conv2D, layers.Dense)) and layer.name != "out":
            kernel = layer.kernel.numpy()
            kernel[..., rng.random(kernel.shape[-1]) < fraction] = 0
            layer.kernel.assign(kernel)
            layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape))


@settings(max_examples=12, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate],  # shrinking Keras models takes minutes
          suppress_health_check=[HealthCheck.too_slow])
@given(_spec)
def test_random_cnns_shrink_to_the_same_function_and_never_grow(spec):
    keras.utils.clear_session()
    rng = np.random.default_rng(spec["seed"])
    model = _build(spec)
    _randomize(model, rng, spec["zero_fraction"])
    small = tfprune.shrink(model)
    x = rng.normal(size=(3, 9, 9, 2)).astype("float32")
    ya, yb = np.asarray(model(x)), np.asarray(small(x))
    assert yb.shape == ya.shape
    assert np.abs(ya - yb).max() <= 1e-5 * max(np.abs(ya).max(), 1e-3)
    before, after = count(model), count(small)
    assert after.params <= before.params and after.macs <= before.macs
