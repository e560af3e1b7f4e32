"""TensorFlow Lite for Microcontrollers (TFLM): which ops it has, whether a file fits it, and
the file measured on its interpreter.

A microcontroller runs a `.tflite` file with TFLM out of a fixed "tensor arena" that the app
allocates, and TFLM's own docs say to find the arena's size by experiment. Here the file runs
on TFLM's interpreter built for the host (the `tflite-micro` package) with its recording
allocator, and `measure_arena` reads the bytes that allocator reports: the figure is the
interpreter's, never a formula (`minimal_arena` finds it again by bisection). `problems`
needs no package: it checks each op of a file against `MICRO_OPS`, our own table of the
builtin ops TFLM's op resolver registers, and names the op, why TFLM cannot run it, the Keras
layer it came from and the fix. `predict` and `evaluate` run inputs through TFLM's reference
kernels, one batch of the file's size at a time.
"""

import contextlib
import dataclasses
import os
import re
import sys
import tempfile

import numpy as np

from tfprune.errors import TfpruneError, UnsupportedModelError
from tfprune.interpreter import (
    NUMPY_TYPES,
    classes,
    dequantize,
    first_line,
    load_interpreter,
    parse,
    quantize,
    read_tflite,
    tensor_name,
)

# The builtin ops TFLM's op resolver (`MicroMutableOpResolver`) can register, all of which
# the `tflite-micro` Python runtime registers, named as TFLite's schema names them. Read from
# tflite-micro's sources (August 2026); tests/test_tflm.py checks each against the installed
# runtime. DENSIFY (the converter's sparse encoding) is not among them.
MICRO_OPS = frozenset("""
    ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL
    BATCH_TO_SPACE_ND BROADCAST_ARGS BROADCAST_TO CALL_ONCE CAST CEIL CONCATENATION CONV_2D
    COS CUMSUM DEPTH_TO_SPACE DEPTHWISE_CONV_2D DEQUANTIZE DIV DYNAMIC_UPDATE_SLICE ELU
    EMBEDDING_LOOKUP EQUAL EXP EXPAND_DIMS FILL FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED
    GATHER GATHER_ND GREATER GREATER_EQUAL HARD_SWISH IF L2_NORMALIZATION L2_POOL_2D
    LEAKY_RELU LESS LESS_EQUAL LOG LOG_SOFTMAX LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOGISTIC
    MAX_POOL_2D MAXIMUM MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2 PRELU
    QUANTIZE READ_VARIABLE REDUCE_ALL REDUCE_MAX REDUCE_MIN RELU RELU6 RESHAPE
    RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR REVERSE_V2 ROUND RSQRT SELECT_V2 SHAPE SIN SLICE
    SOFTMAX SPACE_TO_BATCH_ND SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE
    SQUEEZE STRIDED_SLICE SUB SUM SVDF TANH TRANSPOSE TRANSPOSE_CONV
    UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK VAR_HANDLE WHILE ZEROS_LIKE
    """.split())
# Custom ops it registers by name: SSD post-processing, its own decompression, an Arm NPU
# op and audio front-end ops (none of which a Keras CNN converts to).
MICRO_CUSTOM_OPS = frozenset("""
    TFLite_Detection_PostProcess CIRCULAR_BUFFER TFLM_DECODE ethos-u SignalDelay SignalEnergy
    SignalFftAutoScale SignalFilterBank SignalFilterBankLog SignalFilterBankSquareRoot
    SignalFilterBankSpectralSubtraction SignalFramer SignalIrfft SignalOverlapAdd SignalPCAN
    SignalRfft SignalStacker SignalWindow
    """.split())
# Tensor types (schema `TensorType` codes) no TFLM kernel takes.
_TYPES_TFLM_LACKS = {1: "float16", 5: "string", 8: "complex64", 10: "float64",
                     11: "complex128"}
_FLOAT_TYPES = {0: "float32", 1: "float16", 10: "float64"}
_WEIGHT_TYPES = {9, 17}  # int8, int4: weights of a hybrid op
_BOUNDARY_OPS = ("QUANTIZE", "DEQUANTIZE")
_ALIGNMENT = 16  # TFLM aligns every buffer in its arena to 16 bytes
_INSTALL = "pip install 'tfprune[tflm]' (the tflite-micro package)"
_FULL_INT8 = "export full int8 (quantize='int8' with representative data, or target='tflm')"


