"""The handlers of Keras' own layers (`Producer` for Dense and convolutions, `Depthwise`,
`Separable`, `PassThrough`, `Merge`, `Concat`, `Flatten`, `Reshape`, ...), registered in
`REGISTRY` when this module loads.
"""


import keras
import numpy as np

from tfprune.errors import TfpruneError, UnsupportedModelError
from tfprune.handlers.base import (
    BARRIER,
    CONCAT,
    DEPTHWISE,
    FLATTEN,
    MERGE,
    PASS,
    PRODUCER,
    LayerHandler,
    PrunableWeight,
    kind_of,
    plain_variable,
    spatial_positions,
    weight_index,
)
from tfprune.handlers.registry import REGISTRY
from tfprune.options import SOFTMAX_ACTIVATIONS
from tfprune.pruning import masks

L = keras.layers


class Producer(LayerHandler):
    """A kernel + bias layer: `activation(x (*) kernel + bias)`, fresh output channels.

    Dense, Conv1D/2D/3D and the transposed convolutions are `Producer`s; so is a custom
    Dense- or conv-like layer. Its kernel's `out_axis` indexes its output channels (the
    `units` config key says how many), `in_axis` its input channels; any other kernel axes
    are spatial.

    Args:
        units: String, the config key of the number of output channels; defaults to
            `"filters"` (`"units"` for Dense).
        kernel: String, the kernel's attribute name; defaults to `"kernel"`.
        bias: String, the bias's attribute name (the attribute may be `None`); defaults to
            `"bias"`.
        in_axis: Integer, the kernel's input-channel axis; defaults to `-2`.
        out_axis: Integer, the kernel's output-channel axis; defaults to `-1`.
        fold: Boolean, defaults to `True`: a constant input channel contributes the same
            to every output position, so removing it folds into the bias, when the kernel
            is 1 along every spatial axis or the layer's config says `padding="valid"`.
            `False` for layers where that does not hold (transposed convolutions spread it
            unevenly); shrinking then keeps channels that hold a non-zero constant.
        positions: `"output"` (the default) or `"input"`: MACs are the kernel size times
            the positions (spatial axes) of this shape; `"input"` for transposed convs.
        fusion_kind: See `LayerHandler`; defaults to `None` (fusion leaves it alone). Set it
            only for a layer whose config and weights are those of the Keras layer kind.

    Raises:
        TfpruneError: `positions` is neither `"output"` nor `"input"`.

    Example:

    >>> import tfprune
    >>> tfprune.handlers.Producer("units")
    Producer('units')
    """

    prunable = True

    def __init__(self, units="filters", kernel="kernel", bias="bias", in_axis=-2, out_axis=-1,
                 fold=True, positions="output", fusion_kind=None):
        if positions not in ("output", "input"):
            raise TfpruneError(f"`positions` must be 'output' or 'input'. Received: "
                               f"positions={positions!r}")
        self.units, self.kernel, self.bias = units, kernel, bias
        self.in_axis, self.out_axis = in_axis, out_axis
        self.fold, self.positions, self.fusion_kind = fold, positions, fusion_kind

    def __repr__(self):
        return f"{type(self).__name__}({self.units!r})"

    def _index(self, layer, name):
        """Index of weight `name` in `layer.weights`; raises if the layer has none."""
        index = weight_index(layer, name)
        if index is None:
            raise UnsupportedModelError(
                f"Layer {layer.name!r} ({type(layer).__name__}) has no weight {name!r}: its "
                f"handler does not match it (fix the handler's `kernel=` or register another). "
                f"Received: handler={self!r}")
        return index

    def prunable_weights(self, layer):
        plain_variable(layer, self.kernel)  # refuses LoRA and quantized layers
        variable = layer.weights[self._index(layer, self.kernel)]
        return [PrunableWeight(variable, self.in_axis, self.out_axis)]

    def channels(self, node):
        config = node.layer.get_config()
        if self.units not in config:
            return BARRIER, (f"{kind_of(node)} has no {self.units!r} in its config: its handler "
                             "cannot resize it")
        if config.get("groups", 1) != 1:
            return BARRIER, f"{kind_of(node)} is a grouped convolution"
        return PRODUCER, None

    def channel_weights(self, layer, channels):
        bias = getattr(layer, self.bias, None)
        return [] if bias is None else [bias]

    def _kernel(self, node):
        return node.weights[self._index(node.layer, self.kernel)]

    def dead_units(self, node, threshold):
        """Boolean per output unit: is its kernel slice's L2 norm at most `threshold`?"""
        kernel = self._kernel(node).astype(np.float64)
        return masks.filter_norms(kernel, self.out_axis) <= threshold

    def dead_outputs(self, node, threshold):
        """What dead units output everywhere (`activation(bias)`); NaN for live units."""
        config = node.layer.get_config()
        size = node.output_shape[-1]
        values = np.full(size, np.nan)
        if config.get("activation") in SOFTMAX_ACTIVATIONS:
            return values  # one unit's output depends on the others
        index = weight_index(node.layer, self.bias)
        bias = node.weights[index] if index is not None else np.zeros(size, np.float32)
        activation = keras.activations.get(config.get("activation"))
        out = np.asarray(activation(keras.ops.convert_to_tensor(
            bias.astype(np.float32)[None])))[0]
        dead = self.dead_units(node, threshold)
        values[dead] = out[dead]
        return values

    def _spatial_kernel_shape(self, node):
        kernel = self._kernel(node)
        channel_axes = {self.in_axis % kernel.ndim, self.out_axis % kernel.ndim}
        return [n for axis, n in enumerate(kernel.shape) if axis not in channel_axes]

    def fold_reason(self, node):
        """Why a constant input channel does not fold exactly into the bias, or `None`."""
        config = node.layer.get_config()
        if not self.fold:
            return f"{type(node.layer).__name__} does not fold constant inputs into its bias"
        padding = config.get("padding")
        if padding != "valid" and any(n != 1 for n in self._spatial_kernel_shape(node)):
            return (f"{type(node.layer).__name__} with padding={padding!r} sees zeros at the "
                    "borders")
        if weight_index(node.layer, self.bias) is None and "use_bias" not in config:
            return f"{type(node.layer).__name__} has no bias"
        return None

    def _folded(self, kernel, dropped):
        """What the dropped constants add to each output unit."""
        matrix = np.moveaxis(kernel, (self.in_axis, self.out_axis), (-2, -1))
        return dropped @ matrix.reshape(-1, *matrix.shape[-2:]).sum(axis=0)

    def slice(self, node, keep_in, keep_out, dropped):
        config = node.layer.get_config()
        weights = list(node.weights)
        k, b = self._index(node.layer, self.kernel), weight_index(node.layer, self.bias)
        kernel = weights[k]
        bias = weights[b] if b is not None else np.zeros(len(keep_out), kernel.dtype)
        bias = (bias + self._folded(kernel, dropped)).astype(kernel.dtype)[keep_out]
        kernel = np.compress(keep_in[0], kernel, axis=self.in_axis)
        weights[k] = np.compress(keep_out, kernel, axis=self.out_axis)
        config[self.units] = int(keep_out.sum())
        if b is not None:
            weights[b] = bias
        elif np.any(bias != 0):  # folded constants need a bias
            config["use_bias"] = True
            weights.insert(k + 1, bias)
        return config, weights

    def _kernels(self, layer):
        return [getattr(layer, self.kernel)]

    def macs(self, layer, input_shape, output_shape):
        shape = input_shape if self.positions == "input" else output_shape
        size = sum(int(np.prod(k.shape)) for k in self._kernels(layer))
        return spatial_positions(layer, shape) * size


