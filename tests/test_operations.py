"""`keras.ops` calls between layers: read as graph nodes, merged, pruned, shrunk, exported."""

import re

import keras
import numpy as np
import pytest
from keras import layers, ops
from test_fusion import randomize_bn, rel_err, tflite_outputs

import tfprune
from tfprune import fusion
from tfprune.errors import UnsupportedModelError
from tfprune.graph import ChannelGroups, LayerGraph
from tfprune.operations import OperationLayer


def _se_model():
    """Conv, hard-swish by ops, a squeeze-and-excitation gate by ops, concat and mean."""
    x = keras.Input((8, 8, 3))
    y = layers.Conv2D(8, 3, padding="same", name="conv")(x)
    y = layers.BatchNormalization(name="bn")(y)
    y = y * (ops.relu6(y + 3.0) / 6.0)  # hard-swish, as ops
    gate = ops.mean(y, axis=(1, 2), keepdims=True)
    gate = layers.Conv2D(8, 1, name="se")(gate)
    gate = layers.ReLU(6.0, name="gate_relu6")(gate + 3.0) * (1.0 / 6.0)
    y = y * gate  # the SE multiply couples y's and the gate's channels
    y = y * np.linspace(0.5, 1.5, 8).astype("float32")  # a per-channel constant
    z = layers.Conv2D(4, 1, name="side")(x)
    y = ops.concatenate([y, z], axis=-1)
    y = layers.Conv2D(6, 3, name="head")(y)
    y = ops.reshape(ops.mean(y, axis=(1, 2)), (-1, 6))
    return keras.Model(x, layers.Dense(3, name="out")(y))


def _x(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (2, *shape)).astype("float32")


def test_operations_become_nodes_and_the_graph_rebuilds_the_same_function(tmp_path):
    model = _se_model()
    randomize_bn(model)
    graph = LayerGraph.from_model(model)
    kinds = {node.layer.kind for node in graph.layers() if isinstance(node.layer, OperationLayer)}
    assert {"Add", "Relu6", "TrueDivide", "Multiply", "Mean", "Concatenate", "Reshape"} <= kinds
    rebuilt = graph.to_model()
    x = _x((8, 8, 3))
    np.testing.assert_array_equal(rebuilt(x), model(x))
    rebuilt.save(tmp_path / "ops.keras")  # an OperationLayer saves and loads as a layer
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "ops.keras")(x), model(x))


def test_se_multiply_couples_the_feature_map_and_its_gate():
    graph = LayerGraph.from_model(_se_model())
    groups = ChannelGroups(graph)
    assert not groups.barriers
    se = groups.group_of("se")
    assert np.array_equal(se, groups.group_of("conv"))  # conv's channel i and gate i, one group
    concat = next(n for n in graph.layers() if getattr(n.layer, "kind", "") == "Concatenate")
    assert np.array_equal(groups.group_of(concat.name)[8:], groups.group_of("side"))


def test_broadcast_across_channels_is_a_barrier_with_its_reason():
    x = keras.Input((4, 4, 3))
    y = layers.Conv2D(6, 1, name="conv")(x)
    y = y * ops.ones((4, 1, 1))  # varies along a spatial axis only: fine
    y = y + ops.mean(y, axis=-1, keepdims=True)  # reduces the channel axis
    groups = ChannelGroups(LayerGraph.from_model(keras.Model(x, y)))
    reasons = sorted(groups.barriers.values())
    assert len(reasons) == 2
    assert "(Add) broadcasts its inputs across channels" in reasons[0]
    assert "(Mean) reduces the channel axis" in reasons[1]


def test_filter_pruning_and_shrink_are_exact_through_operations():
    model = _se_model()
    randomize_bn(model, np.random.default_rng(1))
    pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, 0), granularity="filter")
    groups = tfprune.pruning.groups.FilterGroups(pruned)
    groups.update({w: 0.5 for w in groups.wrappers})
    stripped = tfprune.strip(pruned)
    small = tfprune.shrink(stripped)
    assert small.get_layer("conv").filters == 4 and small.get_layer("se").filters == 4
    assert small.get_layer("side").filters == 2
    scaled = [layer for layer in small.layers if isinstance(layer, OperationLayer)
              and layer.kind == "Multiply" and layer.constants()
              and layer.constants()[0].size > 1]
    assert [c.size for layer in scaled for c in layer.constants()] == [4]  # sliced constant
    x = _x((8, 8, 3), 1)
    assert rel_err(small(x), stripped(x)) < 1e-5


