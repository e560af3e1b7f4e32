"""Parameters, non-zero parameters and MACs (multiply-accumulates) per layer and in total.

MACs are counted for one example (batch 1) by each layer's handler (`tfprune.handlers`):
Conv1D/2D/3D, Conv1DTranspose/2D/3D, DepthwiseConv1D/2D, SeparableConv1D/2D, Dense and
registered custom producers count `positions * kernel size`, where positions are the
output positions (the input positions for a transposed convolution, the leading axes for
Dense). Element-wise layers (BatchNorm, activations, pooling, Add) count 0 MACs: merging
folds most of them away and they are cheap. A `PruneLowMagnitude` wrapper is counted as
the layer it wraps (its masks and step counter are not parameters of the model that ships).
"""

import dataclasses

import numpy as np

from tfprune.graph import LayerGraph
from tfprune.handlers import REGISTRY
from tfprune.pruning.wrapper import unwrap


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

    >>> import tfprune
    >>> import tfprune.models
    >>> counts = tfprune.bench.count(tfprune.models.lenet5())
    >>> counts.macs, counts["conv1"].macs, counts["pool1"].macs
    (2293000, 288000, 0)
    """
    graph = LayerGraph.from_model(model)
    rows = []
    for node in graph.layers():
        layer = unwrap(node.layer)
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
    """MACs of one call of `layer` on one example, from its input and output shapes.

    Example:

    >>> import keras
    >>> dense = keras.layers.Dense(3)
    >>> dense.build((None, 5, 4))
    >>> layer_macs(dense, (None, 5, 4), (None, 5, 3))  # 5 positions x 4 inputs x 3 units
    60
    """
    layer = unwrap(layer)
    return REGISTRY.lookup(layer).macs(layer, input_shape, output_shape)


def _nonzero(outer, inner, weights):
    """Non-zeros of `inner`'s weights, with a pruning wrapper's masks applied if it has any."""
    if outer is not inner and hasattr(outer, "masked_weights"):
        weights = outer.masked_weights()
    return int(sum(np.count_nonzero(w) for w in weights))
