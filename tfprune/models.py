"""The model zoo: the two LeNet-5 variants, a small MobileNet-style CNN and
keras.applications' MobileNetV2 and MobileNetV3 (Small and Large).

`get(name)` builds one by the name the command line's `--model` takes.
"""

import keras
from keras import layers

from tfprune.errors import TfpruneError


def lenet5(input_shape=(28, 28, 1), num_classes=10, name="lenet5"):
    """Caffe's LeNet-5: conv 20@5x5, max-pool, conv 50@5x5, max-pool, dense 500, dense 10.

    As in Caffe's `lenet_train_test.prototxt`, the convolutions have no activation and the
    only ReLU follows the 500-unit layer; 431,080 parameters at 28x28x1.

    Args:
        input_shape: Tuple, defaults to `(28, 28, 1)`.
        num_classes: Integer, defaults to `10`.
        name: String, defaults to `"lenet5"`.

    Returns:
        An uncompiled `keras.Sequential` whose output is a softmax.

    Example:

    >>> import tfprune
    >>> model = tfprune.models.lenet5()
    >>> model.count_params(), model.output_shape
    (431080, (None, 10))
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(20, 5, name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(50, 5, name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(500, activation="relu", name="ip1"),
            layers.Dense(num_classes, activation="softmax", name="ip2"),
        ],
        name=name,
    )


def lenet5_classic(input_shape=(28, 28, 1), num_classes=10, name="lenet5_classic"):
    """LeCun et al. 1998's LeNet-5: 6-16-120-84, average pooling, ReLU in place of tanh.

    The first convolution pads to 'same' so that a 28x28 input plays the role of the
    paper's 32x32 one.

    Args:
        input_shape: Tuple, defaults to `(28, 28, 1)`.
        num_classes: Integer, defaults to `10`.
        name: String, defaults to `"lenet5_classic"`.

    Returns:
        An uncompiled `keras.Sequential` whose output is a softmax.

    Example:

    >>> import tfprune
    >>> [layer.name for layer in tfprune.models.lenet5_classic().layers][:3]
    ['c1', 's2', 'c3']
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(6, 5, padding="same", activation="relu", name="c1"),
            layers.AveragePooling2D(2, name="s2"),
            layers.Conv2D(16, 5, activation="relu", name="c3"),
            layers.AveragePooling2D(2, name="s4"),
            layers.Flatten(name="flatten"),
            layers.Dense(120, activation="relu", name="c5"),
            layers.Dense(84, activation="relu", name="f6"),
            layers.Dense(num_classes, activation="softmax", name="output"),
        ],
        name=name,
    )


