"""BatchNormalization after a tensor layer with no activation: folded into kernel and bias.

At inference BatchNorm is `gamma * (x - mean) / sqrt(var + epsilon) + beta` per channel,
i.e. `s * x + t`; scaling the layer's output channels by `s` and its bias to `b * s + t`
gives the same numbers.
"""

import keras
import numpy as np

from tfprune.fusion import layers
from tfprune.fusion.step import Step


def affine_of(node):
    """(s, t) in float64 such that the BatchNorm node computes `s * x + t` per channel."""
    cfg = node.config
    weights = [w.astype(np.float64) for w in node.weights]
    gamma = weights.pop(0) if cfg.get("scale", True) else 1.0
    beta = weights.pop(0) if cfg.get("center", True) else 0.0
    mean, var = weights
    s = gamma / np.sqrt(var + cfg["epsilon"])
    return s * np.ones_like(mean), beta - mean * s


def bn_axis(node):
    """The BatchNorm's normalised axis as a positive index, or `None` if it has several."""
    axis = node.config["axis"]
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return None
        axis = axis[0]
    rank = len(node.output_shape)
    return axis % rank


def fold_after(graph, node, options):
    """Folds a BatchNormalization into the linear tensor layer that feeds only it."""
    if type(node.layer) is not keras.layers.BatchNormalization:
        return None
    producer = graph.nodes[node.inputs[0]]
    reason = why_not_after(graph, node, producer)
    if reason:
        return reason
    if bn_axis(node) != layers.channel_axis(producer):
        return "it normalises an axis other than the channels"
    s, t = affine_of(node)
    weights = layers.scale_outputs(producer, s, t)
    layers.rebuild(graph, producer.name, weights, use_bias=True)
    graph.remove(node.name)
    return Step((producer.name, node.name), producer.name, "batchnorm",
                "folded into kernel and bias")


def why_not_after(graph, node, producer):
    """Why `node` cannot fold into `producer` before it (a string), or `None`."""
    if layers.kind(producer) is None:
        return f"{producer.name!r} before it is not a dense or conv layer"
    reason = layers.plain_tensor_layer(producer)
    if reason:
        return reason
    if not layers.is_linear(producer):
        return f"{producer.name!r} before it has an activation"
    if graph.only_consumer(producer.name) is not node:
        return f"{producer.name!r} feeds other layers too"
    return None
