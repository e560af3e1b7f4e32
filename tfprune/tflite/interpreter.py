"""A `.tflite` file and the LiteRT interpreter: read and check a file, size it, load it.

The layer every measurement stands on: the rest of `tflite` (conversion, accuracy and
inspection of a file), `micro` (the TFLite Micro interpreter) and `bench` (latency) import
it, and it imports none of them. Loading runs the default XNNPACK delegate when it takes the
model and falls back to the builtin kernels, saying why, when it does not. `parse` reads a
file's graph for those that look inside it; `quantize` and `dequantize` map arrays through
a tensor's scale and zero point; `format_table` is the plain-text table they print their
findings in.
"""

import gzip
import re
from pathlib import Path

import numpy as np

from tfprune.compat import LiteRtApiChanged, node_details
from tfprune.errors import TfpruneError

DELEGATES = ("xnnpack", "builtin")
_TFLITE_IDENTIFIER = b"TFL3"
# TFLite's tensor type codes (schema `TensorType`) -> NumPy types.
NUMPY_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64,
               6: np.bool_, 7: np.int16, 9: np.int8, 10: np.float64, 12: np.uint64,
               15: np.uint32, 16: np.uint16}


def file_sizes(path):
    """Size of a file in bytes, raw and gzipped (level 9) as a download would be.

    Args:
        path: Path to the file.

    Returns:
        A tuple `(raw_bytes, gzip_bytes)` of integers.

    Raises:
        TfpruneError: the file is missing.

    Example:

    >>> with open("zeros.bin", "wb") as f:
    ...     _ = f.write(bytes(10_000))
    >>> raw, gz = tfprune.bench.file_sizes("zeros.bin")
    >>> raw, gz < 100
    (10000, True)
    """
    return data_sizes(_read(path))


def data_sizes(data):
    """`(raw_bytes, gzip_bytes)` of bytes already in memory (gzip level 9, as `file_sizes`)."""
    return len(data), len(gzip.compress(data, compresslevel=9, mtime=0))


def read_tflite(path):
    """Returns the bytes of a `.tflite` file after checking that it is one.

    Args:
        path: Path to the file.

    Returns:
        The file's bytes.

    Raises:
        TfpruneError: the file is missing, empty, or not a TFLite flatbuffer.
    """
    data = _read(path)
    if not data:
        raise TfpruneError(f"File {str(path)!r} is empty: export the model again "
                           "(tfprune.tflite.to_tflite).")
    if len(data) < 8 or data[4:8] != _TFLITE_IDENTIFIER:
        raise TfpruneError(f"File {str(path)!r} is not a TFLite model (no 'TFL3' identifier): "
                           "pass a .tflite file written by the TFLite converter.")
    return data


def parse(data, path):
    """The graph of a `.tflite` file's bytes, as the flatbuffer schema's object API reads it.

    Args:
        data: The file's bytes (from `read_tflite`).
        path: Its path, for the error message.

    Returns:
        A tuple `(model, op_names)`: the schema's `ModelT`, and the name of each of its
        operator codes (`"CONV_2D"`; a custom op's own name), indexed by `opcodeIndex`.

    Raises:
        TfpruneError: the bytes are truncated or corrupt.
    """
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
        codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        names = []
        for code in model.operatorCodes or []:
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            name = codes.get(builtin, f"BUILTIN_{builtin}")
            names.append(code.customCode.decode() if name == "CUSTOM" and code.customCode
                         else name)
        model.subgraphs[0]  # noqa: B018 (a model without a graph is corrupt too)
    except Exception as e:  # flatbuffers reads past the end of a truncated file in many ways
        raise TfpruneError(f"Cannot parse {str(path)!r} as a TFLite model ({e}): the file is "
                           "truncated or corrupt; export it again.") from None
    return model, names


def tensor_name(tensor):
    """A flatbuffer tensor's name as a string."""
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name)


