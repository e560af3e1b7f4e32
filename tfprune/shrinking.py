"""Physical shrinking: remove zeroed filters and neurons, and fix everything that read them.

Pruning with `granularity="filter"` leaves whole filters (conv output channels) and neurons
(Dense units) at zero. TFLite gains no speed from those zeros; a smaller dense layer is
faster. `shrink` removes them and rewrites their consumers: the next conv/Dense drops the
matching input channels (rows after a Flatten, in channels-last order), BatchNorm and
DepthwiseConv2D drop theirs, and channels joined by Add/Multiply/... or Concatenate are
removed only where the whole coupled group (see `tfprune.graph.ChannelGroups`) allows.
Which layers produce channels, how each one is sliced and what it can fold come from the
layer handlers (`tfprune.handlers`), so a custom layer registered there shrinks too.

A removed filter with a zero kernel still outputs `activation(bias)` everywhere; that
constant (after any BatchNorm, activation, pooling between) is folded into the bias of the
next conv or Dense, so the smaller model computes the same function. Where folding would
not be exact (a 'same'-padded conv pads the constant with zeros at the border), the
channel is kept and the plan says why.
"""

import dataclasses

import keras
import numpy as np

from tfprune.errors import TfpruneError, UnsupportedModelError
from tfprune.graph import ChannelGroups, LayerGraph
from tfprune.handlers import REGISTRY


@dataclasses.dataclass
class Kept:
    """Zeroed units that stay, and why.

    Attributes:
        units: List of `(layer name, unit index)` of the zeroed units kept.
        reason: Why they cannot be removed.
    """

    units: list
    reason: str


class ShrinkPlan:
    """What `shrink` removes: per layer, the output units that go, and what stays and why.

    Attributes:
        removed: Dict of layer name -> sorted list of removed output unit indices, for every
            layer whose output loses units (producers, and the layers channels pass through).
        sizes: Dict of layer name -> its output unit count before shrinking.
        kept: List of `Kept`: zeroed units that stay, and why.
        barriers: Dict of layer name -> why the channel analysis stops at that layer.
        threshold: The L2-norm threshold under which a unit counts as zero.
    """

    def __init__(self, graph, groups, values, remove, kept, threshold, model=None):
        self._model = model
        self.graph = graph
        self.groups = groups
        self.values = values
        self._remove = remove  # name -> boolean mask of the output units that go
        self.kept = kept
        self.barriers = dict(groups.barriers)
        self.threshold = threshold
        self.sizes = dict(groups.sizes)
        self.removed = {name: np.flatnonzero(mask).tolist()
                        for name, mask in remove.items() if mask.any()}

    @property
    def num_removed(self):
        """Number of units removed from producer layers (conv filters, Dense units)."""
        return sum(len(v) for k, v in self.removed.items()
                   if self.groups.rules.get(k) == "producer")

    def to_dict(self):
        return {
            "threshold": self.threshold,
            "removed": {k: {"before": self.sizes[k], "after": self.sizes[k] - len(v),
                            "units": v} for k, v in self.removed.items()},
            "kept": [{"units": [list(u) for u in k.units], "reason": k.reason}
                     for k in self.kept],
            "barriers": dict(self.barriers),
        }

    def __str__(self):
        lines = [f"Shrink plan for {self.graph.name!r} (threshold={self.threshold}):"]
        producers = [n for n in self.graph.layers() if self.groups.rules[n.name] == "producer"]
        for node in producers:
            gone = self.removed.get(node.name, [])
            size = self.sizes[node.name]
            what = REGISTRY.lookup(node.layer).units
            lines.append(f"  {node.name} ({type(node.layer).__name__}): {size} -> "
                         f"{size - len(gone)} {what}"
                         + (f", removes {_ranges(gone)}" if gone else ""))
        others = [k for k in self.removed if self.groups.rules.get(k) != "producer"]
        if others:
            lines.append("  channels follow in: " + ", ".join(
                f"{k} {self.sizes[k]}->{self.sizes[k] - len(self.removed[k])}"
                for k in others))
        for kept in self.kept:
            lines.append(f"  keeps {_units_text(kept.units)}: {kept.reason}")
        for name, reason in self.barriers.items():
            lines.append(f"  stops at {name}: {reason}; its channels are kept")
        if not self.removed:
            lines.append("  nothing to remove")
        return "\n".join(lines)

    __repr__ = __str__

    def apply(self, verify=True):
        """Builds the shrunk model (a new model; the original is not touched).

        Args:
            verify: Boolean, defaults to `True`: with `threshold=0`, run the original and
                the shrunk model on one random batch and raise if they differ (a guard
                against a bug; it costs one forward pass of each).
        """
        graph = LayerGraph(
            {name: dataclasses.replace(node, inputs=list(node.inputs))
             for name, node in self.graph.nodes.items()},
            list(self.graph.outputs), self.graph.sequential, self.graph.name)
        for node in self.graph.layers():
            new = self._rewrite(node)
            if new is not None:
                graph.replace(node.name, *new)
        model = graph.to_model()
        if verify and self.threshold == 0 and self._model is not None:
            _check_same_outputs(self._model, model)
        return model

    def _rewrite(self, node):
        """New `(layer, weights, output shape)` for `node`, or `None` if it is unchanged."""
        if self.groups.rules[node.name] == "barrier":
            return None
        keep_out = ~self._remove[node.name]
        keep_in = [~self._remove[s] for s in node.inputs]
        if keep_out.all() and all(k.all() for k in keep_in):
            return None
        dropped = np.where(keep_in[0], 0.0, np.nan_to_num(self.values[node.inputs[0]]))
        config, weights = REGISTRY.lookup(node.layer).slice(node, keep_in, keep_out, dropped)
        layer = type(node.layer).from_config(config)
        return layer, weights, (*node.output_shape[:-1], int(keep_out.sum()))