def _conv_bn_relu(x, filters, kernel, strides, name):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _separable(x, filters, strides, name, relu=True):
    """Depthwise 3x3 -> BatchNorm -> ReLU -> pointwise 1x1 -> BatchNorm (-> ReLU)."""
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                               name=f"{name}_dw")(x)
    x = layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = layers.ReLU(name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    x = layers.BatchNormalization(name=f"{name}_pw_bn")(x)
    return layers.ReLU(name=f"{name}_pw_relu")(x) if relu else x


def mobilenet_tiny(input_shape=(32, 32, 3), num_classes=10, width=1.0, dropout=0.2,
                   name="mobilenet_tiny"):
    """A small MobileNet-style CNN for 32x32 images (the layers of today's mobile CNNs).

    A Conv-BatchNorm-ReLU stem (3x3, stride 2), three depthwise-separable blocks
    (depthwise 3x3 -> BatchNorm -> ReLU -> pointwise 1x1 -> BatchNorm -> ReLU) of 64, 128
    and 256 filters, the last two with stride 2, and between them a residual block of 128
    whose output is added to its input before the ReLU; then global average pooling,
    dropout and a Dense softmax classifier. Convolutions before a BatchNorm have no bias.
    69,834 parameters and 3.0 million multiply-accumulates at 32x32x3.

    Args:
        input_shape: Tuple, height, width and channels (1 or 3; 32x32 and up), defaults to
            `(32, 32, 3)`.
        num_classes: Integer, defaults to `10`.
        width: Float, multiplies every layer's filter count (MobileNet's alpha), defaults
            to `1.0`.
        dropout: Float, the dropout rate before the classifier, defaults to `0.2`.
        name: String, defaults to `"mobilenet_tiny"`.

    Returns:
        An uncompiled Functional `keras.Model` whose output is a softmax.

    Raises:
        TfpruneError: an input smaller than 8x8 or a width that leaves a layer no filter.

    Example:

    >>> import tfprune
    >>> model = tfprune.models.mobilenet_tiny()
    >>> model.count_params(), model.output_shape
    (69834, (None, 10))
    >>> tfprune.models.mobilenet_tiny((32, 32, 1), num_classes=3).output_shape
    (None, 3)
    >>> model.get_layer("block3_add").input[0].shape   # the residual: two branches of 128
    (None, 8, 8, 128)
    """
    filters = [max(int(f * width), 0) for f in (32, 64, 128, 128, 256)]
    if min(filters) < 1 or len(input_shape) != 3 or min(input_shape[:2]) < 8:
        raise TfpruneError(f"mobilenet_tiny needs an input of at least 8x8 with channels and "
                           f"a width that leaves every layer a filter. Received: "
                           f"input_shape={input_shape}, width={width}")
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn_relu(inputs, filters[0], 3, 2, "stem")
    x = _separable(x, filters[1], 1, "block1")
    x = _separable(x, filters[2], 2, "block2")
    y = _separable(x, filters[3], 1, "block3", relu=False)
    x = layers.ReLU(name="block3_relu")(layers.Add(name="block3_add")([x, y]))
    x = _separable(x, filters[4], 2, "block4")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)


def mobilenet_v2(input_shape=(32, 32, 3), num_classes=10, alpha=0.35, momentum=0.9,
                 name="mobilenet_v2"):
    """keras.applications' MobileNetV2, from scratch, with its own input scaling.

    The model users have, as Keras ships it (inverted residual blocks, depthwise convs,
    ReLU6, residual adds), with random weights: nothing is downloaded. A `Rescaling` layer
    maps pixel values 0-255 to MobileNetV2's [-1, 1] inside the model. Its BatchNorms get
    `momentum` instead of keras.applications' 0.999, whose moving statistics take
    thousands of steps to follow the weights: a short run from scratch with 0.999
    validates at chance level.

    Args:
        input_shape: Tuple, height, width (32 and up) and channels, defaults to
            `(32, 32, 3)`.
        num_classes: Integer, defaults to `10`.
        alpha: Float, the width multiplier (0.35, 0.5, 0.75, 1.0, 1.3 or 1.4), defaults to
            `0.35`.
        momentum: Float, every BatchNorm's momentum, defaults to `0.9`.
        name: String, defaults to `"mobilenet_v2"`.

    Returns:
        An uncompiled Functional `keras.Model` whose output is a softmax.

    Raises:
        TfpruneError: an input smaller than 32x32, or an `alpha` MobileNetV2 lacks.

    Example:

    >>> import tfprune
    >>> model = tfprune.models.mobilenet_v2()
    >>> model.count_params(), model.output_shape, model.layers[1].name
    (423018, (None, 10), 'rescale')
    >>> {layer.momentum for layer in model.layers if "BatchNorm" in type(layer).__name__}
    {0.9}
    """
    if len(input_shape) != 3 or min(input_shape[:2]) < 32 or alpha not in _MOBILENET_V2_ALPHAS:
        raise TfpruneError(f"mobilenet_v2 needs an input of at least 32x32 with channels and "
                           f"an alpha of {_MOBILENET_V2_ALPHAS}. Received: "
                           f"input_shape={input_shape}, alpha={alpha}")
    return _scaled_application(keras.applications.MobileNetV2, input_shape, momentum, name,
                               alpha=alpha, weights=None, classes=num_classes)


