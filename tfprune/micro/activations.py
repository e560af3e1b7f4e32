"""A `.tflite` file's peak activation memory from its tensors' lifetimes (`activation_peak`):
which tensors fill a TFLite Micro arena; no package needed.
"""

import dataclasses

from tfprune.micro.ops import Graph
from tfprune.tflite.interpreter import tensor_name

_ALIGNMENT = 16  # TFLM aligns every buffer in its arena to 16 bytes


@dataclasses.dataclass
class ActivationPeak:
    """The most activation memory a file's graph needs at once, by tensor lifetimes.

    Each non-constant tensor lives from the op that writes it (the graph's inputs: from the
    start) to the last op that reads it (the graph's outputs: to the end) and takes its
    bytes rounded up to 16, the alignment TFLM gives every buffer; `bytes` is the largest sum
    of live tensors over the ops: the least any planner can lay them out in. TFLM's own
    planner's figure is `measure_arena(...).activations`.

    Attributes:
        bytes: Integer, the peak.
        index: Integer, the op at which it is reached.
        op: String, that op's name.
        layer: String, its Keras layer, or `""`.
        tensors: List of `(tensor name, bytes)` live there, largest first.
    """

    bytes: int
    index: int
    op: str
    layer: str
    tensors: list

    def __str__(self):
        where = f"op {self.index} {self.op}" + (f" (layer {self.layer})" if self.layer else "")
        parts = " + ".join(f"{_short(name)} {size:,}" for name, size in self.tensors)
        return f"{self.bytes:,} bytes at {where}: {parts}"


def activation_peak(path, layers=None):
    """The peak of live activation memory over a `.tflite` file's graph (see `ActivationPeak`).

    Args:
        path: Path to the `.tflite` file.
        layers: Optional list of the Keras model's layer names (see `problems`).

    Returns:
        An `ActivationPeak`.

    Raises:
        TfpruneError: the file is missing, empty, truncated or not a TFLite model.

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
    ...                           keras.layers.Flatten(name="flatten"),
    ...                           keras.layers.Dense(10, name="fc")])
    >>> images = np.random.default_rng(0).random((32, 8, 8, 1), dtype="float32")
    >>> path = tfprune.tflite.to_tflite(model, "m.tflite", target="tflm",
    ...                                 representative_data=images)
    >>> peak = tfprune.micro.activation_peak(path)
    >>> peak.bytes, peak.layer   # conv's int8 output (6x6x4) and its flattened copy
    (288, 'flatten')
    """
    graph = Graph(path)
    last_op = len(graph.ops) - 1
    first, last = {t: 0 for t in graph.inputs}, {}
    for op in graph.ops:
        for t in op.inputs:
            last[t] = op.index
        for t in op.outputs:
            first.setdefault(t, op.index)
    for t in graph.outputs:
        last[t] = last_op
    live = {t: (start, max(start, last.get(t, start))) for t, start in first.items()
            if t not in graph.constant and not graph.tensors[t].isVariable}
    best = None
    for op in graph.ops:
        here = sorted(((graph.nbytes(t, _ALIGNMENT), t) for t, (a, b) in live.items()
                       if a <= op.index <= b), reverse=True)
        total = sum(size for size, _ in here)
        if best is None or total > best[0]:
            best = (total, op, here)
    if best is None:
        return ActivationPeak(0, 0, "", "", [])
    total, op, here = best
    return ActivationPeak(total, op.index, op.name, graph.layer(op, layers),
                          [(tensor_name(graph.tensors[t]), size) for size, t in here])


def _short(name):
    first = name.split(";")[0]
    return first if len(first) <= 48 else "…" + first[-47:]


