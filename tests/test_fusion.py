"""Exact fusion rules: every merge keeps the outputs (Keras and TFLite), random weights."""

import os
import tempfile

import keras
import numpy as np
import pytest
from keras import layers

import tfprune
from tfprune import fusion
from tfprune.errors import TfpruneError, UnsupportedModelError
from tfprune.models import lenet5

TOL = 1e-5


# Helpers (also used by the other test_fusion_* files).


def randomize_bn(model, rng=None):
    """Random gamma, beta, moving mean and variance in every BatchNormalization."""
    rng = rng or np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            weights = []
            for w in layer.weights:
                name = w.path.rsplit("/", 1)[-1]
                if name == "moving_variance":
                    weights.append(rng.uniform(0.3, 2.0, w.shape))
                elif name == "gamma":
                    weights.append(rng.uniform(0.5, 1.5, w.shape))
                else:
                    weights.append(rng.normal(0, 0.5, w.shape))
            layer.set_weights(weights)
    return model


def rel_err(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12)


def sample(model, n=3, seed=1):
    rng = np.random.default_rng(seed)
    shapes = [tuple(t.shape) for t in model.inputs]
    xs = [rng.normal(size=(n,) + s[1:]).astype("float32") for s in shapes]
    return xs[0] if len(xs) == 1 else xs