def shrink_plan(model, threshold=0.0):
    """Plans which filters and neurons `shrink` removes, without building anything.

    Args:
        model: A built Sequential or Functional Keras model (pruning wrappers stripped).
        threshold: Float, defaults to `0.0`. A unit whose kernel slice has an L2 norm at or
            under it counts as zero (`0.0`: exactly zero, and shrinking is exact).

    Returns:
        A `ShrinkPlan`; `print()` it to read which units go from which layers and why
        zeroed units were kept.

    Raises:
        UnsupportedModelError: a subclassed or nested model, shared layers, or pruning
            wrappers still in the model.

    Example:

    >>> import numpy as np
    >>> import tfprune
    >>> import tfprune.models
    >>> model = tfprune.models.lenet5()
    >>> conv1 = model.get_layer("conv1")
    >>> _ = conv1.kernel.assign(conv1.kernel * np.repeat([0.0, 1.0], 10))  # filters 0-9 zero
    >>> print(tfprune.shrink_plan(model))
    Shrink plan for 'lenet5' (threshold=0.0):
      conv1 (Conv2D): 20 -> 10 filters, removes 0-9
      conv2 (Conv2D): 50 -> 50 filters
      ip1 (Dense): 500 -> 500 units
      ip2 (Dense): 10 -> 10 units
      channels follow in: pool1 20->10
    """
    if threshold < 0:
        raise TfpruneError(f"threshold must be >= 0. Received: threshold={threshold}")
    for layer in model.layers:
        if isinstance(layer, keras.layers.Wrapper):
            raise UnsupportedModelError(
                f"Layer {layer.name!r} is a {type(layer).__name__} wrapper: call "
                "tfprune.strip(model) before shrinking.")
    graph = LayerGraph.from_model(model)
    groups = ChannelGroups(graph)
    values = _constants(graph, groups, threshold)
    pins = _pins(graph, groups, values)
    removable = _removable(groups, values, pins)
    remove = {name: removable[groups.group_of(name)] if groups.sizes[name] else
              np.zeros(0, bool) for name in graph.nodes}
    kept = _kept(graph, groups, values, remove, pins)
    return ShrinkPlan(graph, groups, values, remove, kept, threshold, model)


