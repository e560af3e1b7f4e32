"""What a handler is: how channels pass through a layer (`PRODUCER`, `PASS`, ...), the
weights it prunes (`PrunableWeight`), and `LayerHandler`, the base every handler extends.
"""

import copy
import dataclasses

import keras
import numpy as np

from tfprune import compat
from tfprune.errors import UnsupportedModelError

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


def kind_of(node):
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
        return BARRIER, (f"{kind_of(node)} is a layer type the channel analysis does not know "
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


