"""Fusion on models nobody here designed, on random CNNs (hypothesis), and on pruned models."""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import layers
from test_fusion import TOL, randomize_bn, rel_err, sample, tflite_outputs

import tfprune
from tfprune import fusion
from tfprune.bench import count


def test_mobilenet_v2_fuses_exactly_with_every_batchnorm_gone():
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None,
                                           classifier_activation=None)
    randomize_bn(model, np.random.default_rng(3))
    fused = fusion.fuse(model)
    types = [type(layer).__name__ for layer in fused.layers]
    assert "BatchNormalization" not in types and "ReLU" not in types
    assert "ZeroPadding2D" not in types
    x = np.random.default_rng(4).uniform(-1, 1, (2, 96, 96, 3)).astype("float32")
    expected = np.asarray(model(x))
    assert rel_err(fused(x), expected) < TOL
    assert rel_err(tflite_outputs(fused, x), expected) < TOL
    before, after = count(model), count(fused)
    assert len(fused.layers) < len(model.layers) // 2
    assert after.params < before.params and after.macs == before.macs


# Random CNNs: the property test.

_BLOCKS = ("conv", "bn", "dropout", "act", "avgpool", "maxpool", "depthwise", "branch")


@st.composite
def cnns(draw):
    """A random small CNN (Sequential or Functional) from the layers fusion knows."""
    functional = draw(st.booleans())
    channels = draw(st.integers(1, 3))
    size = draw(st.integers(8, 14))
    blocks = draw(st.lists(st.sampled_from(_BLOCKS if functional else _BLOCKS[:-1]),
                           min_size=1, max_size=6))
    x = keras.Input((size, size, channels))
    y, out = x, []
    for block in blocks:
        spatial = y.shape[1]
        if block == "conv" and spatial >= 3:
            out = [layers.Conv2D(draw(st.integers(1, 4)), draw(st.sampled_from([1, 3])),
                                 strides=draw(st.sampled_from([1, 1, 2])),
                                 padding=draw(st.sampled_from(["valid", "same"])),
                                 activation=draw(st.sampled_from([None, None, "relu"])),
                                 use_bias=draw(st.booleans()))]
        elif block == "depthwise" and spatial >= 3:
            out = [layers.DepthwiseConv2D(3, padding=draw(st.sampled_from(["valid", "same"])))]
        elif block == "bn":
            out = [layers.BatchNormalization(epsilon=draw(st.sampled_from([1e-3, 0.1])))]
        elif block == "dropout":
            out = [layers.Dropout(0.5)]
        elif block == "act":
            out = [draw(st.sampled_from([layers.ReLU(), layers.ReLU(6.0),
                                         layers.Activation("tanh")]))]
        elif block in ("avgpool", "maxpool") and spatial >= 4:
            pool = layers.AveragePooling2D if block == "avgpool" else layers.MaxPooling2D
            out = [pool(2)]
        elif block == "branch" and spatial >= 3:
            filters = draw(st.integers(1, 4))
            a = layers.Conv2D(filters, 3, padding="same")(y)
            b = layers.Conv2D(filters, 1, padding="same")(y)
            join = draw(st.sampled_from([layers.Add(), layers.Concatenate()]))
            y = join([a, b])
            continue
        else:
            continue
        for layer in out:
            y = layer(y)
    y = layers.Flatten()(y)
    y = layers.Dense(draw(st.integers(2, 6)))(y)
    if draw(st.booleans()):
        y = layers.BatchNormalization()(y)
    y = layers.Dense(3)(y)
    model = keras.Model(x, y)
    if not functional:
        model = keras.Sequential([x, *model.layers[1:]])
    return randomize_bn(model, np.random.default_rng(draw(st.integers(0, 100))))


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(cnns())
def test_random_cnns_fuse_exactly_and_never_grow(model):
    fused = fusion.fuse(model)
    steps = fusion.plan(model)
    x = sample(model, n=2)
    assert rel_err(fused(x), model(x)) < TOL
    assert isinstance(fused, keras.Sequential) == isinstance(model, keras.Sequential)
    before, after = count(model), count(fused)
    assert len(fused.layers) <= len(model.layers)
    assert after.macs <= before.macs
    # The conv -> average-pool merge trades a larger kernel for fewer MACs; every other
    # rule removes parameters.
    growth = sum(after[s.result].params - before[s.result].params
                 for s in steps if s.rule == "average_pool")
    assert after.params <= before.params + max(growth, 0)
    assert sum(s.applied for s in steps) == len(model.layers) - len(fused.layers) or any(
        s.rule == "branches" for s in steps)


# Pruned models: wrappers are stripped first.


def test_pruned_model_is_stripped_then_fused():
    model = keras.Sequential([keras.Input((6, 6, 2)), layers.Conv2D(4, 3, name="c"),
                              layers.BatchNormalization(name="bn"), layers.Flatten(),
                              layers.Dense(3, name="d")])
    randomize_bn(model)
    pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, begin_step=0))
    assert any(isinstance(layer, tfprune.PruneLowMagnitude) for layer in pruned.layers)
    x = sample(model)
    pruned(x)  # masks follow the schedule only in training; strip applies the current ones
    stripped = tfprune.strip(pruned)
    fused = fusion.fuse(pruned)
    assert not any(isinstance(layer, tfprune.PruneLowMagnitude) for layer in fused.layers)
    assert "bn" not in [layer.name for layer in fused.layers]
    assert rel_err(fused(x), stripped(x)) < TOL


@pytest.mark.parametrize("approximate", [False, True])
def test_plan_lists_every_non_tensor_layer_once(approximate):
    model = tfprune.models.lenet5()
    steps = fusion.plan(model, approximate=approximate)
    kept = sorted(s.layers[0] for s in steps if not s.applied)
    merged = sorted(name for s in steps if s.applied for name in s.layers)
    assert kept == (["flatten"] if approximate else ["flatten", "pool1", "pool2"])
    assert merged == (["conv1", "conv2", "pool1", "pool2"] if approximate else [])
