"""`prune`, `strip` and `sparsity`: whole-model pruning on top of `PruneLowMagnitude`.

`prune` rebuilds the model with `keras.models.clone_model`, wrapping the chosen layers, and
copies the weights into the new layers: the caller's model and its weights are never
touched (tfmot's wrappers share the caller's layers, so pruning silently zeroes the
original model too). `strip` is the inverse: a plain Keras model whose kernels hold
mask x weight.
"""

import warnings

import keras
import numpy as np

from tfprune.errors import TfpruneError, UnsupportedModelError
from tfprune.graph import ChannelGroups, LayerGraph, clone_layer
from tfprune.pruning import groups, masks, schedules
from tfprune.pruning.wrapper import REGISTRY, PruneLowMagnitude, unwrap

_OPTIONS = ("block_shape", "block_pooling", "n_m")
DEFAULT_KEY = "*"


def _copy_weights(pairs):
    """Sets each new layer's weights from its source: `(source weights, new layer)` pairs."""
    for weights, new in pairs:
        if weights:
            new.set_weights(weights)


def _output_layers(graph):
    """Names of the prunable layers whose channels are the model's outputs.

    Walks back from each output through layers with nothing to prune (Softmax, Flatten,
    pooling, Add, Concatenate...) to the first prunable ones: the classifier whose units
    must all survive, or every branch of an output Add/Concatenate.
    """
    found, todo = set(), list(graph.outputs)
    while todo:
        node = graph.nodes[todo.pop()]
        if node.is_input:
            continue
        if REGISTRY.supports(unwrap(node.layer)):
            found.add(node.name)
        else:
            todo.extend(node.inputs)
    return found


def _check_keys(granularity, model):
    names = {layer.name for layer in model.layers}
    classes = {cls.__name__ for layer in model.layers for cls in type(layer).__mro__}
    for key, value in granularity.items():
        if key != DEFAULT_KEY and key not in names and key not in classes:
            raise TfpruneError(
                f"granularity key {key!r} is neither a layer name nor a layer class in model "
                f"{model.name!r} (layers: {sorted(names)}). Received: granularity={granularity!r}"
            )
        if value is not None:
            masks.check_granularity(value)


def _granularity_of(layer, granularity):
    """The granularity for `layer` (None: leave it unpruned)."""
    if not isinstance(granularity, dict):
        return granularity
    if layer.name in granularity:
        return granularity[layer.name]
    for cls in type(layer).__mro__:
        if cls.__name__ in granularity:
            return granularity[cls.__name__]
    return granularity.get(DEFAULT_KEY, "weight")


def _selected(model, layers):
    """The set of layer names `layers` picks (names or a predicate); None: every layer."""
    if layers is None:
        return None
    if callable(layers):
        return {layer.name for layer in model.layers if layers(layer)}
    if isinstance(layers, str):
        layers = [layers]
    names = {layer.name for layer in model.layers}
    for name in layers:
        if name not in names:
            raise TfpruneError(
                f"No layer named {name!r} in model {model.name!r}; its layers are "
                f"{sorted(names)}. Received: layers={list(layers)!r}"
            )
        layer = model.get_layer(name)
        if not REGISTRY.supports(layer):
            raise TfpruneError(
                f"Layer {name!r} ({type(layer).__name__}) has no weights to prune; pick "
                f"Dense/Conv/Embedding layers or register its class with "
                f"tfprune.register_prunable. Received: layers={list(layers)!r}"
            )
    return set(layers)


