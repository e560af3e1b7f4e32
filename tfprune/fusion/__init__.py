"""Streamline merging: fold non-tensor layers into the tensor layers next to them.

`fuse(model)` returns a new model with the same outputs and fewer layers: BatchNorm folded
into convolutions and dense layers (after or before them), Rescaling and Normalization
folded into the layer they feed, dropout and noise removed, activation layers moved into
the layer before, linear chains and parallel branches collapsed, explicit zero padding
turned into padding='same', convolutions absorbing the average pooling after them. With
`approximate=True` it also applies DeepRebirth's merges (conv -> max/average pooling as
one strided conv), which change the outputs: retrain after. `plan(model)` lists the same
steps without building anything, and prints as a readable plan.

Which layers are tensor layers of which kind, which are the identity at inference and which
equal an `activation=` comes from the layer handlers (`tfprune.handlers`), read for exact
types only: a subclass may override `call`.

Pruned models: `PruneLowMagnitude` wrappers are stripped first (their masks applied to
the weights). Merging changes kernel shapes, so masks could not follow; the fused model's
zeros are kept wherever a fold only scales a kernel. Prune again after fusing if needed.
"""

from tfprune.errors import TfpruneError
from tfprune.fusion.step import FusionPlan, Step
from tfprune.fusion.walker import Options, walk
from tfprune.graph import LayerGraph
from tfprune.options import POOL_KERNELS
from tfprune.pruning.model import strip
from tfprune.pruning.wrapper import PruneLowMagnitude

__all__ = ["FusionPlan", "Step", "fuse", "plan"]


def fuse(model, approximate=False, pool_kernel="grown", pool_activation="relu"):
    """A new model with non-tensor layers merged into the tensor layers next to them.

    The caller's model is never modified; the result shares no layers or weights with it.

    Args:
        model: A built Sequential or Functional Keras model (pruning wrappers allowed).
        approximate: Boolean, defaults to `False`. Also merge conv (+activation) -> pooling
            into one strided conv. This changes outputs: retrain after.
        pool_kernel: String, defaults to `"grown"`. How an approximate pooling merge
            starts: `"grown"` (kernel k+p-1, initialised from the exact average-pool merge)
            or `"original"` (kernel k, the conv's own weights).
        pool_activation: String or `None`, defaults to `"relu"`. The activation a merged
            conv gets when a max pool after a conv with no activation is merged into it
            (the max was the only nonlinearity there); `None` keeps the conv linear.

    Returns:
        A new `keras.Sequential` if `model` was one and stays a chain, else a Functional
        model. It is not compiled.

    Raises:
        UnsupportedModelError: a subclassed, unbuilt or nested model, or shared layers.
        TfpruneError: a bad `pool_kernel`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import tfprune
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"),
    ...     keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(name="relu")])
    >>> fused = tfprune.fuse(model)
    >>> [layer.name for layer in fused.layers]
    ['conv']
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    >>> np.testing.assert_allclose(fused(x), model(x), rtol=1e-5, atol=1e-5)
    """
    graph, _ = _walk(model, approximate, pool_kernel, pool_activation)
    return graph.to_model()


def plan(model, approximate=False, pool_kernel="grown", pool_activation="relu"):
    """The merges `fuse` would make, then the layers it would leave alone and why.

    Args and Raises: as `fuse`.

    Returns:
        A `FusionPlan`: a list of `Step`s (merges first) that prints as a plan;
        `str(step)` reads e.g.
        `"conv1 + pool1 -> conv1 (5x5 s1 -> 6x6 s2 + relu), approximate"` or
        `"flatten: left alone (no rule merges Flatten)"`.

    Example:

    >>> import tfprune
    >>> import tfprune.models
    >>> print(tfprune.fusion.plan(tfprune.models.lenet5(), approximate=True))
    Fusion plan for 'lenet5' (exact and approximate merges):
      conv1 + pool1 -> conv1 (5x5 s1 -> 6x6 s2 + relu), approximate
      conv2 + pool2 -> conv2 (5x5 s1 -> 6x6 s2 + relu), approximate
      leaves flatten: no rule merges Flatten
    """
    graph, steps = _walk(model, approximate, pool_kernel, pool_activation)
    return FusionPlan(steps, model.name, bool(approximate))


def _walk(model, approximate, pool_kernel, pool_activation):
    if pool_kernel not in POOL_KERNELS:
        raise TfpruneError(f"pool_kernel must be one of {POOL_KERNELS}. "
                           f"Received: pool_kernel={pool_kernel!r}")
    if pool_activation is not None and not isinstance(pool_activation, str):
        raise TfpruneError("pool_activation must be an activation name or None. "
                           f"Received: pool_activation={pool_activation!r}")
    graph = LayerGraph.from_model(_stripped(model))
    options = Options(bool(approximate), pool_kernel, pool_activation)
    steps = walk(graph, options)
    return graph, steps


def _stripped(model):
    """The model without pruning wrappers (or the model itself if it has none)."""
    if any(isinstance(layer, PruneLowMagnitude) for layer in model.layers):
        return strip(model)
    return model