def mobilenet_v3_small(input_shape=(32, 32, 3), num_classes=10, alpha=0.75, momentum=0.9,
                       minimalistic=False, name="mobilenet_v3_small"):
    """keras.applications' MobileNetV3Small, from scratch, with its own input scaling.

    As `mobilenet_v2`: random weights, a `Rescaling` layer mapping 0-255 to [-1, 1] in
    place of keras.applications' own (`include_preprocessing=False`), and every BatchNorm's
    momentum set to `momentum`. Its squeeze-and-excitation gates and hard-sigmoids are
    `keras.ops` calls between layers (`x + 3`, `x * (1 / 6)`), which tfprune reads as
    operation nodes (`tfprune.operations`).

    Args:
        input_shape: Tuple, height, width (32 and up) and channels, defaults to
            `(32, 32, 3)`.
        num_classes: Integer, defaults to `10`.
        alpha: Float, the width multiplier, defaults to `0.75`.
        momentum: Float, every BatchNorm's momentum, defaults to `0.9`.
        minimalistic: Boolean, defaults to `False`: no squeeze-and-excitation, no
            hard-swish, 3x3 kernels only.
        name: String, defaults to `"mobilenet_v3_small"`.

    Returns:
        An uncompiled Functional `keras.Model` whose output is a softmax.

    Raises:
        TfpruneError: an input smaller than 32x32, or an `alpha` not above 0.

    Example:

    >>> import tfprune
    >>> model = tfprune.models.mobilenet_v3_small()
    >>> model.output_shape, model.layers[1].name
    ((None, 10), 'rescale')
    """
    return _mobilenet_v3(keras.applications.MobileNetV3Small, input_shape, num_classes, alpha,
                         momentum, minimalistic, name)


def mobilenet_v3_large(input_shape=(32, 32, 3), num_classes=10, alpha=0.75, momentum=0.9,
                       minimalistic=False, name="mobilenet_v3_large"):
    """keras.applications' MobileNetV3Large, from scratch: see `mobilenet_v3_small`.

    Example:

    >>> import tfprune
    >>> tfprune.models.mobilenet_v3_large(num_classes=3).output_shape
    (None, 3)
    """
    return _mobilenet_v3(keras.applications.MobileNetV3Large, input_shape, num_classes, alpha,
                         momentum, minimalistic, name)


def _mobilenet_v3(application, input_shape, num_classes, alpha, momentum, minimalistic, name):
    if len(input_shape) != 3 or min(input_shape[:2]) < 32 or not alpha > 0:
        raise TfpruneError(f"{name} needs an input of at least 32x32 with channels and an "
                           f"alpha above 0. Received: input_shape={input_shape}, "
                           f"alpha={alpha}")
    return _scaled_application(application, input_shape, momentum, name, alpha=alpha,
                               minimalistic=minimalistic, include_preprocessing=False,
                               weights=None, classes=num_classes)


def _scaled_application(application, input_shape, momentum, name, **kwargs):
    """A keras.applications model on 0-255 pixels scaled to [-1, 1] by our own layer, with
    BatchNorm momentum fit for short runs from scratch."""
    inputs = keras.Input(input_shape, name="image")
    scaled = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inputs)
    base = application(input_tensor=scaled, include_top=True, **kwargs)
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = momentum
    return keras.Model(inputs, base.output, name=name)


_MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)

MODELS = {"lenet5": lenet5, "lenet5_classic": lenet5_classic, "mobilenet_tiny": mobilenet_tiny,
          "mobilenet_v2": mobilenet_v2, "mobilenet_v3_small": mobilenet_v3_small,
          "mobilenet_v3_large": mobilenet_v3_large}


def get(name, **kwargs):
    """A zoo model by name.

    Args:
        name: String, a key of `MODELS` (`"lenet5"`, `"lenet5_classic"`,
            `"mobilenet_tiny"`, `"mobilenet_v2"`, `"mobilenet_v3_small"`,
            `"mobilenet_v3_large"`).
        **kwargs: Passed to the model's function (`input_shape`, `num_classes`, `name`).

    Returns:
        The model, built and uncompiled.

    Raises:
        TfpruneError: an unknown name.

    Example:

    >>> import tfprune
    >>> tfprune.models.get("lenet5", num_classes=3).output_shape
    (None, 3)
    """
    if name not in MODELS:
        raise TfpruneError(f"Unknown model. Expected one of {sorted(MODELS)} or a .keras path. "
                           f"Received: model={name!r}")
    return MODELS[name](**kwargs)