def test_merge_folds_an_affine_operation_into_the_conv_before_it():
    model = _se_model()
    randomize_bn(model, np.random.default_rng(2))
    steps = [str(step) for step in fusion.plan(model)]
    assert any(s.startswith("se + add") and "folded into kernel and bias" in s for s in steps)
    fused = fusion.fuse(model)
    x = _x((8, 8, 3), 2)
    assert rel_err(fused(x), model(x)) < 1e-5
    before, after = LayerGraph.from_model(model), LayerGraph.from_model(fused)
    assert len(after.nodes) == len(before.nodes) - 3  # bn, the gate's + 3 and its relu6


def test_an_operation_that_cannot_be_rebuilt_is_refused_in_one_line():
    x = keras.Input((4, 4, 6))
    y = layers.Conv2D(6, 1, name="conv")(x)
    a, b = ops.split(y, 2, axis=-1)  # one call, two outputs
    model = keras.Model(x, layers.Add(name="add")([a, b]))
    with pytest.raises(UnsupportedModelError) as raised:
        tfprune.prune(model, tfprune.ConstantSparsity(0.5, 0), granularity="filter")
    message = str(raised.value)
    assert "\n" not in message and "on the output of 'conv'" in message
    assert "2 outputs" in message and "register_layer" in message and "mask" not in message
    assert re.search(r"Received: operation='split(_\d+)?'$", message)


def _mobilenet_v3(name, size=32, alpha=0.75):
    model = getattr(keras.applications, name)(
        input_shape=(size, size, 3), alpha=alpha, weights=None, classes=10,
        classifier_activation=None)
    randomize_bn(model, np.random.default_rng(5))
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MobileNetV3Small", "MobileNetV3Large"])
def test_mobilenet_v3_merges_prunes_shrinks_and_exports_exactly(name):
    model = _mobilenet_v3(name)
    x = np.random.default_rng(6).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = np.asarray(model(x))
    fused = fusion.fuse(model)
    assert rel_err(fused(x), expected) < 1e-5
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in fused.layers)
    pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, 0), granularity="filter")
    groups = tfprune.pruning.groups.FilterGroups(pruned)
    groups.update({w: 0.5 for w in groups.wrappers})
    stripped = tfprune.strip(pruned)
    small = fusion.fuse(tfprune.shrink(stripped))
    before, after = tfprune.bench.count(model), tfprune.bench.count(small)
    assert after.params < 0.4 * before.params and after.macs < 0.4 * before.macs
    reference = np.asarray(stripped(x))
    assert rel_err(small(x), reference) < 1e-5
    assert rel_err(tflite_outputs(small, x), reference) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v3_large"])
def test_zoo_mobilenet_v3_scales_its_own_input_and_has_short_run_batchnorm(name):
    model = tfprune.models.get(name, input_shape=(32, 32, 3), num_classes=4)
    assert model.output_shape == (None, 4) and model.layers[1].name == "rescale"
    assert {layer.momentum for layer in model.layers
            if isinstance(layer, layers.BatchNormalization)} == {0.9}
    assert not any(isinstance(layer, layers.Rescaling) for layer in model.layers[2:])
    groups = ChannelGroups(LayerGraph.from_model(model))
    assert list(groups.barriers) == ["predictions"]  # only the softmax stops the analysis
    with pytest.raises(tfprune.errors.TfpruneError, match="at least 32x32"):
        tfprune.models.get(name, input_shape=(16, 16, 3))


def test_the_command_refuses_an_operation_it_cannot_rebuild_before_training(
        capsys, tmp_path, mnist_dir):
    from test_cli import _assert_one_line_error, _main

    x = keras.Input((28, 28, 1))
    a, b = ops.split(layers.Conv2D(4, 3, name="conv")(x), 2, axis=-1)
    y = layers.Flatten()(layers.Add()([a, b]))
    keras.Model(x, layers.Dense(10, activation="softmax")(y)).save(tmp_path / "split.keras")
    out = _main(capsys, f"--model={tmp_path / 'split.keras'}",
                f"--export_dir={tmp_path / 'run'}", f"--data_dir={mnist_dir}")
    _assert_one_line_error(*out, "operation 'split", "on the output of 'conv'", "2 outputs")
    assert not (tmp_path / "run" / "baseline.keras").exists()
