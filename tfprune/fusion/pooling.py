"""A convolution followed by pooling: one strided convolution.

Exact: a linear conv (no activation, valid padding) followed by AveragePooling (pool p,
stride q, valid) equals one conv with kernel `k + (p - 1) * c` and stride `c * q` (`c` the
conv's stride), whose kernel is the conv's kernel averaged over the p**d pool offsets.
A 'same' conv of stride 1 merges too when the pool tiles its output (p == q, size divisible
by p): the merged conv's own 'same' padding then adds the same k-1 zeros at the same side.

Approximate (DeepRebirth's streamline merging; retrain after): a conv, with or without an
activation, followed by MaxPooling, or by AveragePooling after an activation. The merged
conv starts either from the exact average-pool kernel ("grown", kernel k + p - 1) or from
the conv's own kernel with the larger stride ("original", kernel k). A max pool after a
linear conv leaves the merged conv an activation (`pool_activation`, ReLU by default) in
its place: max pooling is a nonlinearity, and without one the merged network is shallower.
"""

import itertools

import keras
import numpy as np

from tfprune.fusion import layers
from tfprune.fusion.step import Step

L = keras.layers
AVERAGE = (L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D)
MAX = (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D)


def grow(kernel, pool, stride):
    """The conv kernel averaged over the pool's offsets (spatial axes first)."""
    d = len(pool)
    k = kernel.shape[:d]
    size = tuple(ki + (p - 1) * s for ki, p, s in zip(k, pool, stride, strict=True))
    grown = np.zeros(size + kernel.shape[d:])
    for offset in itertools.product(*(range(p) for p in pool)):
        window = zip(offset, stride, k, strict=True)
        grown[tuple(slice(o * s, o * s + ki) for o, s, ki in window)] += kernel
    return grown / np.prod(pool)


def merge_average(graph, node, options):
    """Exact: linear conv -> AveragePooling becomes one strided conv."""
    if type(node.layer) not in AVERAGE:
        return None
    producer = graph.nodes[node.inputs[0]]
    if layers.kind(producer) in layers.SLIDING and not layers.is_linear(producer):
        if options.approximate:
            return None  # merge_approximate decides
        return "the conv before it has an activation: merging is approximate (approximate=True)"
    return _merge(graph, node, producer, "grown", approximate=False)


def merge_approximate(graph, node, options):
    """Approximate: conv (+activation) -> MaxPooling / AveragePooling, with approximate=True."""
    is_max = type(node.layer) in MAX
    if not is_max and type(node.layer) not in AVERAGE:
        return None
    if not options.approximate:
        if is_max:
            return "merging a max pool into the conv is approximate: needs approximate=True"
        return None
    producer = graph.nodes[node.inputs[0]]
    # A max pool after a linear conv is that conv's only nonlinearity: the strided conv
    # takes an activation in its place, or the layers up to the next one collapse into
    # one linear map (LeNet-5 then plateaus near 98% instead of 99%).
    activation = options.pool_activation if is_max and layers.kind(producer) in \
        layers.SLIDING and layers.is_linear(producer) else None
    return _merge(graph, node, producer, options.pool_kernel, True, activation)


def _merge(graph, node, producer, init, approximate, activation=None):
    reason = _why_not(graph, node, producer)
    if reason:
        return reason
    cfg, pcfg = node.config, producer.config
    pool, pool_stride = tuple(cfg["pool_size"]), tuple(cfg["strides"] or cfg["pool_size"])
    k, c = tuple(pcfg["kernel_size"]), tuple(pcfg["strides"])
    ks = layers.kernels(producer)
    if init == "grown":
        ks[0] = grow(ks[0], pool, c)
    kernel_size = ks[0].shape[: len(k)]
    strides = tuple(ci * qi for ci, qi in zip(c, pool_stride, strict=True))
    spatial = layers.spatial(producer, producer.input_shapes[0])
    sizes = zip(spatial, kernel_size, strides, strict=True)
    out = [layers.conv_size(n, ki, s, pcfg["padding"]) for n, ki, s in sizes]
    if out != list(layers.spatial(producer, node.output_shape)):
        return f"a kernel-{init} strided conv would give a different output size"
    new_cost = np.prod(kernel_size) * np.prod(out)
    old_cost = np.prod(k) * np.prod(layers.spatial(producer, producer.output_shape))
    if new_cost > old_cost:
        return "the merged conv would need more MACs than conv + pooling"
    bias = [layers.bias(producer, layers.out_channels(producer))] if pcfg["use_bias"] else []
    changes = {"activation": activation} if activation else {}
    layers.rebuild(graph, producer.name, [*ks, *bias], node.output_shape,
                   kernel_size=kernel_size, strides=strides, **changes)
    graph.remove(node.name)
    detail = f"{_fmt(k)} s{_fmt(c, True)} -> {_fmt(kernel_size)} s{_fmt(strides, True)}"
    if activation:
        detail += f" + {activation}"
    rule = "max_pool" if type(node.layer) in MAX else "average_pool"
    return Step((producer.name, node.name), producer.name, rule, detail, approximate)


def _why_not(graph, node, producer):
    if layers.kind(producer) not in layers.SLIDING:
        return f"{producer.name!r} before it is not a convolution"
    reason = layers.plain_tensor_layer(producer)
    if reason:
        return reason
    if graph.only_consumer(producer.name) is not node:
        return f"{producer.name!r} feeds other layers too"
    cfg, pcfg = node.config, producer.config
    if cfg["padding"] != "valid":
        return "only valid pooling merges"
    if pcfg["padding"] == "same":
        # 'same' on the merged conv pads k-1 in total, as the conv did, only when the pool
        # tiles the input exactly and the conv has stride 1.
        spatial = layers.spatial(producer, producer.input_shapes[0])
        pool, stride = tuple(cfg["pool_size"]), tuple(cfg["strides"] or cfg["pool_size"])
        if any(s != 1 for s in pcfg["strides"]) or pool != stride or any(
                n is None or n % p for n, p in zip(spatial, pool, strict=True)):
            return "a 'same' conv merges only at stride 1, with a pool that tiles its output"
    elif pcfg["padding"] != "valid":
        return f"{producer.name!r} uses padding={pcfg['padding']!r}"
    if any(d != 1 for d in pcfg.get("dilation_rate", (1,))):
        return f"{producer.name!r} is dilated"
    if cfg["data_format"] != pcfg["data_format"]:
        return "the conv and the pooling use different data formats"
    if any(n is None for n in layers.spatial(producer, producer.input_shapes[0])):
        return "the input size is unknown"
    return None


def _fmt(values, short=False):
    """"5x5" for a kernel, "2" for equal strides."""
    values = tuple(values)
    if short and all(v == values[0] for v in values):
        return str(values[0])
    return "x".join(str(v) for v in values)