def shrink(model, threshold=0.0):
    """Removes zeroed filters and neurons: a smaller model that computes the same function.

    Every output channel of a Conv1D/2D/3D, SeparableConv, ConvTranspose, every Dense unit
    (and every unit of a layer registered with a `tfprune.handlers.Producer` handler)
    whose kernel slice is zero (L2 norm at most `threshold`) is removed with all that
    depends on it: the next layers' input channels, BatchNorm and DepthwiseConv2D channels,
    Flatten->Dense rows, channels of Add/Concatenate groups (only where every coupled
    branch is removable). The constant a removed unit still outputs (`activation(bias)`)
    is folded into its consumers' biases. The model outputs keep their shape.

    Args:
        model: A built Sequential or Functional Keras model, e.g.
            `tfprune.strip(pruned)`; it is not modified.
        threshold: Float, defaults to `0.0` (exactly zero units only: exact result).

    Returns:
        A new Keras model (Sequential if `model` was).

    Raises:
        UnsupportedModelError: see `shrink_plan`.

    Example:

    >>> import tfprune
    >>> import tfprune.models
    >>> model = tfprune.models.lenet5()
    >>> pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, 0), granularity="filter")
    >>> for layer in pruned.layers:
    ...     if isinstance(layer, tfprune.PruneLowMagnitude):
    ...         layer.update_masks(0.5)  # what UpdatePruningStep does during fit
    >>> small = tfprune.shrink(tfprune.strip(pruned))
    >>> [small.get_layer(n).kernel.shape[-1] for n in ("conv1", "conv2", "ip1", "ip2")]
    [10, 25, 250, 10]
    >>> tfprune.bench.count(small).macs < tfprune.bench.count(model).macs / 3
    True
    """
    return shrink_plan(model, threshold).apply()


# Analysis.


def _constants(graph, groups, threshold):
    """Per node, the constant each output channel holds everywhere, or NaN if it varies."""
    values = {}
    for name, node in graph.nodes.items():
        rule = groups.rules.get(name)
        size = groups.sizes[name]
        if node.is_input or rule == "barrier":
            values[name] = np.full(size, np.nan)
        elif rule == "producer":
            values[name] = REGISTRY.lookup(node.layer).dead_outputs(node, threshold)
        else:
            values[name] = _evaluate(node, [values[i] for i in node.inputs])
    return values


def _evaluate(node, inputs):
    """Runs a channel-wise layer on inputs that are constant where known, noise elsewhere.

    An output channel is constant if it is the same at every position in two runs with
    different noise: then it depends only on constant input channels.
    """
    size = node.output_shape[-1]
    shapes = [s[1:] for s in node.input_shapes]
    if all(np.isnan(v).all() for v in inputs) or any(None in s for s in shapes):
        return np.full(size, np.nan)
    runs = []
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        args = []
        for shape, value in zip(shapes, inputs, strict=True):
            x = np.broadcast_to(np.nan_to_num(value), (1, *shape)).astype(np.float32)
            noise = rng.normal(size=(1, *shape)).astype(np.float32)
            args.append(np.where(np.isnan(value), noise, x))
        out = node.layer(args if node.packed else args[0], training=False)
        # convert_to_numpy: a PyTorch output that carries a gradient refuses np.asarray.
        runs.append(keras.ops.convert_to_numpy(out).astype(np.float64).reshape(-1, size))
    a, b = runs
    scale = 1e-5 * (1.0 + np.abs(a).max(axis=0))
    const = (np.ptp(a, axis=0) <= scale) & (np.ptp(b, axis=0) <= scale) & (
        np.abs(a[0] - b[0]) <= scale)
    return np.where(const, a.mean(axis=0), np.nan)


