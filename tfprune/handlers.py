"""One handler per layer type: what tfprune knows about a layer type, in one table.

A `LayerHandler` says, for its layer type:

- what pruning masks: its `PrunableWeight`s, with their input- and output-channel axes;
- how channels pass through it (`channels`): it produces fresh channels, passes input
  channel i to output channel i, merges same-sized tensors channel by channel, is a
  depthwise layer, concatenates, flattens, or is a barrier (and why);
- which weights follow its output channels (`channel_weights`: a bias, BatchNorm's
  scale, offset and statistics), how to slice it when channels go (`slice`), folding the
  constants that removed input channels held into its bias where that is exact
  (`fold_reason` says when it is not);
- which output units are dead (`dead_units`: kernel norm at most a threshold) and the
  constant they output (`dead_outputs`);
- its multiply-accumulates for one example (`macs`);
- what fusion may assume of it: the Keras weight layout it has (`fusion_kind`: `"dense"`,
  `"conv"`, `"depthwise"`, `"separable"`, `"transpose"` or `None`), whether it is the
  identity at inference (`is_identity`), and the `activation=` it equals
  (`as_activation`).

`REGISTRY`, a `HandlerRegistry`, maps layer classes to handlers. Pruning
(`tfprune.pruning.wrapper`), the channel analysis (`tfprune.graph`), shrinking
(`tfprune.shrinking`), fusion (`tfprune.fusion`) and counting (`tfprune.bench.counts`) all
read it, so `register_layer` teaches every stage a custom layer at once. The generic
handlers (`Producer` for a kernel + bias layer, `PassThrough`, `Identity`) make that one
line for common custom layers.

Lookups follow the MRO: a subclass of `Conv2D` is pruned, shrunk and counted as a
`Conv2D` (shrinking checks its result numerically). Fusion is stricter: it rewrites the
weights and config of the exact types registered (`REGISTRY.lookup(layer, exact=True)`),
because a subclass may override `call`.

Example: a custom per-channel layer, registered once, lets shrinking see through it.

>>> import keras
>>> import numpy as np
>>> import tfprune
>>> class Scale(keras.layers.Layer):  # y = x * w, one w per channel
...     def build(self, input_shape):
...         self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")
...     def call(self, x):
...         return x * self.w
>>> tfprune.handlers.register_layer(Scale, tfprune.handlers.PassThrough())
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"),
...                           Scale(name="scale"), keras.layers.Dense(2, name="out")],
...                          name="demo")
>>> _ = model.get_layer("h").kernel.assign(np.ones((4, 3)) * [1.0, 0.0, 1.0])
>>> print(tfprune.shrink_plan(model))
Shrink plan for 'demo' (threshold=0.0):
  h (Dense): 3 -> 2 units, removes 1
  out (Dense): 2 -> 2 units
  channels follow in: scale 3->2
"""

import copy
import dataclasses

import keras
import numpy as np

from tfprune import compat
from tfprune.errors import TfpruneError, UnsupportedModelError
from tfprune.options import SOFTMAX_ACTIVATIONS
from tfprune.pruning import masks

L = keras.layers

# How channels pass through a layer (the rules `tfprune.graph.ChannelGroups` joins by).
PRODUCER = "producer"  # fresh output channels from all input channels
PASS = "pass"  # input channel i -> output channel i
MERGE = "merge"  # every input's channel i -> output channel i (Add, Multiply, ...)
DEPTHWISE = "depthwise"  # input channel i -> outputs i*m .. i*m+m-1
CONCAT = "concat"  # each input's channels, shifted by the channels before it
FLATTEN = "flatten"  # input channel i -> outputs p*C+i
BARRIER = "barrier"  # unknown: channels kept on both sides
RULES = (PRODUCER, PASS, MERGE, DEPTHWISE, CONCAT, FLATTEN, BARRIER)


@dataclasses.dataclass(frozen=True)
class PrunableWeight:
    """A weight to prune, and where its channels are.

    Attributes:
        variable: The `keras.Variable`.
        in_axis: The input-channel axis (N:M groups run along it), or `None` when each
            filter sees one input channel (depthwise kernels).
        out_axis: The output-channel axis, or a tuple of axes whose product is the output
            channels; `"filter"` granularity ranks and zeroes along it.
        follows: `"output"` (the default): the `out_axis` channels are the layer's output
            channels. `"input"`: they are its input channels, each repeated
            `depth_multiplier` times (a separable conv's depthwise kernel), so under
            `"filter"` granularity they go with the input channels' group.
    """

    variable: object
    in_axis: object = -2
    out_axis: object = -1
    follows: str = "output"


