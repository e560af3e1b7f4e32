"""Images made to fit a model: size, channels, channel axis, and the scaling of pixel values.

A dataset's images are pixel values (uint8, 0-255) of any size with 1 to 4 channels. A
model wants float32 images of its input shape: `Target` is that shape, resolved from the
model's input and the data (a `None` size takes the data's). `convert` resizes (bilinear,
as `keras.utils.image_dataset_from_directory`), converts grayscale and RGB (an alpha
channel is dropped), drops the channel axis for a model whose input has none, and scales.

Scaling (`--rescale`): `unit` divides by 255 (to [0, 1]), `symmetric` maps to [-1, 1],
`none` leaves 0-255. `auto`, the default, is `unit` unless the model begins with its own
`Rescaling` or `Normalization` layer (found through its layer graph, past input-side
layers that leave values alone, such as augmentation), which then gets 0-255 itself.
Images stored as floats (an `.npz` of float arrays) count as already scaled.
"""

import dataclasses

import numpy as np

from tfprune import options
from tfprune.errors import DataError

_SCALINGS = {"unit": "pixel values / 255, in [0, 1]",
             "symmetric": "pixel values / 127.5 - 1, in [-1, 1]",
             "none": "pixel values 0-255 as float32, unscaled"}
# Layers that come before a model's scaling layer without changing what it scales.
_PASSING = ("InputLayer", "Reshape", "Flatten", "Permute", "Resizing", "CenterCrop",
            "Cropping2D", "ZeroPadding2D", "Dropout", "GaussianNoise", "AutoContrast")


@dataclasses.dataclass(frozen=True)
class Target:
    """The image shape a model takes.

    Attributes:
        height, width: Integers, the image size.
        channels: Integer, 1 (grayscale) or 3 (RGB).
        squeeze: Boolean, the model's input has no channel axis (`(28, 28)`).
    """

    height: int
    width: int
    channels: int
    squeeze: bool = False

    @property
    def shape(self):
        """The shape of one image as the model takes it."""
        size = (self.height, self.width)
        return size if self.squeeze else (*size, self.channels)


def target(input_shape, sample_shape):
    """The `Target` for a model's input shape, given the shape of one image of the data.

    Args:
        input_shape: The model's input shape without the batch axis (`(28, 28, 1)`,
            `(None, None, 3)`, `(28, 28)`), or `None` to keep the data's shape.
        sample_shape: `(height, width)` or `(height, width, channels)` of one image.

    Returns:
        A `Target`.

    Raises:
        DataError: the model's input is not an image (`(784,)`), or has neither 1 nor 3
            channels; the message names the input the model should start with.

    Example:

    >>> from tfprune.data.images import target
    >>> target((32, 32, 3), (28, 28, 1))
    Target(height=32, width=32, channels=3, squeeze=False)
    >>> target((28, 28), (28, 28, 1)).shape
    (28, 28)
    """
    height, width = sample_shape[:2]
    channels = 1 if len(sample_shape) == 2 or sample_shape[2] <= 2 else 3
    if input_shape is None:
        return Target(height, width, channels)
    input_shape = tuple(input_shape)
    if len(input_shape) == 2:
        want = (*input_shape, 1)
    elif len(input_shape) == 3:
        want = input_shape
    else:
        raise DataError(
            f"The model's input {(None, *input_shape)} is not an image, and the dataset's "
            f"images are {height}x{width} with {channels} channel(s): start the model with "
            f"keras.Input(({height}, {width}, {channels})) (add keras.layers.Flatten() if it "
            f"needs vectors). Received: model input={(None, *input_shape)}")
    if want[2] not in (1, 3, None):
        raise DataError(f"Expected a model input with 1 (grayscale) or 3 (RGB) channels. "
                        f"Received: model input={(None, *input_shape)}")
    return Target(want[0] or height, want[1] or width, want[2] or channels,
                  squeeze=len(input_shape) == 2)