def plan(model, granularity="weight", layers=None):
    """Which layers `prune` wraps, and at which granularity.

    Args:
        model: A Sequential or Functional Keras model.
        granularity: See `prune`.
        layers: See `prune`.

    Returns:
        A dict `{layer name: granularity}` of the layers to wrap, in layer order: the layers
        to prune, and under `"filter"` the layers whose channels follow a pruned filter's
        (`tfprune.pruning.groups.followers`: a BatchNorm, a depthwise conv), as `"filter"`.

    Raises:
        UnsupportedModelError: a subclassed or unbuilt model, or nothing to prune.
        TfpruneError: an unknown granularity, layer name or granularity key.
    """
    graph = LayerGraph.from_model(model)  # raises on subclassed, nested, unbuilt models
    if isinstance(granularity, dict):
        _check_keys(granularity, model)
    elif not isinstance(granularity, str):
        raise TfpruneError(f"`granularity` must be a string or a dict of layer name or class "
                           f"to granularity. Received: granularity={granularity!r}")
    else:
        masks.check_granularity(granularity)
    picked = _selected(model, layers)
    outputs = _output_layers(graph)
    result, kept_whole = {}, []
    for layer in model.layers:
        if not REGISTRY.supports(layer) or (picked is not None and layer.name not in picked):
            continue
        chosen = _granularity_of(layer, granularity)
        if chosen is None:
            continue
        if masks.check_granularity(chosen)[0] == "filter" and layer.name in outputs:
            kept_whole.append(layer.name)  # the classifier keeps every unit and weight
            continue
        result[layer.name] = chosen
    if not result:
        why = (f"; under 'filter' the output layers {kept_whole} are left whole: name them "
               "with a granularity to prune their weights" if kept_whole else "")
        raise UnsupportedModelError(
            f"Model {model.name!r} has no layer to prune (prunable types: Dense, Conv1D/2D/3D "
            "and their transposed, depthwise and separable forms, Embedding, or a layer "
            f"with get_prunable_weights()){why}. Received: layers={layers!r}"
        )
    if any(masks.check_granularity(g)[0] == "filter" for g in result.values()):
        named = set(granularity) if isinstance(granularity, dict) else set()
        result.update(groups.followers(graph, ChannelGroups(graph), result, named))
    return {layer.name: result[layer.name] for layer in model.layers if layer.name in result}


