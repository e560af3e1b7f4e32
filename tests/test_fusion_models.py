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


@pytest.mark.slow
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
    """A random small CNN's recipe: (functional, input shape, blocks, head, seed)."""
    functional = draw(st.booleans())
    shape = (draw(st.integers(8, 14)),) * 2 + (draw(st.integers(1, 3)),)
    kinds = _BLOCKS if functional else _BLOCKS[:-1]
    blocks = []
    for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=6)):
        if kind == "conv":
            kind = ("conv", draw(st.integers(1, 4)), draw(st.sampled_from([1, 3])),
                    draw(st.sampled_from([1, 1, 2])), draw(st.sampled_from(["valid", "same"])),
                    draw(st.sampled_from([None, None, "relu"])), draw(st.booleans()))
        elif kind == "depthwise":
            kind = ("depthwise", draw(st.sampled_from(["valid", "same"])))
        elif kind == "bn":
            kind = ("bn", draw(st.sampled_from([1e-3, 0.1])))
        elif kind == "act":
            kind = ("act", draw(st.sampled_from(["relu", "relu6", "tanh"])))
        elif kind == "branch":
            kind = ("branch", draw(st.integers(1, 4)), draw(st.sampled_from(["add", "cat"])))
        blocks.append(kind if isinstance(kind, tuple) else (kind,))
    head = (draw(st.integers(2, 6)), draw(st.booleans()))
    return functional, shape, blocks, head, draw(st.integers(0, 100))


def build_cnn(recipe):
    """The Keras model of a `cnns()` recipe, with random BatchNorm statistics."""
    functional, shape, blocks, (units, head_bn), seed = recipe
    x = keras.Input(shape)
    y = x
    for kind, *args in blocks:
        spatial = y.shape[1]
        if kind == "conv" and spatial >= 3:
            filters, k, stride, padding, act, bias = args
            y = layers.Conv2D(filters, k, strides=stride, padding=padding, activation=act,
                              use_bias=bias)(y)
        elif kind == "depthwise" and spatial >= 3:
            y = layers.DepthwiseConv2D(3, padding=args[0])(y)
        elif kind == "bn":
            y = layers.BatchNormalization(epsilon=args[0])(y)
        elif kind == "dropout":
            y = layers.Dropout(0.5)(y)
        elif kind == "act":
            y = layers.ReLU(6.0)(y) if args[0] == "relu6" else layers.Activation(args[0])(y)
        elif kind in ("avgpool", "maxpool") and spatial >= 4:
            y = (layers.AveragePooling2D if kind == "avgpool" else layers.MaxPooling2D)(2)(y)
        elif kind == "branch" and spatial >= 3:
            a = layers.Conv2D(args[0], 3, padding="same")(y)
            b = layers.Conv2D(args[0], 1, padding="same")(y)
            y = (layers.Add() if args[1] == "add" else layers.Concatenate())([a, b])
    y = layers.Flatten()(y)
    y = layers.Dense(units)(y)
    if head_bn:
        y = layers.BatchNormalization()(y)
    model = keras.Model(x, layers.Dense(3)(y))
    if not functional:
        model = keras.Sequential([x, *model.layers[1:]])
    return randomize_bn(model, np.random.default_rng(seed))


@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(cnns())
def test_random_cnns_fuse_exactly_and_never_grow(recipe):
    model = build_cnn(recipe)
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
    # Approximate merges change outputs but never add layers or MACs either.
    approx = count(fusion.fuse(model, approximate=True))
    assert len(approx.rows) <= len(before.rows) and approx.macs <= before.macs


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
    with pytest.warns(UserWarning, match="never pruned"):  # no fit, so the masks are ones
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


def test_plan_prints_as_readably_as_the_shrink_plan():
    assert str(fusion.plan(tfprune.models.lenet5())).splitlines() == [
        "Fusion plan for 'lenet5' (exact merges only):",
        "  nothing to merge",
        "  leaves pool1: merging a max pool into the conv is approximate: needs approximate=True",
        "  leaves pool2: merging a max pool into the conv is approximate: needs approximate=True",
        "  leaves flatten: no rule merges Flatten",
    ]
    x = keras.Input((8, 8, 3))
    y = layers.Conv2D(4, 3, name="conv")(x)
    y = layers.ReLU(name="relu")(layers.BatchNormalization(name="bn")(y))
    model = keras.Model(x, layers.GlobalAveragePooling2D(name="gap")(y), name="cbr")
    plan = fusion.plan(model)
    assert repr(plan) == str(plan) == "\n".join([
        "Fusion plan for 'cbr' (exact merges only):",
        "  conv + bn -> conv (folded into kernel and bias)",
        "  conv + relu -> conv (activation relu)",
        "  leaves gap: no rule merges GlobalAveragePooling2D",
    ])
    assert isinstance(plan, list) and [s.rule for s in plan] == ["batchnorm", "activation", "kept"]
    assert plan.merges == plan[:2] and not plan.approximate
