"""What a `.tflite` file holds (`inspect`): its ops, its weight tensors with their sparsity,
quantization and bytes, and its size raw and gzipped.
"""

import dataclasses
from collections import Counter

import numpy as np

from tfprune.errors import TfpruneError
from tfprune.tflite.interpreter import (
    NUMPY_TYPES,
    data_sizes,
    format_table,
    parse,
    read_tflite,
    tensor_name,
)


@dataclasses.dataclass
class TensorInfo:
    """A constant (weight) tensor of a `.tflite` file.

    `bytes` is what the file stores for its values (fewer when stored sparse);
    `index_bytes` what the sparse encoding adds for its segment and index arrays;
    `zero_fraction` is the share of the dense tensor's elements that are zero (equal to the
    zero point when quantized); `densified` says a DENSIFY op expands it at run time.
    """

    name: str
    shape: list
    dtype: str
    bytes: int
    zero_fraction: float
    sparse: bool
    densified: bool
    quantized: str
    index_bytes: int = 0


@dataclasses.dataclass
class TFLiteInfo:
    """What `inspect` finds in a `.tflite` file."""

    path: str
    size_raw: int
    size_gzip: int
    ops: dict
    tensors: list
    inputs: list
    outputs: list

    @property
    def densify(self):
        """True when a DENSIFY op expands sparse weights to dense at run time."""
        return "DENSIFY" in self.ops

    @property
    def sparse_tensors(self):
        return [t for t in self.tensors if t.sparse]

    def tensor(self, substring):
        """The first weight tensor whose name contains `substring`."""
        for t in self.tensors:
            if substring in t.name:
                return t
        raise KeyError(f"No weight tensor of {self.path!r} has {substring!r} in its name; "
                       f"they are {[_scope(t.name) for t in self.tensors]}")

    def to_dict(self):
        return {**dataclasses.asdict(self), "densify": self.densify}

    def __str__(self):
        weights = sum(t.bytes for t in self.tensors)
        index = sum(t.index_bytes for t in self.tensors)
        lines = [f"{self.path}: {self.size_raw:,} bytes, {self.size_gzip:,} gzipped; "
                 f"weights {weights:,} bytes in {len(self.tensors)} tensors"
                 + (f" + {index:,} bytes of sparse indices" if index else ""),
                 "inputs: " + ", ".join(self.inputs), "outputs: " + ", ".join(self.outputs),
                 "ops: " + ", ".join(f"{name} x{n}" for name, n in self.ops.items()),
                 f"sparse tensors: {len(self.sparse_tensors)}; DENSIFY op: "
                 + ("yes (sparse weights densified at run time)" if self.densify else "no")]
        rows = [("tensor", "shape", "dtype", "bytes", "index B", "zeros", "stored", "quant")]
        for t in self.tensors:
            stored = ("sparse+densify" if t.densified else "sparse") if t.sparse else "dense"
            rows.append((_scope(t.name), "x".join(map(str, t.shape)) or "scalar",
                         t.dtype, f"{t.bytes:,}", f"{t.index_bytes:,}",
                         f"{t.zero_fraction:.1%}", stored, t.quantized))
        lines.append(format_table(rows))
        return "\n".join(lines)


def _scope(name):
    """The layer scope of a converter tensor name ("m/conv1/BiasAdd;m/conv1/conv" -> "m/conv1")."""
    first = name.split(";")[0]
    return (first.rsplit("/", 1)[0] if "/" in first else first)[:56]


