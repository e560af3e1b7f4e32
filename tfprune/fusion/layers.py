"""What the fusion rules need to know about tensor layers: kinds, axes and weight surgery.

A layer's kind (`"dense"`, `"conv"`, `"depthwise"`, `"separable"`, `"transpose"`) and its
kernel's output axes come from its handler (`tfprune.handlers`), looked up for its exact
type: a subclass may override `call`, so it is left alone. Weight math runs in float64 and
is cast back to the layer's dtype at the end.
"""

import numpy as np

from tfprune.handlers import REGISTRY
from tfprune.pruning import masks

# Spatial layers whose first weight is a (*kernel_size, in, out)-shaped sliding kernel.
SLIDING = ("conv", "depthwise", "separable")


def handler(node):
    """The handler fusion reads for `node`: the one registered for its exact type."""
    return REGISTRY.lookup(node.layer, exact=True)


def kind(node):
    """The node's tensor-layer kind ("dense", "conv", ...) or `None`."""
    return handler(node).fusion_kind


def units_key(node):
    """The config key of the node's output channel count ("units", "filters")."""
    return handler(node).units


def plain_tensor_layer(node):
    """Why a tensor layer cannot be rewritten (a string), or `None` if it can."""
    k = kind(node)
    if k is None:
        return f"{type(node.layer).__name__} is not a layer tfprune merges into"
    cfg = node.config
    if cfg.get("lora_rank"):
        return f"{node.name!r} has LoRA weights"
    expected = (2 if k == "separable" else 1) + bool(cfg.get("use_bias", True))
    if len(node.weights) != expected:
        return f"{node.name!r} has {len(node.weights)} weights, expected {expected} (quantized?)"
    return None


def is_linear(node):
    return node.config.get("activation") == "linear"


def channels_last(node):
    return node.config.get("data_format", "channels_last") != "channels_first"


def spatial(node, shape):
    """The spatial dimensions of `shape` under `node`'s data format."""
    return shape[1:-1] if channels_last(node) else shape[2:]


def channel_axis(node, shape=None):
    """Positive index of the channel axis in `shape` (the node's output by default)."""
    rank = len(shape or node.output_shape)
    return rank - 1 if kind(node) == "dense" or channels_last(node) else 1


def ones_kernel(node):
    return all(k == 1 for k in node.config.get("kernel_size", (1,)))


def dtype_of(node):
    return node.weights[0].dtype if node.weights else np.float32


def bias(node, size):
    """The node's bias in float64 (zeros if it has none)."""
    if node.config.get("use_bias", True):
        return node.weights[-1].astype(np.float64)
    return np.zeros(size)


def kernels(node):
    """The node's kernels (without bias) in float64."""
    n = 2 if kind(node) == "separable" else 1
    return [w.astype(np.float64) for w in node.weights[:n]]


def out_channels(node):
    k = kind(node)
    cfg = node.config
    if k == "dense":
        return cfg["units"]
    if k == "depthwise":
        return node.weights[0].shape[-2] * node.weights[0].shape[-1]
    return cfg["filters"]


def rebuild(graph, name, weights, output_shape=None, **changes):
    """Replaces node `name` by a layer of the same type with config `changes` and `weights`."""
    node = graph.nodes[name]
    dtype = dtype_of(node)
    cfg = dict(node.config, **changes)
    layer = type(node.layer).from_config(cfg)
    graph.replace(name, layer, [np.asarray(w, dtype=dtype) for w in weights], output_shape)


def scale_outputs(node, s, t):
    """Weights computing `s * layer(x) + t` per output channel (the BatchNorm-after fold)."""
    ks = kernels(node)
    # The last kernel makes the output channels, along the handler's output axes.
    ks[-1] = ks[-1] * masks.along_axes(s, ks[-1].shape, handler(node).out_axis)
    return [*ks, bias(node, len(s)) * s + t]


def absorb_inputs(node, s, t):
    """Weights computing `layer(s * x + t)` per input channel (the affine-before fold).

    Exact only where no zero padding is added to the input: callers check padding.
    """
    k = kind(node)
    ks = kernels(node)
    b = bias(node, out_channels(node))
    if k == "dense":
        return [ks[0] * s[:, None], b + t @ ks[0]]
    if k == "conv":
        kernel = ks[0]
        groups = node.config.get("groups", 1)
        per_in, out = kernel.shape[-2], kernel.shape[-1]
        # Input channel read by kernel[..., i, o]: group of o, offset i.
        index = (np.arange(out) // (out // groups))[None, :] * per_in + np.arange(per_in)[:, None]
        spatial = tuple(range(kernel.ndim - 2))
        return [kernel * s[index], b + (kernel * t[index]).sum(axis=spatial + (kernel.ndim - 2,))]
    if k in ("depthwise", "separable"):
        dw = ks[0]
        spatial = tuple(range(dw.ndim - 2))
        shift = (dw * t[:, None]).sum(axis=spatial).reshape(-1)  # per depthwise output
        ks[0] = dw * s[:, None]
        if k == "depthwise":
            return [ks[0], b + shift]
        return [ks[0], ks[1], b + shift @ ks[1].reshape(len(shift), -1)]
    raise ValueError(f"Cannot absorb inputs into {k}")


def conv_size(n, k, stride, padding):
    """Output length of a convolution or pooling along one axis."""
    if n is None:
        return None
    if padding == "same":
        return -(-n // stride)
    return (n - k) // stride + 1