def tflite_outputs(model, x):
    """Runs `model` through the TFLite converter and the LiteRT interpreter."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    interpreter = Interpreter(model_content=flat, num_threads=1)
    xs = x if isinstance(x, list) else [x]
    outs = []
    for i in range(len(xs[0])):
        inputs = interpreter.get_input_details()
        for detail in inputs:
            # Inputs keep the Keras input order, matched by name.
            j = [t.name for t in model.inputs].index(_input_name(detail, model))
            interpreter.resize_tensor_input(detail["index"], (1,) + xs[j].shape[1:])
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            j = [t.name for t in model.inputs].index(_input_name(detail, model))
            interpreter.set_tensor(detail["index"], xs[j][i: i + 1])
        interpreter.invoke()
        outs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    return np.concatenate(outs)


def _input_name(detail, model):
    names = [t.name for t in model.inputs]
    for name in names:
        if name in detail["name"]:
            return name
    return names[0]


def check_fused(model, tflite=False, expect_gone=(), **kwargs):
    """Fuses `model`, checks its outputs (and the .tflite's) and returns the fused model."""
    fused = fusion.fuse(model, **kwargs)
    x = sample(model)
    expected = np.asarray(model(x))
    assert rel_err(fused(x), expected) < TOL
    names = {layer.name for layer in fused.layers}
    for name in expect_gone:
        assert name not in names, f"{name} still in the fused model"
    if tflite:
        assert rel_err(tflite_outputs(fused, x), expected) < TOL
    return fused


def seq(input_shape, *stack):
    return keras.Sequential([keras.Input(input_shape), *stack])


def _types(model):
    return [type(layer).__name__ for layer in model.layers]


# BatchNorm after a tensor layer.

BN_AFTER = {
    "conv1d": ((8, 3), lambda: layers.Conv1D(5, 3)),
    "conv2d": ((9, 9, 3), lambda: layers.Conv2D(5, 3, padding="same", strides=2)),
    "conv3d": ((6, 6, 6, 2), lambda: layers.Conv3D(4, 3)),
    "grouped": ((8, 8, 4), lambda: layers.Conv2D(6, 3, groups=2, use_bias=False)),
    "depthwise": ((8, 8, 3), lambda: layers.DepthwiseConv2D(3, depth_multiplier=2)),
    "separable": ((8, 8, 3), lambda: layers.SeparableConv2D(5, 3, depth_multiplier=2)),
    "transpose": ((5, 5, 3), lambda: layers.Conv2DTranspose(4, 3, strides=2)),
    "dense": ((7,), lambda: layers.Dense(6, use_bias=False)),
    "dense3d": ((4, 7), lambda: layers.Dense(6)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BN_AFTER))
def test_batchnorm_after_tensor_layer_is_folded(name):
    shape, make = BN_AFTER[name]
    model = randomize_bn(seq(shape, make(), layers.BatchNormalization(
        epsilon=0.01, name="bn")))
    fused = check_fused(model, tflite=name in ("conv2d", "depthwise", "dense"),
                        expect_gone=["bn"])
    assert len(fused.layers) == 1 and isinstance(fused, keras.Sequential)


def test_batchnorm_without_scale_or_center_is_folded():
    model = randomize_bn(seq((6, 6, 2), layers.Conv2D(3, 3),
                             layers.BatchNormalization(center=False, scale=False, name="bn")))
    check_fused(model, expect_gone=["bn"])


def test_batchnorm_after_activation_or_on_another_axis_stays():
    model = randomize_bn(seq((6, 6, 2), layers.Conv2D(3, 3, activation="relu"),
                             layers.BatchNormalization(name="bn"),
                             layers.GlobalAveragePooling2D()))
    fused = check_fused(model)
    assert "bn" in {layer.name for layer in fused.layers}
    text = [str(s) for s in fusion.plan(model)]
    assert any(s.startswith("bn: left alone") and "activation" in s for s in text), text
    model = randomize_bn(seq((4, 7), layers.Dense(6), layers.BatchNormalization(axis=1,
                                                                               name="bn")))
    assert "bn" in {layer.name for layer in check_fused(model).layers}
    assert "axis other than the channels" in str(fusion.plan(model)[0])


# Affine layers before a tensor layer.


@pytest.mark.slow
def test_batchnorm_before_valid_conv_and_dense_is_folded():
    model = randomize_bn(seq((8, 8, 3), layers.BatchNormalization(name="bn0"),
                             layers.Conv2D(4, 3, activation="relu"),
                             layers.BatchNormalization(name="bn1"),
                             layers.DepthwiseConv2D(3), layers.Flatten(),
                             layers.BatchNormalization(name="bn2"), layers.Dense(3)))
    fused = check_fused(model, tflite=True, expect_gone=["bn0", "bn1", "bn2"])
    assert "BatchNormalization" not in _types(fused)


@pytest.mark.slow
def test_batchnorm_before_flatten_dense_is_folded():
    model = randomize_bn(seq((4, 3, 5), layers.Conv2D(6, 2, activation="relu"),
                             layers.BatchNormalization(name="bn"), layers.Flatten(name="f"),
                             layers.Dense(3, name="d")))
    fused = check_fused(model, tflite=True, expect_gone=["bn"])
    assert _types(fused) == ["Conv2D", "Flatten", "Dense"]
    assert str(fusion.plan(model)[0]) == (
        "bn + f + d -> d (folded into the next layer's kernel and bias)")


def test_batchnorm_before_padded_conv_stays_with_reason():
    model = randomize_bn(seq((6, 6, 2), layers.Activation("relu"),
                             layers.BatchNormalization(name="bn"),
                             layers.Conv2D(3, 3, padding="same")))
    check_fused(model)
    steps = [str(s) for s in fusion.plan(model)]
    assert any(s.startswith("bn: left alone") and "pads" in s for s in steps), steps


def test_rescaling_and_normalization_before_first_layer_are_folded():
    model = seq((8, 8, 3), layers.Rescaling([0.5, 2.0, -1.0], offset=0.25, name="rescale"),
                layers.Conv2D(4, 3))
    check_fused(model, tflite=True, expect_gone=["rescale"])
    norm = layers.Normalization(mean=[0.1, 0.2, 0.3, 0.4], variance=[1.0, 4.0, 0.5, 2.0],
                                name="norm")
    check_fused(seq((4,), norm, layers.Dense(3)), expect_gone=["norm"])
    inverted = layers.Normalization(mean=1.5, variance=4.0, invert=True, name="norm")
    check_fused(seq((5, 5, 2), inverted, layers.SeparableConv2D(3, 3)), expect_gone=["norm"])


def test_a_pure_scale_folds_into_a_padded_conv_and_a_shift_does_not():
    scale = seq((8, 8, 3), layers.Rescaling(1 / 255, name="rescale"),
                layers.Conv2D(4, 3, strides=2, padding="same"))
    check_fused(scale, tflite=True, expect_gone=["rescale"])  # a scaled zero pad is zero
    shift = seq((8, 8, 3), layers.Rescaling(1 / 127.5, offset=-1, name="rescale"),
                layers.Conv2D(4, 3, padding="same"))
    steps = [str(s) for s in fusion.plan(shift)]
    assert any(s.startswith("rescale: left alone") and "pads" in s for s in steps), steps


def test_rescaling_of_integer_input_stays():
    model = keras.Sequential([keras.Input((4, 4, 1), dtype="uint8"),
                              layers.Rescaling(1 / 255, name="rescale"), layers.Conv2D(2, 3)])
    steps = [str(s) for s in fusion.plan(model)]
    assert any(s.startswith("rescale: left alone") and "uint8" in s for s in steps), steps


# Identity and activation layers.


def test_dropout_and_noise_are_removed_and_sequential_stays_sequential():
    model = seq((10,), layers.Dense(8), layers.Dropout(0.5), layers.GaussianNoise(1.0),
                layers.GaussianDropout(0.2), layers.AlphaDropout(0.1),
                layers.ActivityRegularization(0.1), layers.Dense(4, activation="relu"),
                layers.Reshape((2, 2, 1)), layers.SpatialDropout2D(0.5),
                layers.Activation("linear"))
    fused = check_fused(model)
    assert isinstance(fused, keras.Sequential)
    assert _types(fused) == ["Dense", "Reshape"]  # the two Dense collapse: 40 < 80 + 32 MACs


@pytest.mark.slow
def test_activation_layers_move_into_the_layer_before():
    model = seq((6, 6, 2), layers.Conv2D(4, 3, name="c1"), layers.ReLU(6.0, name="r6"),
                layers.DepthwiseConv2D(2, name="dw"), layers.Activation("tanh", name="t"),
                layers.Flatten(), layers.Dense(5), layers.Softmax())
    fused = check_fused(model, tflite=True)
    assert _types(fused) == ["Conv2D", "DepthwiseConv2D", "Flatten", "Dense"]
    assert fused.get_layer("c1").get_config()["activation"] == "relu6"


def test_leaky_or_thresholded_relu_stays():
    model = seq((4,), layers.Dense(3), layers.ReLU(negative_slope=0.1, name="leaky"))
    fused = check_fused(model)
    assert _types(fused) == ["Dense", "ReLU"]
    assert "slope" in str(fusion.plan(model)[-1])


# Linear chains.


def test_dense_chain_collapses_when_cheaper():
    model = seq((8,), layers.Dense(6, name="a"), layers.Dense(5, activation="relu", name="b"))
    fused = check_fused(model, tflite=True, expect_gone=["a"])
    assert fused.get_layer("b").kernel.shape == (8, 5)
    assert str(fusion.plan(model)[0]) == "a + b -> b (linear chain)"


def test_bottleneck_chain_stays():
    model = seq((64,), layers.Dense(4, name="a"), layers.Dense(64, name="b"))
    assert len(check_fused(model).layers) == 2


def test_conv_then_1x1_conv_collapses():
    model = seq((8, 8, 3), layers.Conv2D(4, 3, strides=2, padding="same", name="a"),
                layers.Conv2D(2, 1, activation="relu", name="b"))
    fused = check_fused(model, tflite=True, expect_gone=["a"])
    assert fused.get_layer("b").kernel.shape == (3, 3, 3, 2)


# Convolution -> average pooling (exact).


@pytest.mark.slow
@pytest.mark.parametrize("make_conv, pool, shape", [
    (lambda: layers.Conv2D(4, 3), lambda: layers.AveragePooling2D(2), (10, 10, 3)),
    (lambda: layers.Conv2D(4, 3, strides=2), lambda: layers.AveragePooling2D(2), (13, 13, 2)),
    (lambda: layers.Conv2D(4, 5), lambda: layers.AveragePooling2D(3, strides=2), (15, 15, 1)),
    (lambda: layers.Conv1D(4, 3), lambda: layers.AveragePooling1D(2), (11, 3)),
    (lambda: layers.DepthwiseConv2D(3), lambda: layers.AveragePooling2D(2), (9, 9, 3)),
    (lambda: layers.SeparableConv2D(4, 3), lambda: layers.AveragePooling2D(2), (9, 9, 3)),
    (lambda: layers.Conv2D(4, 3, padding="same"), lambda: layers.AveragePooling2D(2),
     (8, 8, 2)),
    (lambda: layers.Conv2D(4, 4, padding="same"), lambda: layers.AveragePooling2D(3),
     (9, 6, 2)),
])
def test_conv_then_average_pool_is_one_strided_conv(make_conv, pool, shape):
    model = seq(shape, make_conv(), pool())
    fused = check_fused(model, tflite=len(shape) == 3)
    assert len(fused.layers) == 1


def test_same_conv_then_pool_that_does_not_tile_stays():
    model = seq((9, 9, 2), layers.Conv2D(3, 3, padding="same"), layers.AveragePooling2D(2))
    assert len(check_fused(model).layers) == 2
    assert "tiles" in str(fusion.plan(model)[-1])


def test_saved_and_loaded_fused_model_is_the_same():
    model = randomize_bn(seq((8, 8, 2), layers.Conv2D(3, 3), layers.BatchNormalization(),
                             layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(2)))
    fused = fusion.fuse(model, approximate=True)
    path = os.path.join(tempfile.mkdtemp(), "fused.keras")
    fused.save(path)
    x = sample(model)
    np.testing.assert_allclose(keras.models.load_model(path)(x), fused(x), rtol=1e-6)


def test_average_pool_merge_plan_reads_kernel_and_stride():
    model = seq((12, 12, 1), layers.Conv2D(6, 5, name="c"), layers.AveragePooling2D(2, name="p"))
    assert [str(s) for s in fusion.plan(model)] == ["c + p -> c (5x5 s1 -> 6x6 s2)"]


def test_average_pool_after_activation_is_approximate_only():
    model = seq((10, 10, 1), layers.Conv2D(3, 3, activation="relu"),
                layers.AveragePooling2D(2, name="p"))
    assert len(fusion.fuse(model).layers) == 2
    step = fusion.plan(model, approximate=True)[0]
    assert step.approximate and step.rule == "average_pool"


# Parallel branches.


def _branches(join, padding="same", sizes=(3, 1), shortcut=False, act=None):
    x = keras.Input((8, 8, 4))
    ys = [layers.Conv2D(4, k, padding=padding, activation=act, name=f"b{i}")(x)
          for i, k in enumerate(sizes)]
    if shortcut:
        ys.append(x)
    y = join(ys)
    return keras.Model(x, layers.Conv2D(2, 3, name="head", activation="relu")(y))


def test_add_of_convs_and_identity_is_one_conv():
    model = _branches(layers.Add(name="add"), sizes=(3, 1, 5), shortcut=True)
    fused = check_fused(model, tflite=True, expect_gone=["add", "b1", "b2"])
    assert fused.get_layer("b0").kernel.shape == (5, 5, 4, 4)
    assert "identity branch" in str(fusion.plan(model)[0])


def test_concatenate_of_convs_is_one_conv():
    model = _branches(layers.Concatenate(name="cat"), padding="valid", sizes=(3, 3), act="relu")
    model = keras.Model(model.input, model.get_layer("cat").output)
    fused = check_fused(model, tflite=True, expect_gone=["cat", "b1"])
    assert fused.get_layer("b0").kernel.shape == (3, 3, 4, 8)


def test_branches_with_activation_before_add_stay():
    model = _branches(layers.Add(name="add"), act="relu")
    fused = check_fused(model)
    assert "add" in {layer.name for layer in fused.layers}


# Approximate merges.


def test_lenet5_max_pools_merge_only_when_approximate():
    model = lenet5()
    exact = [str(s) for s in fusion.plan(model)]
    assert "pool1: left alone (merging a max pool into the conv is approximate: needs " \
           "approximate=True)" in exact
    assert len(fusion.fuse(model).layers) == len(model.layers)
    steps = fusion.plan(model, approximate=True)
    assert [str(s) for s in steps[:2]] == [
        "conv1 + pool1 -> conv1 (5x5 s1 -> 6x6 s2 + relu), approximate",
        "conv2 + pool2 -> conv2 (5x5 s1 -> 6x6 s2 + relu), approximate",
    ]
    fused = fusion.fuse(model, approximate=True)
    assert _types(fused) == ["Conv2D", "Conv2D", "Flatten", "Dense", "Dense"]
    assert fused.output_shape == model.output_shape
    assert fused.get_layer("conv2").get_config()["activation"] == "relu"
    linear = fusion.fuse(model, approximate=True, pool_activation=None)
    assert linear.get_layer("conv2").get_config()["activation"] == "linear"
    assert str(fusion.plan(model, True, pool_activation=None)[0]) == (
        "conv1 + pool1 -> conv1 (5x5 s1 -> 6x6 s2), approximate")
    original = fusion.fuse(model, approximate=True, pool_kernel="original")
    assert original.get_layer("conv1").kernel.shape == (5, 5, 1, 20)
    assert original.get_layer("conv1").get_config()["strides"] == (2, 2)


def test_grown_max_pool_init_equals_the_average_pool_merge():
    model = seq((12, 12, 1), layers.Conv2D(3, 3), layers.MaxPooling2D(2))
    avg = seq((12, 12, 1), layers.Conv2D(3, 3), layers.AveragePooling2D(2))
    avg.set_weights(model.get_weights())
    x = sample(model)
    fused = fusion.fuse(model, approximate=True, pool_activation=None)
    np.testing.assert_allclose(fused(x), avg(x),
                               rtol=1e-5, atol=1e-5)


def test_bad_pool_kernel_is_rejected():
    with pytest.raises(TfpruneError, match="pool_kernel"):
        fusion.fuse(lenet5(), approximate=True, pool_kernel="big")
    with pytest.raises(TfpruneError, match="pool_activation"):
        fusion.plan(lenet5(), approximate=True, pool_activation=3)


# The caller's model, and bad input.


def test_fuse_never_touches_the_callers_model():
    model = randomize_bn(seq((6, 6, 2), layers.Conv2D(3, 3), layers.BatchNormalization()))
    before = [w.copy() for w in model.get_weights()]
    fused = fusion.fuse(model)
    assert len(model.layers) == 2
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    fused.layers[0].kernel.assign(np.zeros(fused.layers[0].kernel.shape))
    np.testing.assert_array_equal(before[0], model.layers[0].kernel.numpy())


def test_multi_input_output_model_is_fused_exactly():
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    y = layers.Dense(4, name="d1")(layers.Concatenate()([a, b]))
    y = layers.BatchNormalization(name="bn")(y)
    out1 = layers.Dense(3, name="o1")(y)
    out2 = layers.Dropout(0.5, name="drop")(layers.Dense(2, name="o2")(y))
    model = randomize_bn(keras.Model([a, b], [out1, out2]))
    fused = fusion.fuse(model)
    x = sample(model)
    for got, want in zip(fused(x), model(x), strict=True):
        assert rel_err(got, want) < TOL
    assert "bn" not in [layer.name for layer in fused.layers]


def test_batchnorm_after_a_model_output_folds_forward_not_back():
    x = keras.Input((5,))
    y = layers.Dense(4, name="d")(x)
    z = layers.BatchNormalization(name="bn")(y)
    model = randomize_bn(keras.Model(x, [y, layers.Dense(2, name="e")(z)]))
    fused = fusion.fuse(model)
    assert [str(s) for s in fusion.plan(model)] == [
        "bn + e -> e (folded into the next layer's kernel and bias)"]
    np.testing.assert_array_equal(fused.get_layer("d").kernel, model.get_layer("d").kernel)
    xs = sample(model)
    for got, want in zip(fused(xs), model(xs), strict=True):
        assert rel_err(got, want) < TOL


def test_shared_and_nested_models_are_refused_untouched():
    shared = layers.Dense(4)
    x = keras.Input((4,))
    with pytest.raises(UnsupportedModelError, match="more than once"):
        fusion.fuse(keras.Model(x, shared(shared(x))))
    inner = seq((4,), layers.Dense(4))
    with pytest.raises(UnsupportedModelError, match="nests"):
        fusion.plan(keras.Model(x, layers.Dropout(0.1)(inner(x))))


def test_masked_model_is_refused_with_a_message():
    model = seq((5, 3), layers.Masking(0.0), layers.Dense(4), layers.Dropout(0.5),
                layers.LSTM(2))
    with pytest.raises(UnsupportedModelError, match="mask"):
        fusion.fuse(model)


def test_a_keras_ops_call_between_layers_is_merged_not_refused():
    x = keras.Input((8, 8, 3))
    conv = layers.Conv2D(4, 3, name="conv")(x)
    hard_sigmoid = layers.ReLU(6.0, name="relu6")(conv + 3.0) / 6.0  # MobileNetV3's
    model = keras.Model(x, layers.Flatten()(hard_sigmoid))
    fused = fusion.fuse(model)  # + 3 and relu6 fold into conv; / 6 stays, an operation
    assert [type(layer).__name__ for layer in fused.layers[1:]] == [
        "Conv2D", "OperationLayer", "Flatten"]
    x = sample(model)
    assert rel_err(fused(x), model(x)) < TOL


def test_stateful_layer_is_left_alone():
    model = keras.Sequential([keras.Input(batch_shape=(2, 5, 3)), layers.Dense(4),
                              layers.Dropout(0.5), layers.GRU(3, stateful=True, name="gru")])
    steps = [str(s) for s in fusion.plan(model)]
    assert "gru" in {layer.name for layer in fusion.fuse(model).layers}
    assert steps[0].endswith("-> removed (identity at inference)")


def test_public_api():
    assert tfprune.fuse is fusion.fuse
    assert str(fusion.Step(("x",), rule="kept", detail="why")) == "x: left alone (why)"


# Explicit zero padding.


@pytest.mark.slow
def test_zero_padding_equal_to_same_folds_into_the_conv():
    model = seq((8, 8, 3), layers.ZeroPadding2D(((0, 1), (0, 1)), name="pad"),
                layers.DepthwiseConv2D(3, strides=2, name="dw"),
                layers.ZeroPadding2D(1, name="pad1"), layers.Conv2D(2, 3, name="c"))
    fused = check_fused(model, tflite=True, expect_gone=["pad", "pad1"])
    assert fused.get_layer("dw").get_config()["padding"] == "same"


def test_zero_padding_unlike_same_stays():
    model = seq((8, 8, 3), layers.ZeroPadding2D(((1, 0), (1, 0)), name="pad"),
                layers.Conv2D(2, 3, strides=2))
    fused = check_fused(model)
    assert "pad" in {layer.name for layer in fused.layers}
