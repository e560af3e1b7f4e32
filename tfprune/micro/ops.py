"""What TensorFlow Lite for Microcontrollers (TFLM) can run, op by op; no package needed.

`problems` checks each op of a file against `MICRO_OPS`, our own table of the builtin ops
TFLM's op resolver registers, plus what no TFLM kernel takes (hybrid ops, DENSIFY,
float16), and names the op, why TFLM cannot run it, the Keras layer it came from and the
fix. `check` raises on them in one line.
"""

import dataclasses
import os
import re

import numpy as np

from tfprune.errors import TfpruneError, UnsupportedModelError
from tfprune.tflite.interpreter import (
    NUMPY_TYPES,
    parse,
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
    >>> path = tfprune.tflite.to_tflite(model, "dynamic.tflite", quantize="dynamic")
    >>> [(p.op, p.layer, p.reason) for p in tfprune.micro.problems(path)]
    [('FULLY_CONNECTED', 'fc', 'is hybrid (dynamic-range): float32 activations with int8
      weights, which TFLM has no kernel for')]
    """
    graph = Graph(path)
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
    graph = Graph(path)
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
    >>> tfprune.micro.check(tfprune.tflite.to_tflite(model, "float.tflite"))
    Traceback (most recent call last):
    ...
    tfprune.errors.UnsupportedModelError: float.tflite does not fit TFLite Micro:
    FULLY_CONNECTED (op 0, layer fc) computes in float32: export full int8 (...).
    Received: path='float.tflite'
    >>> tfprune.micro.check("float.tflite", full_int8=False)  # TFLM has float kernels
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
                "replace the layer with layers made of builtin ops (tfprune.micro.MICRO_OPS)")
    if op.name not in MICRO_OPS and op.name not in MICRO_CUSTOM_OPS:
        return ("is not an op TFLM has",
                "replace the layer with layers made of ops TFLM has (tfprune.micro.MICRO_OPS)")
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


class Graph:
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