def quantize(x, dtype, scale, zero_point):
    """`x` as a tensor of `dtype` takes it: rounded and clipped through `scale` and
    `zero_point` when `dtype` is an integer type with a scale, else just cast.

    Example:

    >>> tfprune.tflite.interpreter.quantize(np.array([0.0, 0.5, 2.0]), np.int8, 1 / 255, -128)
    array([-128,   0,  127], dtype=int8)
    """
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.integer) or not scale:
        return np.asarray(x).astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(x) / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(y, scale, zero_point):
    """An output tensor's values as float32: through `scale` and `zero_point` when quantized."""
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32)


def classes(y):
    """Predicted classes of a batch of outputs: argmax, or `> 0.5` for one sigmoid unit."""
    y = np.asarray(y).reshape(len(y), -1)
    return (y[:, 0] > 0.5).astype(np.int64) if y.shape[1] == 1 else np.argmax(y, axis=1)


def load_interpreter(path, threads=None, delegate="xnnpack"):
    """A LiteRT interpreter for a `.tflite` file, tensors allocated, with XNNPACK fallback.

    Args:
        path: Path to the `.tflite` file.
        threads: Integer or `None` (the interpreter's default), defaults to `None`.
        delegate: String, `"xnnpack"` (the default CPU delegate) or `"builtin"` (the builtin
            kernels only, `BUILTIN_WITHOUT_DEFAULT_DELEGATES`), defaults to `"xnnpack"`.

    Returns:
        A tuple `(interpreter, delegate_used, note)`: `delegate_used` is `"xnnpack"` when the
        delegate took at least one op, else `"builtin"`; `note` says why they differ, or is
        `""`.

    Raises:
        TfpruneError: the file is missing, empty, truncated or not a TFLite model, or
            `delegate` is unknown.
    """
    from ai_edge_litert import interpreter as litert

    if delegate not in DELEGATES:
        raise TfpruneError(f"Unknown delegate: use one of {DELEGATES}. Received: "
                           f"delegate={delegate!r}")
    data = read_tflite(path)
    check_tensors(data, path)
    builtin = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if delegate == "builtin":
        return _allocated(litert, data, path, threads, builtin), "builtin", ""
    try:
        interpreter = _allocated(litert, data, path, threads, litert.OpResolverType.AUTO)
    except _DelegateFailure as e:
        interpreter = _allocated(litert, data, path, threads, builtin)
        return interpreter, "builtin", f"XNNPACK failed to prepare ({e}); ran builtin kernels"
    if not _delegated(interpreter):
        return interpreter, "builtin", "XNNPACK took no ops; ran builtin kernels"
    return interpreter, "xnnpack", ""


# Bytes per value of each TFLite tensor type (schema TensorType) a sparse tensor may hold.
_ITEMSIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 7: 2, 9: 1, 10: 8, 12: 8, 15: 4, 16: 2, 18: 2}


def check_tensors(data, path="<bytes>"):
    """Checks what the interpreter trusts in a `.tflite` file's tensors before it loads it.

    Every tensor's name must be UTF-8 text (the interpreter's Python API decodes it and
    fails on anything else). And the interpreter's DENSIFY kernel trusts a sparse tensor's
    metadata (traversal order, block map, CSR segments and indices) and writes where the
    indices say: a corrupt file makes it write past its buffer and crash the process, at
    once or later. So every level must fit the tensor's shape, every index its dimension,
    and the stored values their count.

    Args:
        data: The file's bytes.
        path: The file's name, for the message.

    Raises:
        TfpruneError: a sparse tensor's metadata does not fit it, or the file cannot be read.
    """
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.Model.GetRootAs(data, 0)
        for s in range(model.SubgraphsLength()):
            graph = model.Subgraphs(s)
            for t in range(graph.TensorsLength()):
                tensor = graph.Tensors(t)
                try:
                    (tensor.Name() or b"").decode("utf-8")
                except UnicodeDecodeError:
                    raise _Corrupt(f"tensor {t}'s name is not UTF-8 text") from None
                sparsity = tensor.Sparsity()
                if sparsity is None:
                    continue
                problem = _sparsity_problem(schema, model, tensor, sparsity)
                if problem:
                    raise _Corrupt(f"sparse tensor {tensor.Name().decode()!r}: {problem}")
    except _Corrupt as e:
        raise TfpruneError(f"Cannot load {str(path)!r}: {e}; the file is corrupt: export it "
                           "again.") from None
    except Exception as e:  # flatbuffers reads a corrupt table in many ways
        raise TfpruneError(f"Cannot parse {str(path)!r} as a TFLite model ({first_line(e)}): "
                           "the file is truncated or corrupt; export it again.") from None