def as_prunable(item):
    """`item` as a `PrunableWeight` (a bare variable: input axis -2, output axis -1)."""
    if isinstance(item, PrunableWeight):
        return item
    rank = len(item.shape)
    return PrunableWeight(item, in_axis=-2 if rank >= 2 else None, out_axis=-1)


def plain_variable(layer, name):
    """The variable behind `layer.<name>` (Keras keeps it in `_<name>`), or `None`.

    Raises:
        UnsupportedModelError: the layer has LoRA or quantization enabled.
    """
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        raise UnsupportedModelError(
            f"Layer {layer.name!r} has LoRA or quantization enabled; prune it before "
            "enabling them."
        )
    return compat.raw_variable(layer, name)


def weight_index(layer, name):
    """Index in `layer.weights` (and `get_weights()`) of the variable `layer.<name>`, or None."""
    if name is None:
        return None
    variable = compat.raw_variable(layer, name)
    for i, weight in enumerate(layer.weights):
        if weight is variable:
            return i
    return None


def spatial_positions(layer, shape):
    """Product of the spatial axes of `shape` (batch and channel axes excluded)."""
    first = getattr(layer, "data_format", "channels_last") == "channels_first"
    spatial = shape[2:] if first else shape[1:-1]
    return int(np.prod(spatial, dtype=np.int64))


def _kind(node):
    return f"{type(node.layer).__name__} {node.name!r}"


class LayerHandler:
    """What tfprune knows about a layer type. This base knows nothing: a barrier, 0 MACs.

    Subclass it, or use a generic handler (`Producer`, `PassThrough`, `Identity`, ...), and
    register it with `register_layer`. Methods that take a `node` get a
    `tfprune.graph.Node`: the built layer, its weights as arrays (`layer.weights` order),
    and the shapes it was called with (batch axis included).

    Attributes:
        prunable: Whether `prunable_weights` returns weights (read before a layer is
            built, to choose which layers `tfprune.prune` wraps).
        fusion_kind: The Keras weight layout fusion may rewrite (`"dense"`, `"conv"`,
            `"depthwise"`, `"separable"`, `"transpose"`), or `None`: fusion only merges
            other layers into layers of a kind, and reads it for exact types only.
    """

    prunable = False
    fusion_kind = None

    def __repr__(self):
        return f"{type(self).__name__}()"

    # Pruning.

    def prunable_weights(self, layer):
        """The `PrunableWeight`s of a built layer (or bare variables)."""
        return []

    def with_prunable_weights(self, fn):
        """A copy of this handler whose prunable weights are `fn(layer)` (see
        `register_prunable`); everything else stays as this handler says."""
        if not callable(fn):
            raise TypeError(f"`fn` must be callable. Received: fn={fn!r}")
        handler = copy.copy(self)
        handler.prunable = True
        handler.prunable_weights = lambda layer: [as_prunable(w) for w in fn(layer)]
        return handler

    # Channels.

    def channels(self, node):
        """How `node` maps input channels to output channels: `(rule, reason)`.

        `rule` is one of `RULES`; `reason` says why a `"barrier"` is one (else `None`).
        The graph has already made unknown channel counts and channels_first layers
        barriers. Only a `Producer` returns `"producer"`: shrinking asks it for `units`,
        `dead_outputs` and `fold_reason`.
        """
        return BARRIER, (f"{_kind(node)} is a layer type the channel analysis does not know "
                         "(tfprune.handlers.register_layer teaches it)")

    def channel_weights(self, layer, channels):
        """The variables of `layer` whose last axis is its `channels` output channels.

        They go with a channel when it is removed (and are what a pruned channel group
        would zero). By default: every weight whose last axis has `channels` entries.
        """
        return [v for v in layer.weights if len(v.shape) and v.shape[-1] == channels]

    def slice(self, node, keep_in, keep_out, dropped):
        """The layer's `(config, weights)` with only the kept channels.

        Args:
            node: The `tfprune.graph.Node`.
            keep_in: List, per input, of boolean arrays: the input channels kept.
            keep_out: Boolean array, the output channels kept.
            dropped: Float array over the first input's channels: the constant each removed
                input channel held (0 where kept). A producer folds it into its bias.

        Returns:
            `(config, weights)` for `type(node.layer).from_config(config)`.
        """
        chosen = {id(v) for v in self.channel_weights(node.layer, len(keep_out))}
        weights = [w[..., keep_out] if id(v) in chosen else w
                   for v, w in zip(node.layer.weights, node.weights, strict=True)]
        return node.layer.get_config(), weights

    # Counting.

    def macs(self, layer, input_shape, output_shape):
        """Multiply-accumulates of one call on one example (shapes include the batch axis)."""
        return 0

    # What fusion may assume (of the exact type registered).

    def is_identity(self, config):
        """Whether a layer with this config is the identity at inference (fusion removes it)."""
        return False

    def affine(self, node):
        """`(s, t)` per output channel (float64) if the node computes `s * x + t` of its one
        input at inference and fusion may fold it into the layer before; else `None`."""
        return None

    def as_activation(self, config):
        """The `activation=` this layer equals, applied to its input.

        Returns:
            `None` if the layer is no activation; else `(name, None)`, or `(None, reason)`
            for an activation with no `activation=` equivalent.
        """
        return None


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
            return BARRIER, (f"{_kind(node)} has no {self.units!r} in its config: its handler "
                             "cannot resize it")
        if config.get("groups", 1) != 1:
            return BARRIER, f"{_kind(node)} is a grouped convolution"
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
            return BARRIER, f"{_kind(node)} changes the channel count"
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
        return f"{_kind(node)} normalizes axis {axis}"
    return None