def changes(shapes, to, counts=None):
    """The conversions `convert` makes, in words, for the report.

    Args:
        shapes: Int array `(K, 3)`: the images' own `(height, width, channels)`.
        to: The `Target`.
        counts: Int array `(K,)`: how many images have each shape (1 each by default).

    Returns:
        A list of strings, empty when the images fit as they are.

    Example:

    >>> from tfprune.data.images import Target, changes
    >>> changes([(28, 28, 1)], Target(32, 32, 3), counts=[100])
    ['all 100 images resized to 32x32 (bilinear)', 'all 100 images grayscale, repeated into RGB']
    """
    shapes = np.asarray(shapes, np.int64).reshape(-1, 3)
    counts = np.ones(len(shapes), np.int64) if counts is None else np.asarray(counts)
    total = int(counts.sum())

    def some(mask, what):
        n = int(counts[mask].sum())
        return [f"{'all ' if n == total else ''}{n:,}{'' if n == total else f' of {total:,}'} "
                f"images {what}"] if n else []

    gray = shapes[:, 2] <= 2
    return (some((shapes[:, 0] != to.height) | (shapes[:, 1] != to.width),
                 f"resized to {to.height}x{to.width} (bilinear)")
            + some(np.isin(shapes[:, 2], (2, 4)), "had an alpha channel, dropped")
            + (some(~gray, "RGB, converted to grayscale") if to.channels == 1
               else some(gray, "grayscale, repeated into RGB"))
            + (["channel axis dropped (the model's input has none)"] if to.squeeze else []))


def convert(images, to, scale):
    """Converts images to `to` (a `Target`) and scales them; a TensorFlow function.

    Args:
        images: A tensor `(height, width, channels)` or a batch of them, uint8 pixel
            values (or floats, already scaled), any size, 1 to 4 channels.
        to: The `Target`.
        scale: One of `"unit"`, `"symmetric"`, `"none"`; ignored for float images.

    Returns:
        A float32 tensor of `to.shape` (with the batch axis if `images` had one).
    """
    import tensorflow as tf

    pixels = images.dtype == tf.uint8
    x = tf.cond(tf.shape(images)[-1] >= 3, lambda: images[..., :3], lambda: images[..., :1])
    if to.channels == 1:
        x = tf.cond(tf.shape(x)[-1] == 3, lambda: tf.image.rgb_to_grayscale(_static(x, 3)),
                    lambda: x)
    else:
        x = tf.cond(tf.shape(x)[-1] == 1, lambda: tf.image.grayscale_to_rgb(_static(x, 1)),
                    lambda: x)
    x = _static(x, to.channels)
    size = tf.shape(x)[-3:-1]
    x = tf.cond(tf.reduce_all(size == (to.height, to.width)),
                lambda: tf.cast(x, tf.float32),
                lambda: tf.image.resize(x, (to.height, to.width), method="bilinear"))
    x = tf.ensure_shape(x, [*x.shape[:-3], to.height, to.width, to.channels])
    if pixels:
        x = scaled(x, scale)
    return x[..., 0] if to.squeeze else x


def _static(x, channels):
    """`x` with its channel count known to the graph (`tf.image` functions check it)."""
    import tensorflow as tf

    return tf.ensure_shape(x, [*x.shape[:-1], channels])


def scaled(x, scale):
    """float32 pixel values (an array or tensor) scaled as `scale` says."""
    if scale == "unit":
        return x / 255.0
    if scale == "symmetric":
        return x / 127.5 - 1.0
    return x


def fits_as_is(images, to):
    """Whether `images` (N, H, W[, C]) already have `to`'s size and channel count."""
    have = images.shape[3] if images.ndim == 4 else 1
    return tuple(images.shape[1:3]) == (to.height, to.width) and have == to.channels


