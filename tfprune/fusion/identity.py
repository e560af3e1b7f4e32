"""Layers that are the identity at inference (dropout, noise, regularisers): removed.

Which layers are, their handlers say (`tfprune.handlers.LayerHandler.is_identity`).
"""

from tfprune.fusion import layers
from tfprune.fusion.step import Step


def remove(graph, node, options):
    """Removes a dropout/noise/regulariser layer, or an `Activation("linear")`."""
    if not layers.handler(node).is_identity(node.config):
        return None
    source = graph.nodes[node.inputs[0]]
    if source.is_input and graph.is_output(node.name):
        return "removing it would make an input a model output"
    graph.remove(node.name)
    return Step((node.name,), rule="identity", detail="identity at inference")