def _rescaling_check(node):
    config = node.layer.get_config()
    if np.ndim(config["scale"]) or np.ndim(config["offset"]):
        return f"{_kind(node)} has a per-channel scale"
    return None


class _Activation(PassThrough):
    """`keras.layers.Activation`: element-wise unless softmax; `"linear"` is the identity."""

    def __init__(self):
        super().__init__(check=self._check)

    @staticmethod
    def _check(node):
        name = node.layer.get_config()["activation"]
        return f"{_kind(node)} ({name}) mixes channels" if name in SOFTMAX_ACTIVATIONS else None

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
        return BARRIER, f"{_kind(node)} mixes channels"

    def as_activation(self, config):
        if config.get("axis", -1) in (-1,):
            return "softmax", None
        return None, "softmax over a non-last axis"


class Merge(LayerHandler):
    """Add, Subtract, Multiply, ...: every input's channel i is the output's channel i."""

    def channels(self, node):
        shapes = node.input_shapes
        if len({s[-1] for s in shapes}) != 1 or len({len(s) for s in shapes}) != 1:
            return BARRIER, f"{_kind(node)} broadcasts its inputs"
        return MERGE, None


class Concat(LayerHandler):
    """Concatenate on the channel axis: each input's channels, shifted."""

    def channels(self, node):
        axis = node.layer.get_config()["axis"]
        if axis not in (-1, len(node.output_shape) - 1):
            return BARRIER, f"{_kind(node)} joins along axis {axis}"
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
        return BARRIER, f"{_kind(node)} moves channels to other axes"

    def slice(self, node, keep_in, keep_out, dropped):
        config, weights = super().slice(node, keep_in, keep_out, dropped)
        target = list(config["target_shape"])
        target[-1] = int(keep_out.sum())
        config["target_shape"] = tuple(target)
        return config, weights