def _pins(graph, groups, values):
    """Dict of group -> why its channels must stay (outputs, barriers, unfoldable constants)."""
    pins = {}

    def pin(name, reason, mask=None):
        for i, g in enumerate(groups.group_of(name)):
            if mask is None or mask[i]:
                pins.setdefault(int(g), reason)

    for name in graph.outputs:
        pin(name, f"{name} is a model output")
    for node in graph.layers():
        rule = groups.rules[node.name]
        if rule == "barrier":
            for source in node.inputs:
                pin(source, groups.barriers[node.name])
        elif rule == "producer":
            why = REGISTRY.lookup(node.layer).fold_reason(node)
            if why is None:
                continue
            for source in node.inputs:
                value = values[source]
                mask = np.isfinite(value) & (value != 0)
                pin(source, f"they hold a non-zero constant that {node.name} cannot fold "
                    f"exactly ({why})", mask)
    return pins


def _removable(groups, values, pins):
    """Boolean per slot group (indexed by group id): can the whole group go?"""
    ok = np.ones(groups.num_slots, bool)
    for name in groups.graph.nodes:
        if groups.sizes[name]:
            g = groups.group_of(name)
            np.logical_and.at(ok, g, np.isfinite(values[name]))
    for g in pins:
        ok[g] = False
    # Keep at least one channel in every tensor, so every layer still has an output.
    for name in groups.graph.nodes:
        g = groups.group_of(name)
        if len(g) and ok[g].all():
            pins[int(g[0])] = f"{name} keeps one channel so that it still has an output"
            ok[g[0]] = False
    return ok


def _kept(graph, groups, values, remove, pins):
    """The zeroed producer units that stay, grouped by reason."""
    live = np.zeros(groups.num_slots, bool)  # groups with a non-constant channel
    for name in graph.nodes:
        np.logical_or.at(live, groups.group_of(name), ~np.isfinite(values[name]))
    by_reason = {}
    for node in graph.layers():
        if groups.rules[node.name] != "producer":
            continue
        dead = np.isfinite(values[node.name]) & ~remove[node.name]
        for i, g in zip(np.flatnonzero(dead), groups.group_of(node.name)[dead], strict=True):
            reason = pins.get(int(g)) or (
                "coupled with channels that are not constant (a live branch of an "
                "Add/Multiply/Concatenate, or zero padding after a non-zero constant)"
                if live[g] else "coupled with live channels")
            by_reason.setdefault(reason, []).append((node.name, int(i)))
    return [Kept(units, reason) for reason, units in by_reason.items()]


# Rewriting.


def _check_same_outputs(original, shrunk):
    """Raises if `shrunk` and `original` differ on a random batch (float inputs only)."""
    shapes = [tuple(t.shape) for t in original.inputs]
    if any(None in s[1:] for s in shapes) or any(
            "float" not in str(t.dtype) for t in original.inputs):
        return
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-1, 1, (2, *s[1:])).astype(np.float32) for s in shapes]
    xs = xs[0] if len(xs) == 1 else xs
    before = keras.tree.flatten(original(xs, training=False))
    after = keras.tree.flatten(shrunk(xs, training=False))
    for a, b in zip(before, after, strict=True):
        a, b = (keras.ops.convert_to_numpy(v).astype(np.float64) for v in (a, b))
        if a.shape != b.shape or np.abs(a - b).max() > 1e-4 * max(np.abs(a).max(), 1e-6):
            raise TfpruneError(
                f"Shrinking {original.name!r} changed its outputs: a custom layer handler "
                "that does not match its layer, or a tfprune bug (please report it with the "
                "model); use shrink_plan() to see what was removed.")


def _ranges(indices):
    """[0, 1, 2, 5] -> '0-2, 5' (readable lists of removed units)."""
    parts, start = [], None
    for i, x in enumerate(indices):
        if start is None:
            start = x
        if i + 1 == len(indices) or indices[i + 1] != x + 1:
            parts.append(str(start) if start == x else f"{start}-{x}")
            start = None
    text = ", ".join(parts)
    return text if len(text) < 80 else text[:77] + "..."


def _units_text(units):
    by_layer = {}
    for name, i in units:
        by_layer.setdefault(name, []).append(i)
    return "; ".join(f"{name} units {_ranges(ix)}" for name, ix in by_layer.items())
