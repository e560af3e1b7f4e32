"""The graph walker: applies the rules until none matches, and says why the rest stay.

Every rule is a function `rule(graph, node, options)` looking at one node (the layer it
would merge away). It returns a `Step` after rewriting the graph, a string saying why it
does not apply to a node of the kind it handles, or `None` if the node is not its kind.
Rules check everything before they edit, so a rule that returns a reason changed nothing.
"""

import dataclasses

from tfprune.fusion import (
    activation,
    affine,
    batchnorm,
    branches,
    constant,
    identity,
    layers,
    linear,
    padding,
    pooling,
)
from tfprune.fusion.step import Step

# Tried in this order on each node; passes repeat until one merges nothing.
RULES = (
    identity.remove,
    activation.fold,
    batchnorm.fold_after,
    constant.fold_after,
    affine.fold_before,
    linear.collapse,
    padding.fold,
    branches.merge,
    pooling.merge_average,
    pooling.merge_approximate,
)


@dataclasses.dataclass(frozen=True)
class Options:
    approximate: bool = False
    pool_kernel: str = "grown"
    pool_activation: str = "relu"


def walk(graph, options):
    """Rewrites `graph` in place; returns the steps made, then the layers left alone.

    Models with masks (Masking, `mask_zero`) never get here: `LayerGraph` refuses the
    operations Keras adds to compute masks, so they are not rewritten at all.
    """
    steps = []
    while True:
        made, reasons = _one_pass(graph, options)
        if not made:
            break
        steps.extend(made)
    for node in graph.layers():
        if layers.kind(node) is None:
            why = reasons.get(node.name) or [f"no rule merges {type(node.layer).__name__}"]
            reason = "; ".join(dict.fromkeys(why))
            steps.append(Step((node.name,), rule="kept", detail=reason))
    return steps


def _one_pass(graph, options):
    """Tries every rule on every node once; the reasons are complete when nothing merged."""
    made, reasons = [], {}
    for name in list(graph.nodes):
        node = graph.nodes.get(name)
        if node is None or node.is_input:
            continue  # merged away earlier in this pass
        for rule in RULES:
            result = rule(graph, node, options)
            if isinstance(result, Step):
                made.append(result)
                break
            if isinstance(result, str):
                reasons.setdefault(node.name, []).append(result)
    return made, reasons