class Separable(Producer):
    """SeparableConv1D/2D: a depthwise kernel, then a pointwise kernel and bias."""

    def __init__(self):
        super().__init__("filters", kernel="pointwise_kernel", fusion_kind="separable")

    def __repr__(self):
        return "Separable()"

    def prunable_weights(self, layer):
        return [PrunableWeight(layer.depthwise_kernel, None, (-2, -1), follows="input"),
                PrunableWeight(layer.pointwise_kernel, -2, -1)]

    def _spatial_kernel_shape(self, node):
        return node.weights[weight_index(node.layer, "depthwise_kernel")].shape[:-2]

    def slice(self, node, keep_in, keep_out, dropped):
        config = node.layer.get_config()
        weights = list(node.weights)
        d, p = (weight_index(node.layer, n) for n in ("depthwise_kernel", "pointwise_kernel"))
        b = weight_index(node.layer, self.bias)
        depthwise, pointwise = weights[d], weights[p]
        size, multiplier = len(keep_out), depthwise.shape[-1]
        bias = weights[b] if b is not None else np.zeros(size, pointwise.dtype)
        per_channel = depthwise.sum(axis=tuple(range(depthwise.ndim - 2))) * dropped[:, None]
        bias = bias + per_channel.reshape(-1) @ pointwise.reshape(-1, size)
        weights[d] = depthwise[..., keep_in[0], :]
        weights[p] = pointwise[..., np.repeat(keep_in[0], multiplier), :][..., keep_out]
        bias = bias.astype(pointwise.dtype)[keep_out]
        config["filters"] = int(keep_out.sum())
        if b is not None:
            weights[b] = bias
        elif np.any(bias != 0):
            config["use_bias"] = True
            weights.append(bias)
        return config, weights

    def _kernels(self, layer):
        return [layer.depthwise_kernel, layer.pointwise_kernel]


