"""Explicit zero padding in front of a valid convolution: the convolution's own 'same'.

Keras models built for other frameworks (MobileNetV2's `correct_pad`) pad explicitly and
then convolve with padding='valid'. Where the explicit padding is exactly what
padding='same' would add for that input size (TensorFlow puts the odd pixel at the end),
the ZeroPadding layer goes and the convolution pads itself.
"""

import keras

from tfprune.fusion import layers
from tfprune.fusion.step import Step

L = keras.layers
PADDING = (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D)


def same_padding(n, k, stride, dilation=1):
    """(before, after) zeros that padding='same' adds along an axis of length `n`."""
    effective = (k - 1) * dilation + 1
    total = max((-(-n // stride) - 1) * stride + effective - n, 0)
    return total // 2, total - total // 2


def fold(graph, node, options):
    """Folds a ZeroPadding layer into the valid convolution that reads only it."""
    if type(node.layer) not in PADDING:
        return None
    consumer = graph.only_consumer(node.name)
    if consumer is None or layers.kind(consumer) not in layers.SLIDING:
        return "no rule merges ZeroPadding except into the convolution it feeds alone"
    cfg, ccfg = node.config, consumer.config
    if ccfg["padding"] != "valid" or cfg["data_format"] != ccfg["data_format"]:
        return f"{consumer.name!r} already pads or uses another data format"
    spatial = layers.spatial(consumer, node.input_shapes[0])
    pads = [tuple(p) for p in cfg["padding"]]
    dilation = ccfg.get("dilation_rate", (1,) * len(pads))
    for n, pad, k, s, d in zip(spatial, pads, ccfg["kernel_size"], ccfg["strides"], dilation,
                               strict=True):
        if n is None or pad != same_padding(n, k, s, d):
            return f"its padding is not what padding='same' adds in {consumer.name!r}"
    layers.rebuild(graph, consumer.name, consumer.weights, padding="same")
    graph.remove(node.name)
    consumer.input_shapes = list(node.input_shapes)
    return Step((node.name, consumer.name), consumer.name, "padding", "padding='same'")
