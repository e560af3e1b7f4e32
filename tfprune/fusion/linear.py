"""Linear chains: Dense -> Dense, and conv -> 1x1 conv, with no activation between.

Two linear maps compose into one: `x @ A @ B`. The chain collapses only when the single
layer has no more parameters and no more MACs than the two (a 512 -> 16 -> 512 bottleneck
stays a bottleneck).
"""

import numpy as np

from tfprune.fusion import layers
from tfprune.fusion.step import Step


def collapse(graph, node, options):
    """Collapses `producer -> node` into one layer named like `node`."""
    k = layers.kind(node)
    if k not in ("dense", "conv"):
        return None
    producer = graph.nodes[node.inputs[0]]
    if layers.kind(producer) != k:
        return None
    reason = _why_not(graph, node, producer)
    if reason is not None:
        return reason or None
    first, second = layers.kernels(producer)[0], layers.kernels(node)[0]
    mid, out = second.shape[-2], second.shape[-1]
    a = first.shape[:-1]  # (*kernel, in) of the first layer
    cost_two = np.prod(a) * mid + mid * out
    cost_one = np.prod(a) * out
    if cost_one > cost_two:
        return f"collapsing with {producer.name!r} would add parameters and MACs"
    w2 = second.reshape(mid, out)
    kernel = first @ w2
    b = layers.bias(producer, mid) @ w2 + layers.bias(node, out)
    cfg = dict(producer.config, name=node.name, activation=node.config["activation"],
               use_bias=True)
    cfg[layers.units_key(node)] = out
    shape = node.output_shape
    graph.remove(producer.name)
    node.layer = type(producer.layer).from_config(cfg)
    layers.rebuild(graph, node.name, [kernel, b], shape)
    node.input_shapes = list(producer.input_shapes)
    detail = "linear chain" if k == "dense" else "linear chain, 1x1 second conv"
    return Step((producer.name, node.name), node.name, "linear", detail)


def _why_not(graph, node, producer):
    """A reason, `""` if this is not a chain at all, or `None` if it collapses."""
    for n in (producer, node):
        reason = layers.plain_tensor_layer(n)
        if reason:
            return reason
    if not layers.is_linear(producer):
        return ""  # an activation between: not a chain at all
    if graph.only_consumer(producer.name) is not node:
        return f"{producer.name!r} feeds other layers too"
    if layers.kind(node) == "conv":
        cfg, pcfg = node.config, producer.config
        if not layers.ones_kernel(node) or any(s != 1 for s in cfg["strides"]):
            return ""  # only a 1x1, stride-1 second conv composes
        if cfg.get("groups", 1) != 1 or pcfg.get("groups", 1) != 1:
            return "grouped convolutions do not collapse"
        if cfg["data_format"] != pcfg["data_format"]:
            return "the convolutions use different data formats"
    return None