def inspect(path):
    """What a `.tflite` file holds: ops, weight tensors with their sparsity, sizes.

    Args:
        path: Path to the `.tflite` file.

    Returns:
        A `TFLiteInfo`: `ops` (name -> count), `tensors` (a `TensorInfo` per constant
        tensor: shape, dtype, bytes, fraction of zeros, stored sparse?, densified?),
        `densify`, `size_raw`, `size_gzip`; `str()` of it is a report, `to_dict()` a
        JSON-ready dict.

    Raises:
        TfpruneError: the file is missing, empty, truncated or not a TFLite model.

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
    ...                           keras.layers.Flatten(), keras.layers.Dense(10, name="fc")])
    >>> conv = model.get_layer("conv")
    >>> kernel, bias = conv.get_weights()
    >>> kernel[..., :3] = 0.0   # 3 of the 4 filters
    >>> conv.set_weights([kernel, bias])
    >>> info = tfprune.tflite.inspect(tfprune.tflite.to_tflite(model, "m.tflite", sparse=True))
    >>> info.tensor("conv").zero_fraction, info.tensor("conv").sparse, info.densify
    (0.75, True, True)
    >>> print(info)
    m.tflite: ... bytes, ... gzipped; weights ... bytes in ... tensors + ... bytes of sparse indices
    ...
    ops: DENSIFY x1, CONV_2D x1, ...
    """
    data = read_tflite(path)
    model, names = parse(data, path)
    try:
        graph = model.subgraphs[0]
        ops = Counter(names[op.opcodeIndex] for op in graph.operators or [])
        densified = {op.inputs[0] for op in graph.operators or []
                     if names[op.opcodeIndex] == "DENSIFY"}
        tensors = [info for i, t in enumerate(graph.tensors or [])
                   if (info := _tensor_info(t, model.buffers, data, i in densified))]
        inputs = [_io(graph.tensors[i]) for i in graph.inputs]
        outputs = [_io(graph.tensors[i]) for i in graph.outputs]
    except Exception as e:  # flatbuffers reads past the end of a truncated file in many ways
        raise TfpruneError(f"Cannot parse {str(path)!r} as a TFLite model ({e}): the file is "
                           "truncated or corrupt; export it again.") from None
    raw, gz = data_sizes(data)
    return TFLiteInfo(str(path), raw, gz, dict(ops), tensors, inputs, outputs)


_INT4 = 17  # schema TensorType.INT4: packed two values a byte, no NumPy type


def _tensor_info(tensor, buffers, data, densified):
    buffer = buffers[tensor.buffer] if tensor.buffer < len(buffers) else None
    if buffer is None:
        return None
    if buffer.offset > 1:  # large models keep buffers after the flatbuffer
        raw = np.frombuffer(data[buffer.offset:buffer.offset + buffer.size], np.uint8)
    else:
        raw = np.asarray(buffer.data if buffer.data is not None else [], np.uint8)
    if raw.size == 0:
        return None
    dtype = NUMPY_TYPES.get(tensor.type)
    shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
    quant = tensor.quantization
    scales = quant.scale if quant is not None and quant.scale is not None else []
    zero_point = 0
    if quant is not None and quant.zeroPoint is not None and len(quant.zeroPoint) == 1:
        zero_point = int(quant.zeroPoint[0])
    zeros = float("nan")
    dense = int(np.prod(shape)) if shape else 1
    if tensor.type == _INT4:  # two values a byte, low nibble first, sign-extended
        nibbles = np.stack([raw & 0xF, raw >> 4], axis=-1).reshape(-1)[:dense].astype(np.int8)
        values = np.where(nibbles > 7, nibbles - 16, nibbles)
        zeros = 1.0 - int(np.count_nonzero(values != zero_point)) / dense if dense else 0.0
    elif dtype is not None and raw.size % np.dtype(dtype).itemsize == 0:
        values = raw.view(dtype)
        nonzero = int(np.count_nonzero(values != zero_point))
        zeros = 1.0 - nonzero / dense if dense else 0.0
    quantized = "" if len(scales) == 0 else ("per-channel" if len(scales) > 1 else "per-tensor")
    name = tensor_name(tensor)
    kind = "int4" if tensor.type == _INT4 else np.dtype(dtype).name if dtype else \
        f"type{tensor.type}"
    return TensorInfo(name, shape, kind,
                      int(raw.size), zeros, tensor.sparsity is not None, densified, quantized,
                      _index_bytes(tensor.sparsity))


def _index_bytes(sparsity):
    """Bytes of the segment and index arrays of a sparse tensor's dimension metadata."""
    total = 0
    for dim in (sparsity.dimMetadata or []) if sparsity is not None else []:
        for vector in (dim.arraySegments, dim.arrayIndices):
            values = getattr(vector, "values", None)
            if values is not None:
                total += np.asarray(values).nbytes
    return int(total)


def _io(tensor):
    name = tensor_name(tensor)
    shape = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
    dims = "x".join("?" if d == -1 else str(d) for d in shape)
    return f"{name} {dims} {np.dtype(NUMPY_TYPES.get(tensor.type, np.uint8)).name}"