class TflmUnavailable(TfpruneError):
    """The `tflite-micro` package cannot be imported: nothing can run on TFLM here."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """Why one op of a `.tflite` file does not fit TFLM (or is not full int8).

    Attributes:
        op: String, the op's name (`"DENSIFY"`).
        index: Integer, its position in the graph.
        layer: String, the Keras layer it came from (from the converter's tensor names), or
            `""` when its tensors name none.
        reason: String, what is wrong, completing "<op> (op <index>, layer <layer>) ...".
        fix: String, what to do about it.
    """

    op: str
    index: int
    layer: str
    reason: str
    fix: str

    def __str__(self):
        where = f"op {self.index}" + (f", layer {self.layer}" if self.layer else "")
        return f"{self.op} ({where}) {self.reason}"


def problems(path, layers=None):
    """The ops of a `.tflite` file that TFLM cannot run, each with its layer, reason and fix.

    Checked against `MICRO_OPS` (no package needed): ops TFLM lacks (DENSIFY, Flex and other
    custom ops), tensor types none of its kernels take (float16, float64, strings) and hybrid
    ops (float32 activations with int8 weights, which dynamic-range quantization makes).

    Args:
        path: Path to the `.tflite` file.
        layers: Optional list of the Keras model's layer names, to name an op's layer exactly;
            without it, the layer is read from the converter's tensor names.

    Returns:
        A list of `Problem`s, in graph order; empty when TFLM has a kernel for every op.

    Raises:
        TfpruneError: the file is missing, empty, truncated or not a TFLite model.

    Example:

    >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, name="fc")])
    >>> path = tfprune.export.to_tflite(model, "dynamic.tflite", quantize="dynamic")
    >>> [(p.op, p.layer, p.reason) for p in tfprune.tflm.problems(path)]
    [('FULLY_CONNECTED', 'fc', 'is hybrid (dynamic-range): float32 activations with int8
      weights, which TFLM has no kernel for')]
    """
    graph = _Graph(path)
    found = []
    for op in graph.ops:
        why = _unsupported(graph, op)
        if why:
            found.append(Problem(op.name, op.index, graph.layer(op, layers), *why))
    return found


def int8_problems(path, layers=None):
    """The ops of a `.tflite` file that compute in floating point: it is full int8 when none do.

    A QUANTIZE at the input and a DEQUANTIZE at the output (float input and output) are
    allowed: the model between them computes in int8.

    Args:
        path: Path to the `.tflite` file.
        layers: Optional list of the Keras model's layer names (see `problems`).

    Returns:
        A list of `Problem`s, in graph order.

    Raises:
        TfpruneError: the file is missing, empty, truncated or not a TFLite model.
    """
    graph = _Graph(path)
    found = []
    for op in graph.ops:
        if op.name in _BOUNDARY_OPS:
            continue  # its float side is a graph input/output, or its float neighbour is named
        floats = sorted({_FLOAT_TYPES[graph.tensors[t].type] for t in op.inputs + op.outputs
                         if graph.tensors[t].type in _FLOAT_TYPES})
        if floats:
            found.append(Problem(op.name, op.index, graph.layer(op, layers),
                                 f"computes in {'/'.join(floats)}", _FULL_INT8))
    return found


def check(path, full_int8=True, layers=None, name=None):
    """Raises a one-line error naming every op of the file that does not fit TFLM.

    Args:
        path: Path to the `.tflite` file.
        full_int8: Boolean, also refuse ops that compute in floating point, defaults to
            `True` (what a microcontroller without a floating-point unit needs).
        layers: Optional list of the Keras model's layer names (see `problems`).
        name: The path to name in the message, defaults to `path` (a caller checking a
            temporary file names the file it will become).

    Returns:
        `None`.

    Raises:
        UnsupportedModelError: an op TFLM cannot run (or, with `full_int8`, a float op):
            each named with its layer, then the fixes.
        TfpruneError: the file is missing or not a TFLite model.

    Example:

    >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, name="fc")])
    >>> tfprune.tflm.check(tfprune.export.to_tflite(model, "float.tflite"))
    Traceback (most recent call last):
    ...
    tfprune.errors.UnsupportedModelError: float.tflite does not fit TFLite Micro:
    FULLY_CONNECTED (op 0, layer fc) computes in float32: export full int8 (...).
    Received: path='float.tflite'
    >>> tfprune.tflm.check("float.tflite", full_int8=False)  # TFLM has float kernels
    """
    found = {p.index: p for p in problems(path, layers)}
    if full_int8:
        for p in int8_problems(path, layers):
            found.setdefault(p.index, p)
    if found:
        raise UnsupportedModelError(describe([found[i] for i in sorted(found)], name or path))


def describe(found, path):
    """One line: the file, its first few problems and their fixes (for `check` and callers)."""
    shown = "; ".join(str(p) for p in found[:4])
    more = f" (and {len(found) - 4} more)" if len(found) > 4 else ""
    fixes = " and ".join(dict.fromkeys(p.fix for p in found))
    return (f"{os.path.basename(str(path))} does not fit TFLite Micro: {shown}{more}: {fixes}. "
            f"Received: path={str(path)!r}")


def _unsupported(graph, op):
    """`(reason, fix)` when TFLM cannot run `op`, else `None`."""
    if op.name == "DENSIFY":
        return ("expands the converter's sparse encoding at run time, and TFLM has no DENSIFY "
                "op", "export without the sparse encoding (sparse=False)")
    if op.name.startswith("Flex"):
        return ("is a TensorFlow (Select) op, and TFLM runs builtin ops only",
                "replace the layer with layers made of builtin ops (tfprune.tflm.MICRO_OPS)")
    if op.name not in MICRO_OPS and op.name not in MICRO_CUSTOM_OPS:
        return ("is not an op TFLM has",
                "replace the layer with layers made of ops TFLM has (tfprune.tflm.MICRO_OPS)")
    lacking = sorted({_TYPES_TFLM_LACKS[graph.tensors[t].type] for t in op.inputs + op.outputs
                      if graph.tensors[t].type in _TYPES_TFLM_LACKS})
    if lacking:
        return f"has {'/'.join(lacking)} tensors, which no TFLM kernel takes", _FULL_INT8
    if op.name not in _BOUNDARY_OPS and graph.hybrid(op):
        return ("is hybrid (dynamic-range): float32 activations with int8 weights, which TFLM "
                "has no kernel for", _FULL_INT8)
    return None


@dataclasses.dataclass(frozen=True)
class _Op:
    index: int
    name: str
    inputs: tuple
    outputs: tuple


class _Graph:
    """The main graph of a `.tflite` file: its ops, tensors, and which tensors are constants."""

    def __init__(self, path):
        self.path = path
        model, names = parse(read_tflite(path), path)
        graph = model.subgraphs[0]
        self.tensors = list(graph.tensors or [])
        self.ops = [_Op(i, names[op.opcodeIndex],
                        tuple(int(t) for t in (op.inputs if op.inputs is not None else [])
                              if t >= 0),
                        tuple(int(t) for t in (op.outputs if op.outputs is not None else [])
                              if t >= 0))
                    for i, op in enumerate(graph.operators or [])]
        self.inputs = [int(t) for t in graph.inputs]
        self.outputs = [int(t) for t in graph.outputs]
        buffers = model.buffers or []
        self.constant = {i for i, t in enumerate(self.tensors) if _has_data(buffers, t.buffer)}

    def hybrid(self, op):
        """Float32 activations in, with int8 (or int4) constant weights: dynamic range."""
        activations = [t for t in op.inputs if t not in self.constant]
        return (any(self.tensors[t].type == 0 for t in activations)
                and any(self.tensors[t].type in _WEIGHT_TYPES for t in op.inputs
                        if t in self.constant))

    def layer(self, op, layers=None):
        """The Keras layer an op came from, read from its tensors' names (outputs first)."""
        for t in (*op.outputs, *sorted(op.inputs, key=lambda t: t in self.constant)):
            name = _layer_of(tensor_name(self.tensors[t]), layers)
            if name:
                return name
        return ""

    def nbytes(self, t, align=1):
        """The tensor's bytes, rounded up to a multiple of `align`."""
        tensor = self.tensors[t]
        shape = tensor.shape if tensor.shape is not None else []
        itemsize = np.dtype(NUMPY_TYPES.get(tensor.type, np.uint8)).itemsize
        size = int(np.prod([int(d) for d in shape], dtype=np.int64)) * itemsize
        return -(-size // align) * align


def _has_data(buffers, index):
    if not 0 < index < len(buffers):
        return False
    buffer = buffers[index]
    return buffer.offset > 1 or (buffer.data is not None and len(buffer.data) > 0)


def _layer_of(name, layers):
    """"lenet5_1/conv1_1/Relu;..." -> "conv1": the scope the converter gave the op.

    Tracing appends `_<n>` to each scope; with the model's layer names, the scope that is
    one of them (with or without that suffix) is taken, else the scope under the model's.
    """
    scopes = name.split(";")[0].split("/")[:-1]
    if layers:
        for scope in scopes:
            for layer in layers:
                if re.fullmatch(re.escape(layer) + r"(_\d+)?", scope):
                    return layer
        return ""
    return re.sub(r"_\d+$", "", scopes[min(1, len(scopes) - 1)]) if scopes else ""


# ----------------------------------------------------------------------------- activations


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
    >>> path = tfprune.export.to_tflite(model, "m.tflite", target="tflm",
    ...                                 representative_data=images)
    >>> peak = tfprune.tflm.activation_peak(path)
    >>> peak.bytes, peak.layer   # conv's int8 output (6x6x4) and its flattened copy
    (288, 'flatten')
    """
    graph = _Graph(path)
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


# ----------------------------------------------------------------------------- the interpreter


def runtime():
    """The `tflite-micro` package's runtime module.

    Raises:
        TflmUnavailable: the package cannot be imported (one line, naming the install).
    """
    try:
        from tflite_micro.python.tflite_micro import runtime as micro
    except Exception as e:  # ImportError, or the native library failing to load
        raise TflmUnavailable(f"TFLite Micro is not available ({first_line(e)}): {_INSTALL} "
                              "to measure on it.") from None
    return micro


def available():
    """`""` when the `tflite-micro` package imports, else the one-line reason it does not."""
    try:
        runtime()
    except TflmUnavailable as e:
        return str(e)
    return ""


def version():
    """The `tflite-micro` package's version (it names its build date), or `None`."""
    try:
        import tflite_micro

        return tflite_micro.__version__
    except Exception:  # not installed: the caller has said so already
        return None


@contextlib.contextmanager
def _stderr_captured():
    """Sends file descriptor 2 (where TFLM's C++ code prints) to a buffer for the block.

    Yields a list that holds the captured text once the block ends.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    captured = []
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read().decode(errors="replace"))


def _log_line(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


class _Micro:
    """A TFLM interpreter for one file, with its single input and output described."""

    def __init__(self, path):
        micro = runtime()
        self.path, data = str(path), read_tflite(path)
        # TFLM trusts its file (it has no flatbuffer verifier): a corrupt one may crash the
        # process. LiteRT verifies the flatbuffer, the sparse tensors and every op's shapes
        # when it allocates, so a file it cannot run never reaches TFLM.
        load_interpreter(path, threads=1, delegate="builtin")
        size = max(1 << 24, 4 * len(data))  # ample: the recording allocator says what is used
        with _stderr_captured() as log:
            try:
                self.interpreter = micro.Interpreter.from_bytes(bytes(data), arena_size=size)
                error = None
            except Exception as e:  # noqa: BLE001 (its Python side parses the file too, and
                error = e            # a damaged one fails there in any way: struct, type...)
        if error is not None:
            found = problems(path)
            if found:
                raise UnsupportedModelError(describe(found, path)) from None
            raise TfpruneError(f"TFLite Micro cannot load {self.path!r} "
                               f"({_log_line(log[0]) or first_line(error)}): check the file "
                               "with tfprune-inspect, or export it with target='tflm'.")
        self.input = self.interpreter.get_input_details(0)
        self.output = self.interpreter.get_output_details(0)
        self.shape = tuple(int(d) for d in self.input["shape"])

    def scale(self, detail):
        q = detail["quantization_parameters"]
        scales, zero_points = q["scales"], q["zero_points"]
        return (float(scales[0]), int(zero_points[0])) if len(scales) else (0.0, 0)

    def invoke(self, *batches):
        """Runs batches already in the input's dtype and shape; returns their raw outputs."""
        outputs, error = [], None
        with _stderr_captured() as log:  # once for all: TFLM prints only when it fails
            try:
                for x in batches:
                    self.interpreter.set_input(x, 0)
                    self.interpreter.invoke()
                    outputs.append(np.array(self.interpreter.get_output(0)))
            except (RuntimeError, ValueError) as e:
                error = e
        if error is not None:
            raise TfpruneError(f"TFLite Micro failed to run {self.path!r} "
                               f"({_log_line(log[0]) or first_line(error)}): export it again "
                               "with target='tflm'.")
        return outputs

    def random_input(self, seed=0):
        rng = np.random.default_rng(seed)
        dtype = np.dtype(self.input["dtype"])
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            return rng.integers(info.min, info.max + 1, size=self.shape).astype(dtype)
        return rng.random(self.shape).astype(dtype)


@dataclasses.dataclass
class Arena:
    """A file's tensor arena on TFLM, as the interpreter's recording allocator reports it.

    Attributes:
        path: String, the file.
        total: Integer, bytes of the arena in use: what the app must allocate for TFLM's
            reference kernels (optimized kernels, e.g. CMSIS-NN, may add scratch buffers).
        activations: Integer, the arena's head: the activation tensors as TFLM's memory
            planner lays them out.
        persistent: Integer, the arena's tail: tensor structs, quantization parameters and
            the kernels' own buffers, kept for the interpreter's life.
        allocations: Dict of the tail's parts (the allocator's names) -> bytes.
        version: String, the `tflite-micro` package that measured it.
    """

    path: str
    total: int
    activations: int
    persistent: int
    allocations: dict
    version: str

    def to_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        return (f"{self.total:,} bytes ({self.activations:,} activations as TFLM's planner "
                f"lays them out + {self.persistent:,} persistent), measured on TFLite Micro "
                f"{self.version}")


_ARENA_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
_PART_LINE = re.compile(r"'([^']+)' used (\d+) bytes")


def measure_arena(path):
    """The tensor arena a `.tflite` file uses on TFLM, from its recording allocator.

    The file is loaded into TFLM's interpreter (allocation recording on, a generous arena),
    run once, and the allocator's report (which it prints to the process's stderr) is read.

    Args:
        path: Path to the `.tflite` file.

    Returns:
        An `Arena`.

    Raises:
        TflmUnavailable: the `tflite-micro` package cannot be imported.
        UnsupportedModelError: the file has ops TFLM cannot run (named, with their layers).
        TfpruneError: the file is missing, not a TFLite model, or TFLM fails to load it.

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
    ...                           keras.layers.Flatten(), keras.layers.Dense(10, name="fc")])
    >>> images = np.random.default_rng(0).random((32, 8, 8, 1), dtype="float32")
    >>> path = tfprune.export.to_tflite(model, "m.tflite", target="tflm",
    ...                                 representative_data=images)
    >>> arena = tfprune.tflm.measure_arena(path)
    >>> arena.total == arena.activations + arena.persistent, arena.activations
    (True, 288)
    """
    micro = _Micro(path)
    micro.invoke(micro.random_input())  # the docs: the allocations are complete after a run
    with _stderr_captured() as log:
        micro.interpreter.print_allocations()
    figures = {kind: int(n) for kind, n in _ARENA_LINE.findall(log[0])}
    if set(figures) != {"total", "head", "tail"}:
        raise TfpruneError(f"TFLite Micro's recording allocator reported no arena for "
                           f"{str(path)!r} (it printed {_log_line(log[0])!r}): tflite-micro "
                           f"{version()} prints its report in another form; pin the version "
                           "pyproject.toml names.")
    parts = {name: int(n) for name, n in _PART_LINE.findall(log[0])}
    return Arena(str(path), figures["total"], figures["head"], figures["tail"], parts,
                 version() or "")


def minimal_arena(path):
    """The smallest arena (bytes) in which TFLM loads and runs the file, found by bisection.

    A cross-check of `measure_arena`: the allocator's total may exceed it by the few bytes
    its alignment costs when the arena is exactly that small.

    Args:
        path: Path to the `.tflite` file.

    Returns:
        Integer, bytes.

    Raises:
        As `measure_arena`.
    """
    upper = measure_arena(path).total
    micro = runtime()
    data = read_tflite(path)
    x = _Micro(path).random_input()

    def runs(size):
        with _stderr_captured():  # each failure prints a few lines: not the user's business
            try:
                interpreter = micro.Interpreter.from_bytes(bytes(data), arena_size=size)
                interpreter.set_input(x, 0)
                interpreter.invoke()
            except (RuntimeError, ValueError):
                return False
        return True

    low, high = 0, upper  # runs(high) holds: the allocator used no more than that
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if runs(middle) else (middle, high)
    return high


def predict(path, x, raw=False):
    """Outputs of a `.tflite` file on TFLM for inputs `x`, one batch of the file's size at a time.

    Float inputs are quantized with the file's input scale and zero point; outputs are
    dequantized with its output scale, unless `raw`.

    Args:
        path: Path to the `.tflite` file (one input, one output).
        x: Array of inputs, shaped as the file's input without its batch dimension, plus a
            leading dimension for the examples.
        raw: Boolean, return the output tensor's own values (int8 for a full-int8 file),
            defaults to `False`.

    Returns:
        Array with one row of outputs per input.

    Raises:
        TflmUnavailable: the `tflite-micro` package cannot be imported.
        TfpruneError: a bad file, or inputs of the wrong shape.
    """
    micro = _Micro(path)
    x = np.asarray(x)
    batch, want = micro.shape[0], micro.shape[1:]
    if tuple(x.shape[1:]) != want:
        raise TfpruneError(f"predict got inputs of shape {x.shape[1:]} but {str(path)!r} takes "
                           f"{want}: pass the data the model was trained on. Received: "
                           f"x.shape={x.shape}")
    in_scale, in_zero = micro.scale(micro.input)
    xq = quantize(x, micro.input["dtype"], in_scale, in_zero)
    missing = -len(xq) % batch  # the last batch is padded with copies of the last input
    if missing and len(xq):
        xq = np.concatenate([xq, np.repeat(xq[-1:], missing, axis=0)])
    rows = micro.invoke(*(xq[i:i + batch] for i in range(0, len(xq), batch)))
    y = np.concatenate(rows)[:len(x)] if rows else np.empty((0,))
    return y if raw else dequantize(y, *micro.scale(micro.output))


def evaluate(path, x, y):
    """Classification accuracy of a `.tflite` file on TFLM's interpreter.

    Args:
        path: Path to the `.tflite` file.
        x: Array of inputs.
        y: Array of labels, class indices or one-hot.

    Returns:
        Accuracy, a float in [0, 1].

    Raises:
        TflmUnavailable: the `tflite-micro` package cannot be imported.
        TfpruneError: a bad file, no data, or as many labels as inputs missing.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, "softmax")])
    >>> x = np.random.default_rng(0).random((50, 4), dtype="float32")
    >>> path = tfprune.export.to_tflite(model, "m.tflite", target="tflm", representative_data=x)
    >>> y = tfprune.interpreter.classes(tfprune.tflm.predict(path, x))
    >>> tfprune.tflm.evaluate(path, x, y)
    1.0
    """
    y = np.asarray(y)
    if len(x) == 0 or len(x) != len(y):
        raise TfpruneError(f"evaluate needs as many labels as inputs, at least one. Received: "
                           f"{len(x)} inputs and {len(y)} labels")
    labels = np.argmax(y, axis=-1) if y.ndim == 2 and y.shape[-1] > 1 else y.reshape(-1)
    return float(np.mean(classes(predict(path, x)) == labels.astype(np.int64)))


def invoker(path, seed=0):
    """A TFLM interpreter for the file with a random input set: returns its bare `invoke`."""
    micro = _Micro(path)
    micro.invoke(micro.random_input(seed))  # set, and run once: errors surface here
    return micro.interpreter.invoke
