"""Parallel branches reading one tensor, joined by Add or Concatenate: one layer.

As in DeepRebirth's branch merging and RepVGG: linear convolutions (or Dense layers) that
read the same tensor with the same stride and padding, joined by Add, are one layer whose
kernel is the sum of theirs (smaller odd kernels zero-padded to the centre, 'same'
padding); an identity branch adds a centred identity kernel. Joined by Concatenate on the
channel axis, they are one layer with the filters stacked (activations may be anything).
"""

import keras
import numpy as np

from tfprune.fusion import layers
from tfprune.fusion.step import Step

L = keras.layers


def merge(graph, node, options):
    """Merges the branches of an Add or a channel Concatenate into the first branch."""
    is_add = type(node.layer) is L.Add
    if not is_add and type(node.layer) is not L.Concatenate:
        return None
    names = node.inputs
    if len(set(names)) != len(names):
        return "it reads the same tensor twice"
    source = _identity_branch(graph, names) if is_add else None
    identity = source is not None
    branches = [graph.nodes[n] for n in names if n != source]
    reason = _why_not(graph, node, branches, is_add)
    if reason:
        return reason
    if identity:
        reason = _identity_ok(graph, branches[0], source)
        if reason:
            return reason
    kernels, biases, size = _aligned(branches)
    if not is_add and sum(k.size for k in kernels) > sum(b.weights[0].size for b in branches):
        return "stacking kernels of different sizes would add MACs"
    first = branches[0]
    if is_add:
        kernel = sum(kernels)
        if identity:
            kernel = kernel + _identity_kernel(kernel.shape)
        weights, changes = [kernel, sum(biases)], {}
    else:
        weights = [np.concatenate(kernels, axis=-1), np.concatenate(biases)]
        changes = {layers.units_key(first): weights[0].shape[-1]}
    if layers.kind(first) != "dense":
        changes["kernel_size"] = size
    layers.rebuild(graph, first.name, weights, node.output_shape, use_bias=True, **changes)
    for other in branches[1:]:
        del graph.nodes[other.name]
    node.inputs = [first.name]
    graph.remove(node.name)
    what = "filters stacked" if not is_add else "kernels summed" + (
        f", identity branch from {source!r}" if identity else "")
    return Step((*[b.name for b in branches], node.name), first.name, "branches", what)


def _identity_branch(graph, names):
    """The input of an Add that every other input reads (a residual shortcut), or `None`."""
    for name in names:
        others = [graph.nodes[n] for n in names if n != name]
        if all(o.inputs and o.inputs[0] == name and len(o.inputs) == 1 for o in others):
            return name
    return None


def _why_not(graph, node, branches, is_add):
    if not branches or any(b.is_input for b in branches):
        return "its inputs are not all Dense or Conv layers"
    if len(branches) < 1 + (not is_add):
        return "fewer than two layers to merge"
    kinds = {layers.kind(b) for b in branches}
    if len(kinds) != 1 or kinds & {None, "depthwise", "separable", "transpose"}:
        return "its inputs are not all plain Dense or Conv layers"
    if len({b.inputs[0] for b in branches}) != 1:
        return "its branches read different tensors"
    for b in branches:
        reason = layers.plain_tensor_layer(b)
        if reason:
            return reason
        if graph.only_consumer(b.name) is not node:
            return f"{b.name!r} feeds other layers too"
    first = branches[0]
    if is_add and any(not layers.is_linear(b) for b in branches):
        return "a branch has an activation before the Add"
    if not is_add:
        if len({str(b.config["activation"]) for b in branches}) != 1:
            return "its branches have different activations"
        axis = node.config["axis"] % len(node.output_shape)
        if axis != layers.channel_axis(first):
            return "it concatenates along a non-channel axis"
    if kinds == {"conv"}:
        return _convs_why_not(branches)
    return None


def _convs_why_not(convs):
    keys = ("strides", "padding", "data_format", "dilation_rate", "groups")
    cfgs = [c.config for c in convs]
    if any(str(c.get(k)) != str(cfgs[0].get(k)) for c in cfgs for k in keys):
        return "its branches differ in stride, padding, dilation, groups or data format"
    if cfgs[0]["groups"] != 1 or any(d != 1 for d in cfgs[0]["dilation_rate"]):
        return "grouped or dilated branches do not merge"
    sizes = {tuple(c["kernel_size"]) for c in cfgs}
    if len(sizes) == 1:
        return None
    if cfgs[0]["padding"] != "same" or any(s != 1 for s in cfgs[0]["strides"]):
        return "kernels of different sizes merge only with 'same' padding and stride 1"
    if any(k % 2 == 0 for s in sizes for k in s):
        return "kernels of different sizes must be odd to share a centre"
    return None


def _identity_ok(graph, conv, source):
    if layers.kind(conv) != "conv":
        return "an identity branch merges only into convolutions"
    cfg = conv.config
    shape = graph.nodes[source].output_shape
    in_ch = shape[layers.channel_axis(conv, shape)]
    if in_ch != cfg["filters"] or any(s != 1 for s in cfg["strides"]):
        return "the identity branch changes channels or stride"
    if any(k % 2 == 0 for k in cfg["kernel_size"]):
        return "an identity branch needs odd kernels"
    if cfg["padding"] != "same" and not layers.ones_kernel(conv):
        return "an identity branch needs 'same' padding"
    return None


def _aligned(convs):
    """Kernels zero-padded to the largest size (centred), biases, and that size."""
    kernels = [layers.kernels(c)[0] for c in convs]
    biases = [layers.bias(c, k.shape[-1]) for c, k in zip(convs, kernels, strict=True)]
    d = kernels[0].ndim - 2
    size = tuple(max(k.shape[i] for k in kernels) for i in range(d))
    padded = []
    for k in kernels:
        pad = [((s - n) // 2, (s - n) // 2) for s, n in zip(size, k.shape[:d], strict=True)]
        padded.append(np.pad(k, pad + [(0, 0), (0, 0)]))
    return padded, biases, size


def _identity_kernel(shape):
    kernel = np.zeros(shape)
    centre = tuple(s // 2 for s in shape[:-2])
    kernel[centre] = np.eye(shape[-2], shape[-1])
    return kernel