def from_arrays(images, to, scale):
    """`images` (N, H, W[, C]) converted to `to` and scaled, as one float32 array.

    Images that already fit are scaled in NumPy (`uint8 / 255`, exactly as MNIST always
    was); others go through `convert` in parallel batches.
    """
    if images.ndim == 3:
        images = images[..., None]
    if fits_as_is(images, to):
        x = images.astype(np.float32)
        x = scaled(x, scale) if images.dtype == np.uint8 else x
        return x[..., 0] if to.squeeze else x
    import tensorflow as tf

    out = np.empty((len(images), *to.shape), np.float32)
    ds = tf.data.Dataset.from_tensor_slices(images).batch(512).map(
        lambda batch: convert(batch, to, scale), num_parallel_calls=tf.data.AUTOTUNE)
    start = 0
    for batch in ds.prefetch(tf.data.AUTOTUNE):
        out[start:start + len(batch)] = batch.numpy()
        start += len(batch)
    return out


def scaling(rescale, model=None, stored_as_float=False):
    """The scale to apply and its description: `(scale, text)`.

    Args:
        rescale: One of `tfprune.options.RESCALES`.
        model: The Keras model the images are for (`auto` looks for its own scaling
            layer), or `None`.
        stored_as_float: Boolean, the images are floats already (left as they are).

    Returns:
        `(scale, text)`: `scale` is `"unit"`, `"symmetric"` or `"none"`; `text` says what
        was done, for the report.

    Raises:
        DataError: `rescale` is not one of `RESCALES`.

    Example:

    >>> import keras
    >>> from tfprune.data.images import scaling
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255,
    ...                          name="scale"), keras.layers.Flatten(), keras.layers.Dense(2)])
    >>> scale, text = scaling("auto", model)
    >>> scale, text.split("; ")[1]
    ('none', "the model's own Rescaling layer 'scale' scales them")
    >>> scaling("auto")[0]
    'unit'
    """
    if rescale not in options.RESCALES:
        raise DataError(f"Unknown rescale. Expected one of {list(options.RESCALES)}. "
                        f"Received: rescale={rescale!r}")
    if stored_as_float:
        return "none", "as stored: the images are floats already, not rescaled"
    if rescale != "auto":
        return rescale, f"{rescale}: {_SCALINGS[rescale]}"
    layer = input_scaling(model) if model is not None else None
    if layer is not None:
        return "none", (f"none: {_SCALINGS['none']}; the model's own {type(layer).__name__} "
                        f"layer {layer.name!r} scales them")
    return "unit", f"unit: {_SCALINGS['unit']}"


def input_scaling(model):
    """The `Rescaling` or `Normalization` layer a model's input goes through first, or `None`.

    It follows the layer graph from the (single) input through layers that leave values
    alone (reshapes, crops, dropout, augmentation: `Random*`) and into nested models, and
    stops at the first layer that computes anything else, or where the input branches.

    Example:

    >>> import keras
    >>> from tfprune.data.images import input_scaling
    >>> aug = keras.Sequential([keras.layers.RandomFlip()], name="aug")
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), aug,
    ...                          keras.layers.Rescaling(1 / 255, name="scale"),
    ...                          keras.layers.Conv2D(2, 3)])
    >>> input_scaling(model).name, input_scaling(keras.Sequential([keras.Input((3,))]))
    ('scale', None)
    """
    found, _ = _walk(model)
    return found


def _walk(model):
    """`(scaling layer or None, whether the walk passed through the whole model)`."""
    import keras

    from tfprune import compat

    graph = compat.functional(model) or model  # a Sequential's own graph
    by_depth = compat.nodes_by_depth(graph)
    if by_depth is None or len(graph.inputs) != 1:
        return None, False
    consumers = {}
    for nodes in by_depth.values():
        for node in nodes:
            for tensor in node.input_tensors:
                consumers.setdefault(id(tensor), []).append(node)
    tensor = graph.inputs[0]
    outputs = {id(t) for t in graph.outputs}
    while id(tensor) not in outputs:
        nodes = consumers.get(id(tensor), [])
        if len(nodes) != 1 or len(nodes[0].outputs) != 1:
            return None, False
        layer = nodes[0].operation
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
            return layer, False
        if isinstance(layer, keras.Model):
            found, through = _walk(layer)
            if found is not None or not through:
                return found, False
        elif not (type(layer).__name__ in _PASSING or type(layer).__name__.startswith("Random")):
            return None, False
        tensor = nodes[0].outputs[0]
    return None, True
