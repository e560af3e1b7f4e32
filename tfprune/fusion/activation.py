"""A separate activation layer after a linear tensor layer becomes that layer's activation."""

import keras

from tfprune.fusion import layers
from tfprune.fusion.step import Step

L = keras.layers


def activation_name(node):
    """The `activation=` string equal to this layer, a reason string, or `None`."""
    cfg = node.config
    t = type(node.layer)
    if t is L.Activation:
        return cfg["activation"]
    if t is L.ReLU:
        if cfg.get("negative_slope") or cfg.get("threshold"):
            return "a ReLU with a slope or threshold has no activation= equivalent"
        if cfg.get("max_value") is None:
            return "relu"
        if float(cfg["max_value"]) == 6.0:
            return "relu6"
        return f"ReLU(max_value={cfg['max_value']}) has no activation= equivalent"
    if t is L.Softmax:
        return "softmax" if cfg.get("axis", -1) in (-1,) else "softmax over a non-last axis"
    return None


def fold(graph, node, options):
    """Folds Activation / ReLU / Softmax into the linear tensor layer before it."""
    name = activation_name(node)
    if name is None:
        return None
    producer = graph.nodes[node.inputs[0]]
    reason = _why_not(graph, node, producer, name)
    if reason:
        return reason
    layers.rebuild(graph, producer.name, producer.weights, activation=name)
    graph.remove(node.name)
    shown = name if isinstance(name, str) else type(node.layer).__name__
    return Step((producer.name, node.name), producer.name, "activation", f"activation {shown}")


def _why_not(graph, node, producer, name):
    if isinstance(name, str) and " " in name:
        return name  # a reason from activation_name
    if layers.kind(producer) is None:
        return f"{producer.name!r} before it is not a dense or conv layer"
    if not layers.is_linear(producer):
        return f"{producer.name!r} already has an activation"
    if graph.only_consumer(producer.name) is not node:
        return f"{producer.name!r} feeds other layers too"
    return None