class Depthwise(LayerHandler):
    """DepthwiseConv1D/2D: input channel i makes outputs i*m .. i*m+m-1."""

    prunable = True
    fusion_kind = "depthwise"
    in_axis, out_axis = None, (-2, -1)

    def prunable_weights(self, layer):
        return [PrunableWeight(layer.kernel, self.in_axis, self.out_axis)]

    def channels(self, node):
        return DEPTHWISE, None

    def channel_weights(self, layer, channels):
        return [] if layer.bias is None else [layer.bias]

    def slice(self, node, keep_in, keep_out, dropped):
        config = node.layer.get_config()
        if not np.array_equal(np.repeat(keep_in[0], config["depth_multiplier"]), keep_out):
            raise TfpruneError(
                f"Shrinking {node.name!r}: its output channels must follow its input channels "
                "(a tfprune bug: please report it with the model).")
        weights = list(node.weights)
        k = weight_index(node.layer, "kernel")
        weights[k] = weights[k][..., keep_in[0], :]
        b = weight_index(node.layer, "bias")
        if b is not None:
            weights[b] = weights[b][keep_out]
        return config, weights

    def macs(self, layer, input_shape, output_shape):
        return spatial_positions(layer, output_shape) * int(np.prod(layer.kernel.shape))


class PassThrough(LayerHandler):
    """Output channel i depends on input channel i alone, at inference.

    Args:
        check: Optional callable `check(node)` returning why this node is a barrier after
            all (e.g. a BatchNorm over another axis), or `None`.
        identity: Boolean, defaults to `False`: the layer is the identity at inference
            (dropout, noise), so fusion removes it.
    """

    def __init__(self, check=None, identity=False):
        self.check, self.identity = check, identity

    def channels(self, node):
        if node.output_shape[-1] != node.input_shapes[0][-1] or len(node.inputs) != 1:
            return BARRIER, f"{kind_of(node)} changes the channel count"
        reason = self.check(node) if self.check else None
        return (BARRIER, reason) if reason else (PASS, None)

    def is_identity(self, config):
        return self.identity


class Identity(PassThrough):
    """A pass-through that is the identity at inference (dropout, noise, regularisers)."""

    def __init__(self):
        super().__init__(identity=True)


def _last_axis(axis, rank):
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    return isinstance(axis, int) and axis % rank == rank - 1


def _batchnorm_check(node):
    axis = node.layer.get_config()["axis"]
    if not _last_axis(axis, len(node.output_shape)):
        return f"{kind_of(node)} normalizes axis {axis}"
    return None


def _rescaling_check(node):
    config = node.layer.get_config()
    if np.ndim(config["scale"]) or np.ndim(config["offset"]):
        return f"{kind_of(node)} has a per-channel scale"
    return None


class _Activation(PassThrough):
    """`keras.layers.Activation`: element-wise unless softmax; `"linear"` is the identity."""

    def __init__(self):
        super().__init__(check=self._check)

    @staticmethod
    def _check(node):
        name = node.layer.get_config()["activation"]
        return f"{kind_of(node)} ({name}) mixes channels" if name in SOFTMAX_ACTIVATIONS else None

    def is_identity(self, config):
        return config.get("activation") == "linear"

    def as_activation(self, config):
        return config["activation"], None