def prune(model, schedule, granularity="weight", layers=None, sparsities=None, **options):
    """A copy of `model` whose prunable layers are wrapped in `PruneLowMagnitude`.

    The caller's model is not modified; the copy starts from its weights. Compile the copy
    and fit it with `tfprune.UpdatePruningStep()` among the callbacks.

    Args:
        model: A built Sequential or Functional Keras model.
        schedule: A `tfprune.PruningSchedule`, e.g. `tfprune.PolynomialDecay(...)`.
        granularity: `"weight"` (the default), `"block"`, `"n:m"` / `"N:M"`, `"filter"`, or a
            dict mapping layer names or layer class names (`"Conv2D"`, `"Dense"`; a class
            name also matches subclasses) to one of these or `None` (do not prune); a
            layer name wins over a class name, and `"*"` sets the default for layers
            matched by neither (else `"weight"`). `"filter"` prunes whole channel groups
            (`tfprune.pruning.groups`): a filter goes with its bias, the BatchNorm scale and offset
            after it (the BatchNorm is wrapped too), the depthwise channel that reads it and
            the same channel of every branch of a residual `Add`, so that it outputs exactly
            zero and `tfprune.shrink` removes it. A layer whose units are a model output
            (the classifier) that would get `"filter"` is left whole, units and weights;
            name it with another granularity to prune its weights.
        layers: Which layers to prune: a list of layer names, or a predicate
            `fn(layer) -> bool`; defaults to every prunable layer.
        sparsities: Dict of layer name -> final sparsity, defaults to `None`: each named
            layer gets `schedule.ending_at(sparsity)` (the same steps, its own target), the
            other pruned layers `schedule` itself. The one way to give layers their own
            sparsities (the pipeline's `--layer_sparsity` and the search's widths use it).
        **options: `block_shape`, `block_pooling`, `n_m`: see `PruneLowMagnitude`.

    Returns:
        A new Keras model of the same kind (Sequential or Functional), uncompiled.

    Raises:
        UnsupportedModelError: a subclassed, unbuilt or nested model, a layer called more
            than once, or no layer to prune.
        TfpruneError: an unknown granularity, option or layer name, a granularity a
            layer cannot take (N:M on a one-input-channel conv), or `sparsities` naming a
            layer that is not pruned.

    Example:

    >>> L = keras.layers
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(8, 3, name="conv"),
    ...                           L.BatchNormalization(name="bn"), L.ReLU(), L.Flatten(),
    ...                           L.Dense(10, name="fc")])
    >>> tfprune.pruning.plan(model, "filter")   # bn follows conv; the classifier stays whole
    {'conv': 'filter', 'bn': 'filter'}
    >>> pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, begin_step=0),
    ...                        granularity="filter")
    >>> pruned.compile("adam", "sparse_categorical_crossentropy")
    >>> x, y = np.random.rand(64, 8, 8, 1), np.random.randint(0, 10, 64)
    >>> _ = pruned.fit(x, y, batch_size=16, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    >>> tfprune.sparsity(pruned)   # 4 of the 8 filters
    {'conv': 0.5, 'fc': 0.0}
    >>> gamma = tfprune.strip(pruned).get_layer("bn").gamma.numpy()
    >>> int((gamma == 0).sum())   # their BatchNorm channels too: they output exactly zero
    4
    >>> pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, begin_step=0),
    ...                        sparsities={"fc": 0.25})
    >>> {w.layer.name: w.schedule.target_sparsity for w in pruned.layers
    ...  if isinstance(w, tfprune.PruneLowMagnitude)}
    {'conv': 0.5, 'fc': 0.25}
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise TfpruneError(f"Unknown option {unknown[0]!r} for prune(); options are "
                           f"{_OPTIONS}. Received: {unknown[0]}={options[unknown[0]]!r}")
    schedule = schedules.get(schedule)
    chosen = plan(model, granularity, layers)
    own = _own_schedules(schedule, sparsities or {}, chosen, model)
    pairs = []

    def clone_function(layer):
        if not isinstance(layer, keras.layers.Layer):
            return clone_layer(layer)  # a keras.ops call: no weights, nothing to prune
        new = clone_layer(layer)
        pairs.append((layer.get_weights(), new))
        if layer.name in chosen:
            return PruneLowMagnitude(new, own.get(layer.name, schedule), chosen[layer.name],
                                     **options)
        return new

    pruned = keras.models.clone_model(model, clone_function=clone_function)
    _copy_weights(pairs)
    return pruned


def _own_schedules(schedule, sparsities, chosen, model):
    """Layer name -> its schedule, for the layers `sparsities` names."""
    unpruned = sorted(set(sparsities) - set(chosen))
    if unpruned:
        names = {layer.name for layer in model.layers}
        missing = [name for name in unpruned if name not in names]
        why = (f"names layers model {model.name!r} does not have: {missing}" if missing else
               f"names layers that are not pruned (granularity or layers leave them out): "
               f"{unpruned}")
        raise TfpruneError(f"`sparsities` {why}. Received: sparsities={sparsities!r}")
    return {name: schedule.ending_at(sparsity) for name, sparsity in sparsities.items()}


def _warn_if_unpruned(model):
    """Warns about wrappers whose masks cannot have moved yet: pruning silently did nothing.

    A step of -1 means no `UpdatePruningStep` ever ran (the callback was left out of `fit`,
    or the model was not fit); a step before the schedule's `begin_step` means training
    stopped before pruning began. Masks set by hand (`update_masks`) count as pruned.
    """
    never, early = [], []
    for layer in model.layers:
        if not isinstance(layer, PruneLowMagnitude) or not layer.built or not layer.prunable:
            continue  # a follower (a BatchNorm) is pruned with the filters it follows
        if any(not np.all(np.asarray(mask) == 1) for mask in layer.masks):
            continue
        step, begin = layer.current_step(), getattr(layer.schedule, "begin_step", None)
        if step < 0:
            never.append(layer.layer.name)
        elif isinstance(begin, int) and step < begin:
            early.append(f"{layer.layer.name!r} at step {step} < begin_step {begin}")
    if never:
        warnings.warn(
            f"Layers {never} were never pruned (pruning step -1: fit ran without "
            "tfprune.UpdatePruningStep(), or not at all), so their masks are all ones: fit "
            "with callbacks=[tfprune.UpdatePruningStep()].", stacklevel=3)
    if early:
        warnings.warn(
            f"Pruning has not begun for layers {', '.join(early)}, so their masks are all "
            "ones: fit for more steps or lower the schedule's begin_step.", stacklevel=3)


def strip(model):
    """A plain Keras model: every `PruneLowMagnitude` replaced by its layer, kernels masked.

    The inverse of `prune`: the layers get back their names, and each prunable weight holds
    mask x weight, so its zeros are where pruning put them. The input model is not changed.
    A layer that was never pruned (its `fit` lacked `tfprune.UpdatePruningStep()`, or ended
    before the schedule's `begin_step`) is stripped with a warning that says so.

    Args:
        model: A Sequential or Functional model (pruned or not).

    Returns:
        A new model of the same kind, uncompiled.

    Raises:
        UnsupportedModelError: a subclassed or unbuilt model.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="fc")])
    >>> pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, begin_step=0))
    >>> pruned.compile("sgd", "mse")
    >>> _ = pruned.fit(np.ones((8, 4)), np.ones((8, 8)), verbose=0,
    ...                callbacks=[tfprune.UpdatePruningStep()])
    >>> small = tfprune.strip(pruned)
    >>> [layer.name for layer in small.layers], tfprune.sparsity(small)
    (['fc'], {'fc': 0.5})
    >>> small.save("small.keras")   # a plain Keras model
    """
    LayerGraph.from_model(model)  # raises on subclassed, nested, unbuilt models
    _warn_if_unpruned(model)
    pairs = []

    def clone_function(layer):
        if not isinstance(layer, keras.layers.Layer):
            return clone_layer(layer)  # a keras.ops call
        if isinstance(layer, PruneLowMagnitude):
            new = clone_layer(layer.layer)
            pairs.append((layer.masked_weights(), new))
        else:
            new = clone_layer(layer)
            pairs.append((layer.get_weights(), new))
        return new

    stripped = keras.models.clone_model(model, clone_function=clone_function)
    _copy_weights(pairs)
    return stripped


def _prunable_arrays(layer):
    """`(name, arrays)` of a layer's prunable weights as used (masked), or `None`."""
    if isinstance(layer, PruneLowMagnitude):
        prunable = getattr(layer, "prunable", None)
        return (layer.layer.name, layer.masked_prunable()) if prunable else None
    if REGISTRY.supports(layer) and layer.built:
        return layer.name, [np.asarray(pw.variable) for pw in REGISTRY.prunable_weights(layer)]
    return None


def sparsity(model):
    """The fraction of zeros in each prunable layer's prunable weights (masks applied).

    Args:
        model: A Keras model, pruned (wrapped layers are reported under the wrapped layer's
            name) or plain (e.g. from `strip`).

    Returns:
        A dict `{layer name: float}` in layer order, for every layer with prunable weights
        (kernels; biases are not counted). A wrapper that was never pruned (see `strip`)
        is reported with a warning.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")])
    >>> model.get_layer("fc").set_weights([np.array([[0, 1], [0, 2], [3, 0], [0, 0]]),
    ...                                    np.ones(2)])
    >>> tfprune.sparsity(model)   # 5 of 8 kernel weights are zero; the bias does not count
    {'fc': 0.625}
    """
    _warn_if_unpruned(model)
    result = {}
    for layer in model.layers:
        found = _prunable_arrays(layer)
        if found is None:
            continue
        name, arrays = found
        total = sum(a.size for a in arrays)
        zeros = sum(a.size - np.count_nonzero(a) for a in arrays)
        result[name] = float(zeros / total) if total else 0.0
    return result
