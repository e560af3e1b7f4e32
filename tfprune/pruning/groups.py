"""Filter pruning by channel group: a pruned filter takes its whole channel with it.

Under `"filter"` granularity a convolution's filter is not pruned alone. Its output channel
is coupled (`tfprune.graph.ChannelGroups`) with the BatchNorm channel after it, the
depthwise channel that reads it and, across a residual `Add`, the same channel of every
branch. Were only the filter zeroed, the BatchNorm after it would still add its offset and
the channel would carry a constant that a 'same'-padded consumer cannot fold: `shrink`
would have to keep it. So `FilterGroups` ranks whole groups, by the sum of the squared L2
norms of the kernel slices that make the channel, and writes one decision per group into
every wrapper that touches it: the kernels' filters, the biases, the BatchNorm scales and
offsets (each wrapper's `masks` and `channel_mask`). A pruned group then outputs exactly
zero, in training (the masks act in the graph) and after `strip`, and `shrink` removes it.
Channels coupled by an `Add` are scored and pruned together, at the same index in every
branch.

`tfprune.prune` wraps what a group needs (`followers`: the BatchNorm after a pruned conv,
the depthwise conv that reads it); `tfprune.UpdatePruningStep` moves the masks through
`FilterGroups`. A group that cannot go is never pruned: one that reaches a model output, a
layer the channel analysis stops at, or a layer that is not wrapped.
"""

import dataclasses

import numpy as np

from tfprune.errors import TfpruneError, UnsupportedModelError
from tfprune.graph import ChannelGroups, LayerGraph
from tfprune.handlers import REGISTRY
from tfprune.pruning import masks
from tfprune.pruning.wrapper import PruneLowMagnitude

# Channel rules whose layers make (or transform) a channel with weights of their own.
_WEIGHTED = ("producer", "depthwise")


def trainable_channel_weights(layer, channels):
    """The trainable weights of `layer` that follow its `channels` output channels.

    A bias; a BatchNorm's scale and offset (its moving statistics are not trainable).
    """
    return [v for v in REGISTRY.lookup(layer).channel_weights(layer, channels)
            if v.trainable and tuple(v.shape) == (channels,)]


def followers(graph, groups, chosen, named=()):
    """The layers `tfprune.prune` wraps so that the filters in `chosen` prune whole channels.

    Args:
        graph: The model's `tfprune.graph.LayerGraph`.
        groups: Its `tfprune.graph.ChannelGroups`.
        chosen: Dict of layer name -> granularity, as `tfprune.pruning.plan` chose them.
        named: Layer names the user gave a granularity by name (left as they are).

    Returns:
        Dict of layer name -> `"filter"` for the layers to wrap as followers: each layer
        without prunable weights whose trainable weights follow a channel (a BatchNorm),
        and each depthwise conv not named by the user, in a group of a filter-pruned layer.
    """
    pruned = np.zeros(groups.num_slots, bool)
    for name, granularity in chosen.items():
        if masks.check_granularity(granularity)[0] == "filter":
            pruned[groups.group_of(name)] = True
    if not pruned.any():
        return {}
    found = {}
    for node in graph.layers():
        name, rule = node.name, groups.rules[node.name]
        if name in named or not pruned[groups.group_of(name)].any():
            continue
        if rule == "depthwise" and name in chosen and chosen[name] != "filter":
            found[name] = "filter"
        elif (rule == "pass" and name not in chosen and not REGISTRY.supports(node.layer)
              and trainable_channel_weights(node.layer, groups.sizes[name])):
            found[name] = "filter"
    return found


