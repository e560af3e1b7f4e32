"""A per-channel affine layer in front of a tensor layer: folded into that layer's kernel.

BatchNormalization, Rescaling and Normalization compute `s * x + t` per channel at
inference. The next layer's kernel absorbs `s` on its input side and `t` into its bias.
This is exact only where the next layer adds no zero padding (padding would see `0`
instead of `t`), so convolutions must be valid-padded or 1x1, unless the layer only scales
(`t` is 0, as `Rescaling(1 / 255)`): a scaled zero is still zero.
"""

import keras
import numpy as np

from tfprune.fusion import batchnorm, layers
from tfprune.fusion.step import Step

L = keras.layers
AFFINE = (L.BatchNormalization, L.Rescaling, L.Normalization)


def fold_before(graph, node, options):
    """Folds BatchNormalization / Rescaling / Normalization into the layer it feeds."""
    if type(node.layer) not in AFFINE:
        return None
    consumer = graph.only_consumer(node.name)
    flatten = None
    if consumer is not None and type(consumer.layer) is L.Flatten and \
            consumer.config.get("data_format") in (None, "channels_last"):
        # Flatten keeps channels last: feature i of the Dense input is channel i % C.
        flatten, consumer = consumer, graph.only_consumer(consumer.name)
        if consumer is not None and layers.kind(consumer) != "dense":
            return f"{consumer.name!r} after the Flatten is not a Dense layer"
    reason = _why_not(graph, node, consumer)
    if reason:
        return reason
    shape = node.output_shape
    axis = len(shape) - 1 if flatten else layers.channel_axis(consumer, shape)
    st = _per_channel(node, axis)
    if isinstance(st, str):
        return st
    if np.any(st[1] != 0) and _pads(consumer):
        return f"{consumer.name!r} pads its input, so the shift would be wrong at the borders"
    if flatten:
        st = tuple(np.tile(v, int(np.prod(shape[1:-1]))) for v in st)
    weights = layers.absorb_inputs(consumer, *st)
    layers.rebuild(graph, consumer.name, weights, use_bias=True)
    graph.remove(node.name)
    if not flatten:
        consumer.input_shapes = list(node.input_shapes)
    names = (node.name, flatten.name, consumer.name) if flatten else (node.name, consumer.name)
    return Step(names, consumer.name, "affine_before",
                "folded into the next layer's kernel and bias")


def _why_not(graph, node, consumer):
    if consumer is None:
        return "its output feeds several layers or is a model output"
    if layers.kind(consumer) not in ("dense", "conv", "depthwise", "separable"):
        return f"{consumer.name!r} after it is not a dense or conv layer"
    reason = layers.plain_tensor_layer(consumer)
    if reason:
        return reason
    source = graph.nodes[node.inputs[0]]
    dtype = source.config.get("dtype") if source.is_input else "float"
    if isinstance(dtype, str) and "float" not in dtype:
        return f"it converts {dtype} inputs to floats"
    return None


def _pads(consumer):
    """Whether `consumer` reads zero padding around its input."""
    cfg = consumer.config
    return layers.kind(consumer) != "dense" and cfg["padding"] != "valid" and not (
        layers.ones_kernel(consumer) and cfg["padding"] == "same")


def _per_channel(node, axis):
    """(s, t) per channel along `axis`, or a reason if the layer varies along other axes."""
    if type(node.layer) is L.BatchNormalization:
        if batchnorm.bn_axis(node) != axis:
            return "it normalises an axis other than the next layer's channels"
        return batchnorm.affine_of(node)
    cfg = node.config
    if type(node.layer) is L.Rescaling:
        s = np.asarray(cfg["scale"], np.float64)
        t = np.asarray(cfg["offset"], np.float64)
    else:
        mean = np.asarray(node.layer.mean, np.float64)
        std = np.maximum(np.sqrt(np.asarray(node.layer.variance, np.float64)),
                         keras.config.epsilon())
        s, t = (std, mean) if cfg.get("invert") else (1.0 / std, -mean / std)
    shape = tuple(node.output_shape[1:])
    if any(d is None for d in shape):
        return "its input has an unknown dimension"
    s = np.broadcast_to(s, (1,) + shape).reshape(shape)
    t = np.broadcast_to(t, (1,) + shape).reshape(shape)
    c = axis - 1
    s, t = np.moveaxis(s, c, -1), np.moveaxis(t, c, -1)
    flat_s, flat_t = s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1])
    if not (np.all(flat_s == flat_s[0]) and np.all(flat_t == flat_t[0])):
        return "its scale or offset varies along a non-channel axis"
    return flat_s[0], flat_t[0]
