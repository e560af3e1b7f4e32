"""Parameters, non-zero parameters and MACs (multiply-accumulates) per layer and in total.

MACs are counted for one example (batch 1) for the layers that do the arithmetic:
Conv1D/2D/3D, Conv1DTranspose/2D/3D, DepthwiseConv1D/2D, SeparableConv1D/2D and Dense,
as `positions * kernel size`, where positions are the output positions (the input positions
for a transposed convolution, the leading axes for Dense). Element-wise layers (BatchNorm,
activations, pooling, Add) count 0 MACs: merging folds most of them away and they are cheap.
A `PruneLowMagnitude` wrapper is counted as the layer it wraps (its masks and step counter are
not parameters of the model that ships).
"""

import dataclasses

import keras
import numpy as np

from tfprune.graph import LayerGraph

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_CONV_T = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
           keras.layers.Conv3DTranspose)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


@dataclasses.dataclass
class LayerCount:
    """One layer's counts.

    Attributes:
        name: The layer's name.
        type: The layer's class name (the wrapped layer's, for a pruning wrapper).
        output_shape: The output shape, batch axis excluded.
        params: Number of parameters (trainable and not, e.g. BatchNorm statistics).
        nonzero: Number of parameters that are not exactly zero.
        macs: Multiply-accumulates for one example.
    """

    name: str
    type: str
    output_shape: tuple
    params: int
    nonzero: int
    macs: int


class Counts:
    """Per-layer `LayerCount` rows and their totals.

    Attributes:
        rows: List of `LayerCount`, in the model's topological order.
    """

    def __init__(self, rows, name=None):
        self.rows = list(rows)
        self.name = name

    @property
    def params(self):
        return sum(r.params for r in self.rows)

    @property
    def nonzero(self):
        return sum(r.nonzero for r in self.rows)

    @property
    def macs(self):
        return sum(r.macs for r in self.rows)

    @property
    def sparsity(self):
        """Fraction of parameters that are zero."""
        return 1.0 - self.nonzero / self.params if self.params else 0.0

    def __getitem__(self, name):
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def to_dict(self):
        """Plain dict (JSON-ready): totals and one dict per layer."""
        return {
            "name": self.name,
            "params": self.params,
            "nonzero": self.nonzero,
            "macs": self.macs,
            "sparsity": self.sparsity,
            "layers": [
                {**dataclasses.asdict(r), "output_shape": list(r.output_shape)}
                for r in self.rows
            ],
        }

    def __str__(self):
        header = ("layer", "type", "output", "params", "nonzero", "MACs")
        lines = [
            (r.name, r.type, "x".join("?" if d is None else str(d) for d in r.output_shape),
             f"{r.params:,}", f"{r.nonzero:,}", f"{r.macs:,}")
            for r in self.rows
        ]
        lines.append(("total", "", "", f"{self.params:,}", f"{self.nonzero:,}",
                      f"{self.macs:,}"))
        widths = [max(len(row[i]) for row in [header, *lines]) for i in range(6)]
        fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
        out = [fmt.format(*header), "  ".join("-" * w for w in widths)]
        out += [fmt.format(*row) for row in lines]
        return "\n".join(out)

    __repr__ = __str__


def count(model):
    """Counts parameters, non-zero parameters and MACs of every layer of `model`.

    Args:
        model: A built Sequential or Functional Keras model (pruning wrappers allowed).

    Returns:
        A `Counts`: `.rows` per layer, `.params`, `.nonzero`, `.macs` totals, a table as
        `str()` and `.to_dict()`.

    Raises:
        UnsupportedModelError: a subclassed, unbuilt or nested model.

    Example:

    >>> counts = tfprune.bench.count(tfprune.models.lenet5())
    >>> counts.macs
    2293000
    """
    graph = LayerGraph.from_model(model)
    rows = []
    for node in graph.layers():
        layer = _inner(node.layer)
        weights = [np.asarray(w) for w in layer.get_weights()]
        rows.append(LayerCount(
            name=node.name,
            type=type(layer).__name__,
            output_shape=tuple(node.output_shape[1:]),
            params=int(sum(w.size for w in weights)),
            nonzero=_nonzero(node.layer, layer, weights),
            macs=layer_macs(layer, node.input_shapes[0], node.output_shape),
        ))
    return Counts(rows, name=model.name)


def layer_macs(layer, input_shape, output_shape):
    """MACs of one call of `layer` on one example, from its input and output shapes."""
    layer = _inner(layer)
    if isinstance(layer, _SEPARABLE):
        size = int(np.prod(layer.depthwise_kernel.shape) + np.prod(layer.pointwise_kernel.shape))
        return _positions(layer, output_shape) * size
    if isinstance(layer, _CONV_T):
        return _positions(layer, input_shape) * int(np.prod(layer.kernel.shape))
    if isinstance(layer, (*_CONV, *_DEPTHWISE)):
        return _positions(layer, output_shape) * int(np.prod(layer.kernel.shape))
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(input_shape[1:-1], dtype=np.int64)) * int(np.prod(layer.kernel.shape))
    return 0


def _positions(layer, shape):
    """Product of the spatial axes of `shape` (batch and channel axes excluded)."""
    first = getattr(layer, "data_format", "channels_last") == "channels_first"
    spatial = shape[2:] if first else shape[1:-1]
    return int(np.prod(spatial, dtype=np.int64))


def _inner(layer):
    """The layer a pruning wrapper (any `keras.layers.Wrapper`) wraps, else `layer`."""
    while isinstance(layer, keras.layers.Wrapper) and isinstance(
            getattr(layer, "layer", None), keras.layers.Layer):
        layer = layer.layer
    return layer


def _nonzero(outer, inner, weights):
    """Non-zeros of `inner`'s weights, with a pruning wrapper's masks applied if it has any."""
    if outer is not inner and hasattr(outer, "masked_weights"):
        weights = outer.masked_weights()
    return int(sum(np.count_nonzero(w) for w in weights))
