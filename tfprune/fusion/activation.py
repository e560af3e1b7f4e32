"""A separate activation layer after a linear tensor layer becomes that layer's activation.

Which `activation=` a layer equals, its handler says
(`tfprune.handlers.LayerHandler.as_activation`: Activation, ReLU, Softmax).
"""

from tfprune.fusion import layers
from tfprune.fusion.step import Step


def fold(graph, node, options):
    """Folds Activation / ReLU / Softmax into the linear tensor layer before it."""
    found = layers.handler(node).as_activation(node.config)
    if found is None:
        return None
    name, reason = found
    if reason:
        return reason
    producer = graph.nodes[node.inputs[0]]
    reason = _why_not(graph, node, producer)
    if reason:
        return reason
    layers.rebuild(graph, producer.name, producer.weights, activation=name)
    graph.remove(node.name)
    shown = name if isinstance(name, str) else type(node.layer).__name__
    return Step((producer.name, node.name), producer.name, "activation", f"activation {shown}")


def _why_not(graph, node, producer):
    if layers.kind(producer) is None:
        return f"{producer.name!r} before it is not a dense or conv layer"
    if not layers.is_linear(producer):
        return f"{producer.name!r} already has an activation"
    if graph.only_consumer(producer.name) is not node:
        return f"{producer.name!r} feeds other layers too"
    return None