@dataclasses.dataclass
class _Member:
    """A filter-granularity wrapper and the group of each channel it masks."""

    wrapper: PruneLowMagnitude
    out: np.ndarray  # group of each output channel
    inp: np.ndarray  # group of each channel of its (first) input

    def labels(self, pw):
        """The group of each channel along `pw.out_axis`, flattened."""
        size = int(np.prod([pw.variable.shape[a] for a in np.atleast_1d(pw.out_axis)]))
        if pw.follows == "input":
            if size % len(self.inp):
                raise TfpruneError(
                    f"Layer {self.wrapper.layer.name!r}: {size} channels along the out_axis "
                    f"of {pw.variable.path!r} do not repeat its {len(self.inp)} input "
                    "channels (its handler's follows='input' does not match the layer).")
            return np.repeat(self.inp, size // len(self.inp))
        if size != len(self.out):
            raise TfpruneError(
                f"Layer {self.wrapper.layer.name!r}: {size} channels along the out_axis of "
                f"{pw.variable.path!r}, but {len(self.out)} output channels (fix its "
                "handler's out_axis, or say follows='input').")
        return self.out

    @property
    def passes_through(self):
        """Its output channels are made from its input's one by one (a depthwise conv)."""
        from tfprune.handlers import REGISTRY, Depthwise

        return isinstance(REGISTRY.lookup(self.wrapper.layer), Depthwise)

    @property
    def ranks(self):
        """The prunable weights that make this layer's output channels (scored)."""
        return [pw for pw in self.wrapper.prunable if pw.follows == "output"]


class FilterGroups:
    """The coupled channel groups of a pruned model's `"filter"` wrappers, and their masks.

    Groups come from `tfprune.graph.ChannelGroups` on the model with its wrappers seen
    through. Wrappers whose output channels share groups form a coupling (the branches of
    a residual `Add`, a conv with the depthwise conv and BatchNorms after it); a coupling's
    groups are ranked together and pruned at one sparsity, the smallest the schedules of
    the layers that make its channels ask for (a depthwise conv that passes its input
    channels through follows them), so that no such layer loses more than asked.

    Args:
        model: A model from `tfprune.prune` (Sequential or Functional).

    Raises:
        UnsupportedModelError: a model `tfprune.graph.LayerGraph` cannot read.

    Example:

    >>> L = keras.layers
    >>> x = keras.Input((8, 8, 3))
    >>> y = L.ReLU()(L.BatchNormalization(name="bn")(L.Conv2D(8, 3, name="conv")(x)))
    >>> model = keras.Model(x, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(y)))
    >>> _ = model.get_layer("bn").beta.assign(np.ones(8))   # as if trained: offsets of 1
    >>> pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, 0), granularity="filter")
    >>> groups = tfprune.pruning.groups.FilterGroups(pruned)
    >>> groups.update({layer: 0.5 for layer in groups.wrappers})  # what UpdatePruningStep does
    >>> small = tfprune.strip(pruned)
    >>> bn = small.get_layer("bn")
    >>> int((bn.gamma.numpy() == 0).sum()), int((bn.beta.numpy() == 0).sum())
    (4, 4)
    >>> out = keras.Model(small.input, small.get_layer("bn").output)(np.ones((1, 8, 8, 3)))
    >>> int((np.abs(out.numpy()).max(axis=(0, 1, 2)) == 0).sum())   # 4 channels exactly zero
    4
    >>> tfprune.shrink(small).get_layer("conv").filters
    4
    """

    def __init__(self, model):
        graph = LayerGraph.from_model(model)
        members = {}
        for node in graph.layers():
            if isinstance(node.layer, PruneLowMagnitude):
                wrapper = node.layer
                node.layer = wrapper.layer  # the analysis sees the wrapped layer
                if wrapper.granularity_kind == "filter":
                    members[node.name] = wrapper
        groups = ChannelGroups(graph)
        self.pinned = _pinned(graph, groups, members)
        self.pruned = np.zeros(groups.num_slots, bool)
        self._members = {}
        for name, wrapper in members.items():
            inputs = graph.nodes[name].inputs
            self._members[wrapper] = _Member(
                wrapper, groups.group_of(name),
                groups.group_of(inputs[0]) if inputs else np.zeros(0, np.int64))
        self.couplings = _couplings(list(self._members.values()))

    @property
    def wrappers(self):
        """The `"filter"` wrappers, in layer order."""
        return list(self._members)

    @classmethod
    def of(cls, model):
        """`FilterGroups(model)`, or `None` if it has no `"filter"` wrapper or no graph (a
        nested or subclassed model: its wrappers then prune their own filters)."""
        wrappers = [layer for layer in getattr(model, "layers", [])
                    if isinstance(layer, PruneLowMagnitude)]
        if not any(w.granularity_kind == "filter" for w in wrappers):
            return None
        try:
            return cls(model)
        except UnsupportedModelError:
            return None

    def __contains__(self, wrapper):
        return wrapper in self._members

    def sync(self):
        """Reads which channel groups are pruned back from the wrappers' channel masks
        (after their weights were set, e.g. to an earlier state)."""
        self.pruned[:] = False
        for member in self._members.values():
            if member.wrapper.channel_mask is not None and len(member.out):
                mask = np.asarray(member.wrapper.channel_mask).reshape(-1)
                if mask.size == len(member.out):
                    self.pruned[member.out[mask == 0]] = True

    def update(self, due):
        """Recomputes the masks of every coupling with a wrapper in `due`.

        Args:
            due: Dict of wrapper -> the sparsity its schedule asks for now.
        """
        changed = False
        for coupling in self.couplings:
            ranked = [m for m in coupling if m.wrapper in due and m.ranks]
            # The layers that make the channels decide; one that passes its input channels
            # through (a depthwise conv) follows them, whatever its own schedule says.
            makers = [m for m in ranked if not m.passes_through] or ranked
            asked = [due[m.wrapper] for m in makers]
            if asked:
                self._decide(coupling, min(asked))
                changed = True
        if changed:
            for member in self._members.values():
                self._write(member)

    def _decide(self, coupling, sparsity):
        labels = np.unique(np.concatenate([m.out for m in coupling]))
        scores = np.zeros(len(self.pruned))
        for member in coupling:
            for pw in member.ranks:
                norms = masks.filter_norms(np.asarray(pw.variable), pw.out_axis).reshape(-1)
                np.add.at(scores, member.labels(pw), np.square(norms.astype(np.float64)))
        candidates = labels[~self.pinned[labels]]
        count = min(len(labels) - masks.keep_count(len(labels), sparsity), len(candidates))
        order = np.argsort(scores[candidates], kind="stable")
        self.pruned[labels] = False
        self.pruned[candidates[order[:count]]] = True

    def _write(self, member):
        wrapper = member.wrapper
        new = []
        for pw in wrapper.prunable:
            keep = (~self.pruned[member.labels(pw)]).astype(np.float32)
            new.append(np.broadcast_to(masks.along_axes(keep, pw.variable.shape, pw.out_axis),
                                       pw.variable.shape).astype(np.float32))
        wrapper.set_masks(new, (~self.pruned[member.out]).astype(np.float32))


def update_masks(groups, due):
    """Sets the masks each wrapper in `due` asks for: by coupled channel group for the
    wrappers `groups` holds (a `FilterGroups`, or `None`), each alone for the others.

    Args:
        groups: The model's `FilterGroups`, or `None`.
        due: Dict of wrapper -> the sparsity to prune it to now.
    """
    if groups is not None:
        groups.update(due)
    for wrapper, sparsity in due.items():
        if groups is None or wrapper not in groups:
            wrapper.update_masks(sparsity)


def _pinned(graph, groups, members):
    """Boolean per group: True where its channels must stay (see the module doc)."""
    pinned = np.zeros(groups.num_slots, bool)

    def pin(name):
        pinned[groups.group_of(name)] = True

    for name in graph.outputs:
        pin(name)
    for node in graph.nodes.values():
        if node.is_input:
            pin(node.name)
            continue
        rule = groups.rules[node.name]
        if rule == "barrier":
            for name in [*node.inputs, node.name]:
                pin(name)
        elif node.name not in members and (
                rule in _WEIGHTED or REGISTRY.supports(node.layer) or
                trainable_channel_weights(node.layer, groups.sizes[node.name])):
            pin(node.name)  # its channel cannot be zeroed
    return pinned


def _couplings(members):
    """Members joined by the groups of their output channels, each list in layer order."""
    parent = list(range(len(members)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner = {}
    for i, member in enumerate(members):
        for label in np.unique(member.out):
            j = owner.setdefault(int(label), i)
            parent[find(i)] = find(j)
    joined = {}
    for i, member in enumerate(members):
        joined.setdefault(find(i), []).append(member)
    return list(joined.values())


def dead_channel_masks(model):
    """`(variable, keep)` for each trainable weight that follows a channel pruned whole.

    A channel is pruned whole when every kernel slice that makes it is zero (a conv filter,
    a depthwise channel) or, in a layer without kernels (a BatchNorm), when its trainable
    channel weights are all zero there. `tfprune.pipeline.hold_zeros` holds these entries
    (biases, scales, offsets) at zero while retraining, so that the channel still outputs
    zero and `shrink` removes it.

    Args:
        model: A built Keras model without pruning wrappers.

    Returns:
        A list of `(keras.Variable, numpy 0/1 array shaped like it)`, for the weights with
        at least one such channel.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    >>> _ = model.get_layer("fc").kernel.assign(np.ones((4, 3)) * [1.0, 0.0, 1.0])
    >>> [(v.name, keep.tolist()) for v, keep in tfprune.pruning.groups.dead_channel_masks(model)]
    [('bias', [1.0, 0.0, 1.0])]
    """
    found = []
    for layer in model.layers:
        if not layer.built or not layer.weights:
            continue
        try:
            channels = int(layer.output.shape[-1])
        except (AttributeError, ValueError, TypeError):  # no single output tensor
            continue
        weights = trainable_channel_weights(layer, channels)
        if not weights:
            continue
        kernels = [pw for pw in REGISTRY.prunable_weights(layer) if pw.follows == "output"]
        if kernels:
            norms = [masks.filter_norms(np.asarray(pw.variable), pw.out_axis).reshape(-1)
                     for pw in kernels]
            if any(len(n) != channels for n in norms):
                continue
            dead = np.all([n == 0 for n in norms], axis=0)
        else:
            dead = np.all([np.asarray(v) == 0 for v in weights], axis=0)
        if dead.any():
            found += [(v, (~dead).astype(np.float32)) for v in weights]
    return found