class HandlerRegistry:
    """The table of layer handlers: `layer class -> LayerHandler`, owned by this instance.

    `REGISTRY` is the one every stage reads; a separate instance starts empty (useful in
    tests). A layer with a `get_prunable_weights()` method prunes those weights whatever
    its handler says.
    """

    def __init__(self):
        self._table = {}
        self.default = LayerHandler()

    def register(self, layer_class, handler):
        """Registers (or replaces) the handler of `layer_class` (and of its subclasses).

        Raises:
            TypeError: `layer_class` is not a Keras layer class or `handler` not a
                `LayerHandler`.
        """
        if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
            raise TypeError(f"`layer_class` must be a Keras layer class. Received: "
                            f"layer_class={layer_class!r}")
        if not isinstance(handler, LayerHandler):
            raise TypeError(f"`handler` must be a tfprune.handlers.LayerHandler. Received: "
                            f"handler={handler!r}")
        self._table[layer_class] = handler

    def unregister(self, layer_class):
        """Removes the handler registered for exactly `layer_class`, if any."""
        self._table.pop(layer_class, None)

    def lookup(self, layer, exact=False):
        """The handler of `layer` (an instance or a class); the base `LayerHandler` if none.

        Args:
            layer: A layer or a layer class.
            exact: Boolean, defaults to `False`: follow the class's MRO, so subclasses of a
                registered class share its handler. `True`: only the handler registered
                for this very class (what fusion uses: a subclass may override `call`).
        """
        cls = layer if isinstance(layer, type) else type(layer)
        if exact:
            return self._table.get(cls, self.default)
        for parent in cls.__mro__:
            if parent in self._table:
                return self._table[parent]
        return self.default

    def supports(self, layer):
        """Whether `layer` has weights to prune (it need not be built)."""
        return callable(getattr(layer, "get_prunable_weights", None)) or self.lookup(
            layer).prunable

    def prunable_weights(self, layer):
        """The `PrunableWeight`s of a built layer (empty if it has none)."""
        own = getattr(layer, "get_prunable_weights", None)
        items = own() if callable(own) else self.lookup(layer).prunable_weights(layer)
        return [as_prunable(w) for w in items]


REGISTRY = HandlerRegistry()


def register_layer(layer_class, handler):
    """Teaches every stage of tfprune a layer type: pruning, shrinking, fusion, counting.

    Args:
        layer_class: A `keras.layers.Layer` subclass (its subclasses share the handler,
            except for fusion).
        handler: A `LayerHandler`, e.g. `Producer("units")` for a Dense-like layer,
            `PassThrough()` for a per-channel one.

    Raises:
        TypeError: `layer_class` is not a layer class or `handler` not a `LayerHandler`.

    Example: a Dense-like layer of one's own, pruned, shrunk and counted like a Dense.

    >>> import keras
    >>> import tfprune
    >>> class MyDense(keras.layers.Layer):
    ...     def __init__(self, units, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.units = units
    ...     def build(self, input_shape):
    ...         self.kernel = self.add_weight(shape=(input_shape[-1], self.units))
    ...         self.bias = self.add_weight(shape=(self.units,), initializer="zeros")
    ...     def call(self, x):
    ...         return x @ self.kernel + self.bias
    ...     def get_config(self):
    ...         return {**super().get_config(), "units": self.units}
    >>> tfprune.handlers.register_layer(MyDense, tfprune.handlers.Producer("units"))
    >>> model = keras.Sequential([keras.Input((6,)), MyDense(4, name="mine"),
    ...                           keras.layers.Dense(2)])
    >>> tfprune.bench.count(model)["mine"].macs
    24
    """
    REGISTRY.register(layer_class, handler)


def register_prunable(layer_class, fn):
    """Tells pruning which weights of a layer type to mask; the rest of its handler stays.

    The shorthand of `register_layer` for pruning alone: `layer_class` keeps the handler
    it had (its parent class's, or none: then shrinking keeps its channels and counting
    gives it 0 MACs) with `fn` for its prunable weights. Register a full handler with
    `register_layer` to have it shrunk and counted too.

    Args:
        layer_class: A `keras.layers.Layer` subclass.
        fn: Callable taking a built layer, returning its prunable variables (input
            channels on axis -2, output channels on axis -1) or `PrunableWeight`s.

    Raises:
        TypeError: `layer_class` is not a layer class or `fn` is not callable.

    Example:

    >>> import keras
    >>> import tfprune
    >>> class Gate(keras.layers.Layer):
    ...     def build(self, input_shape):
    ...         self.w = self.add_weight(shape=(input_shape[-1], 4))
    ...     def call(self, x):
    ...         return x @ self.w
    >>> tfprune.register_prunable(Gate, lambda layer: [layer.w])
    >>> tfprune.handlers.REGISTRY.supports(Gate())
    True
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise TypeError(f"`layer_class` must be a Keras layer class. Received: "
                        f"layer_class={layer_class!r}")
    REGISTRY.register(layer_class, REGISTRY.lookup(layer_class).with_prunable_weights(fn))


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