class _ReLU(PassThrough):
    """`keras.layers.ReLU`: `activation="relu"` or `"relu6"` when it has no slope or threshold."""

    def as_activation(self, config):
        if config.get("negative_slope") or config.get("threshold"):
            return None, "a ReLU with a slope or threshold has no activation= equivalent"
        if config.get("max_value") is None:
            return "relu", None
        if float(config["max_value"]) == 6.0:
            return "relu6", None
        return None, f"ReLU(max_value={config['max_value']}) has no activation= equivalent"


class _Softmax(LayerHandler):
    """`keras.layers.Softmax`: mixes channels; over the last axis it is `activation="softmax"`."""

    def channels(self, node):
        return BARRIER, f"{kind_of(node)} mixes channels"

    def as_activation(self, config):
        if config.get("axis", -1) in (-1,):
            return "softmax", None
        return None, "softmax over a non-last axis"


class Merge(LayerHandler):
    """Add, Subtract, Multiply, ...: every input's channel i is the output's channel i."""

    def channels(self, node):
        shapes = node.input_shapes
        if len({s[-1] for s in shapes}) != 1 or len({len(s) for s in shapes}) != 1:
            return BARRIER, f"{kind_of(node)} broadcasts its inputs"
        return MERGE, None


class Concat(LayerHandler):
    """Concatenate on the channel axis: each input's channels, shifted."""

    def channels(self, node):
        axis = node.layer.get_config()["axis"]
        if axis not in (-1, len(node.output_shape) - 1):
            return BARRIER, f"{kind_of(node)} joins along axis {axis}"
        return CONCAT, None


class Flatten(LayerHandler):
    """Flatten (channels last): output p*C+i is input channel i at position p."""

    def channels(self, node):
        return FLATTEN, None


class Reshape(LayerHandler):
    """Reshape: a flatten when it outputs one axis, a pass-through when it keeps channels."""

    def channels(self, node):
        if len(node.output_shape) == 2:
            return FLATTEN, None
        if node.output_shape[-1] == node.input_shapes[0][-1]:
            return PASS, None
        return BARRIER, f"{kind_of(node)} moves channels to other axes"

    def slice(self, node, keep_in, keep_out, dropped):
        config, weights = super().slice(node, keep_in, keep_out, dropped)
        target = list(config["target_shape"])
        target[-1] = int(keep_out.sum())
        config["target_shape"] = tuple(target)
        return config, weights


def _register_defaults():
    dense = Producer("units", fusion_kind="dense")
    REGISTRY.register(L.Dense, dense)
    for cls in (L.Conv1D, L.Conv2D, L.Conv3D):
        REGISTRY.register(cls, Producer("filters", fusion_kind="conv"))
    # Transposed conv kernels are (*kernel_size, out, in) and slide over the input.
    for cls in (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose):
        REGISTRY.register(cls, Producer("filters", in_axis=-1, out_axis=-2, fold=False,
                                        positions="input", fusion_kind="transpose"))
    for cls in (L.DepthwiseConv1D, L.DepthwiseConv2D):
        REGISTRY.register(cls, Depthwise())
    for cls in (L.SeparableConv1D, L.SeparableConv2D):
        REGISTRY.register(cls, Separable())
    # Embedding rows are tokens: N:M runs along a row, "filter" removes embedding columns.
    REGISTRY.register(L.Embedding, LayerHandler().with_prunable_weights(
        lambda layer: [PrunableWeight(plain_variable(layer, "embeddings"), -1, -1)]))

    for cls in (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
                L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization,
                L.Identity):
        REGISTRY.register(cls, Identity())
    for cls in (L.LeakyReLU, L.ELU, L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
                L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
                L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
                L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
                L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D,
                L.Cropping3D, L.UpSampling1D, L.UpSampling2D, L.UpSampling3D):
        REGISTRY.register(cls, PassThrough())
    REGISTRY.register(L.BatchNormalization, PassThrough(check=_batchnorm_check))
    REGISTRY.register(L.Rescaling, PassThrough(check=_rescaling_check))
    REGISTRY.register(L.Activation, _Activation())
    REGISTRY.register(L.ReLU, _ReLU())
    REGISTRY.register(L.Softmax, _Softmax())
    for cls in (L.Add, L.Subtract, L.Multiply, L.Maximum, L.Minimum, L.Average):
        REGISTRY.register(cls, Merge())
    REGISTRY.register(L.Concatenate, Concat())
    REGISTRY.register(L.Flatten, Flatten())
    REGISTRY.register(L.Reshape, Reshape())


_register_defaults()