class _Corrupt(Exception):
    """A tensor whose name or sparse metadata the interpreter cannot take."""


def _sparsity_problem(schema, model, tensor, sparsity):
    """What is wrong with one tensor's sparsity metadata, or `""`."""
    shape = [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
    order = ([int(d) for d in sparsity.TraversalOrderAsNumpy()]
             if sparsity.TraversalOrderLength() else [])
    blocks = [int(d) for d in sparsity.BlockMapAsNumpy()] if sparsity.BlockMapLength() else []
    rank = len(shape)
    if not rank or any(d <= 0 for d in shape):
        return f"shape {shape} cannot be sparse"
    if sorted(order) != list(range(rank + len(blocks))):
        return f"traversal order {order} is no order of {rank + len(blocks)} dimensions"
    if sparsity.DimMetadataLength() != len(order):
        return f"{sparsity.DimMetadataLength()} dimension records for {len(order)} dimensions"
    if len(set(blocks)) != len(blocks) or any(not 0 <= b < rank for b in blocks):
        return f"block map {blocks} does not fit shape {shape}"
    levels = [sparsity.DimMetadata(i) for i in range(len(order))]
    sizes = dict(enumerate(shape))
    for j, dim in enumerate(blocks):
        block = levels[order.index(rank + j)]
        size = block.DenseSize()
        if block.Format() != schema.DimensionType.DENSE or size <= 0 or shape[dim] % size:
            return f"block {j} of size {size} does not divide dimension {dim} ({shape[dim]})"
        sizes[rank + j], sizes[dim] = size, shape[dim] // size
    count = 1
    for level, dim in zip(levels, order, strict=True):
        size = sizes[dim]
        if level.Format() == schema.DimensionType.DENSE:
            if level.DenseSize() != size:
                return f"dense size {level.DenseSize()} for a dimension of {size}"
            count *= size
            continue
        segments = _index_vector(schema, level.ArraySegmentsType(), level.ArraySegments())
        indices = _index_vector(schema, level.ArrayIndicesType(), level.ArrayIndices())
        if (segments is None or indices is None or len(segments) != count + 1
                or segments[0] != 0 or np.any(np.diff(segments) < 0)
                or segments[-1] != len(indices)):
            return "its segments do not fit its indices"
        if len(indices) and (indices.min() < 0 or indices.max() >= size):
            return f"an index is outside its dimension of {size}"
        count = len(indices)
    if not 0 <= tensor.Buffer() < model.BuffersLength():
        return f"buffer {tensor.Buffer()} does not exist"
    buffer = model.Buffers(tensor.Buffer())
    stored = buffer.DataLength() or int(buffer.Size())
    itemsize = _ITEMSIZE.get(tensor.Type())
    if itemsize and stored != count * itemsize:
        return f"{stored} bytes stored for {count} values"
    return ""


def _index_vector(schema, kind, table):
    """The values of a sparse index vector (int32, uint16 or uint8), or `None`."""
    vector = {1: schema.Int32Vector, 2: schema.Uint16Vector, 3: schema.Uint8Vector}.get(kind)
    if vector is None or table is None:
        return None
    values = vector()
    values.Init(table.Bytes, table.Pos)
    array = values.ValuesAsNumpy()
    return np.asarray(array if not isinstance(array, int) else [], dtype=np.int64)


class _DelegateFailure(Exception):
    """The model loads with the builtin kernels but the default delegate rejects it."""


def _make_interpreter(litert, data, threads, resolver):
    """Builds and allocates an interpreter (a seam tests use to make XNNPACK fail).

    With the default delegate it also runs once on random input: XNNPACK prepares some
    kernels (sparse int8 fully-connected ones, for instance) only at the first `invoke`.
    """
    interpreter = litert.Interpreter(model_content=bytes(data), num_threads=threads,
                                     experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    if resolver == litert.OpResolverType.AUTO:
        for detail, x in zip(interpreter.get_input_details(), random_inputs(interpreter),
                             strict=True):
            interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
    return interpreter


def _allocated(litert, data, path, threads, resolver):
    try:
        return _make_interpreter(litert, data, threads, resolver)
    except (ValueError, RuntimeError) as e:
        reason = first_line(e)
        if resolver == litert.OpResolverType.AUTO and _loads_without_delegate(litert, data):
            raise _DelegateFailure(reason) from e
        raise TfpruneError(f"Cannot load {str(path)!r} with the LiteRT interpreter ({reason}): "
                           "the file is truncated or corrupt; export it again.") from e


def _loads_without_delegate(litert, data):
    try:
        _make_interpreter(litert, data, 1, litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except (ValueError, RuntimeError):
        return False
    return True


def _delegated(interpreter):
    try:
        return any(op["op_name"] == "DELEGATE" for op in node_details(interpreter))
    except LiteRtApiChanged:  # if LiteRT's listing changes, assume the delegate ran
        return True


def delegated_ops(nodes):
    """The indices of the ops a delegate replaced, from `node_details`.

    LiteRT lists the ops a delegate replaced beside its DELEGATE node; those are the ops
    upstream of the DELEGATE node's outputs, back to its inputs.
    """
    replaced = set()
    for delegate in (op for op in nodes if op["op_name"] == "DELEGATE"):
        wanted, stop = set(delegate["outputs"]), set(delegate["inputs"])
        for op in reversed(nodes):
            if op["op_name"] != "DELEGATE" and wanted & set(op["outputs"]):
                replaced.add(op["index"])
                wanted |= set(op["inputs"]) - stop
    return replaced


def undelegated_ops(interpreter):
    """The ops an interpreter runs on its builtin kernels, in order (the delegates' aside).

    Returns:
        A list of op names; `[]` when LiteRT's private op listing is unavailable (then
        assume the delegate took them all).
    """
    try:
        ops = node_details(interpreter)
    except LiteRtApiChanged:
        return []
    replaced = delegated_ops(ops)
    return [op["op_name"] for op in ops
            if op["op_name"] != "DELEGATE" and op["index"] not in replaced]


def _read(path):
    path = Path(path)
    if not path.is_file():
        raise TfpruneError(f"File {str(path)!r} does not exist: check the path.")
    return path.read_bytes()


def first_line(error):
    """The first line of an interpreter error, at most 300 characters, for a one-line message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = lines[0] if lines else type(error).__name__
    # LiteRT glues its messages together ("...node #4failed to ..."): separate them.
    return re.sub(r"(#\d+)(?=[A-Za-z])", r"\1; ", line)[:300]


def random_inputs(interpreter, seed=0):
    """Random data for each input of an allocated interpreter, in its dtype and range."""
    rng = np.random.default_rng(seed)
    inputs = []
    for detail in interpreter.get_input_details():
        dtype, shape = np.dtype(detail["dtype"]), detail["shape"]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            inputs.append(rng.integers(max(info.min, -128), min(info.max, 127) + 1,
                                       size=shape).astype(dtype))
        else:
            inputs.append(rng.random(shape).astype(dtype))
    return inputs


def format_table(rows):
    """Left-aligned columns, two spaces apart: the first row is the header.

    Example:

    >>> print(tfprune.tflite.interpreter.format_table([("model", "µs"), ("a.tflite", "8.1")]))
    model     µs
    a.tflite  8.1
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)
