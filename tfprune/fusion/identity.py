"""Layers that are the identity at inference (dropout, noise, regularisers): removed."""

import keras

from tfprune.fusion.step import Step

L = keras.layers
IDENTITY = (
    L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
    L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization, L.Identity,
)


def remove(graph, node, options):
    """Removes a dropout/noise/regulariser layer, or an `Activation("linear")`."""
    linear = type(node.layer) is L.Activation and node.config.get("activation") == "linear"
    if type(node.layer) not in IDENTITY and not linear:
        return None
    source = graph.nodes[node.inputs[0]]
    if source.is_input and graph.is_output(node.name):
        return "removing it would make an input a model output"
    graph.remove(node.name)
    return Step((node.name,), rule="identity", detail="identity at inference")
