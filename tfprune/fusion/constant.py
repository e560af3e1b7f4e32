"""A per-channel affine `keras.ops` call after a tensor layer: folded into kernel and bias.

`x + 3` (MobileNetV3's hard-sigmoid starts so), `x * 0.5`, `x / c` with a scalar or
per-channel constant compute `s * x + t`; the handler says which (`LayerHandler.affine`).
As a BatchNorm after a linear layer, it scales that layer's output channels by `s` and
its bias to `b * s + t`.
"""

from tfprune.fusion import batchnorm, layers
from tfprune.fusion.step import Step


def fold_after(graph, node, options):
    """Folds an affine operation into the linear tensor layer that feeds only it."""
    if layers.kind(node) is not None or len(node.inputs) != 1:
        return None
    st = layers.handler(node).affine(node)
    if st is None:
        return None
    producer = graph.nodes[node.inputs[0]]
    reason = batchnorm.why_not_after(graph, node, producer)
    if reason:
        return reason
    if layers.channel_axis(producer) != len(node.output_shape) - 1:
        return "its constant runs along the last axis, not the channels"
    if tuple(node.output_shape) != tuple(producer.output_shape):
        return "it broadcasts the layer's output to another shape"
    weights = layers.scale_outputs(producer, *st)
    layers.rebuild(graph, producer.name, weights, use_bias=True)
    graph.remove(node.name)
    return Step((producer.name, node.name), producer.name, "constant",
                "folded into kernel and bias")
