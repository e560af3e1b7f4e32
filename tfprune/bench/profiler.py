"""Where the time of a `.tflite` file goes on LiteRT: op by op, and on which kernels.

LiteRT's Python interpreter (`ai_edge_litert` 2.3) has no per-op profiler: the C++
`tflite::Profiler` cannot be attached from Python (the interpreter's only related switch,
`experimental_force_delegate_node_profiling`, acts on a profiler that Python cannot
install), and the `CompiledModel` profiler of `libLiteRt.so` is not exposed by its Python
wrapper. So `profile` measures what can be measured from Python:

- **the partition**: which ops the delegate (XNNPACK) took and which ran on the builtin
  kernels, from the interpreter's node list (`tfprune.compat.node_details`);
- **time per op**: each op is cut out as a one-op model (its non-constant inputs become
  the model's inputs, fed with the values they hold in a real run of the whole file) and
  timed on the kernels that ran it in the whole file, interleaved with the whole file and
  with an empty model, in one process as `compare` does. An op's time is its one-op
  model's median less the empty model's (the cost of one `invoke`), floored at zero;
- **what is left**: the whole file's median less the empty invoke and the ops' sum is
  what running the ops together adds or saves (delegate partitions, copies between them,
  fusion), reported as such rather than spread over the ops.
"""

import dataclasses
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from tfprune.bench.latency import _interleaved, _invoker
from tfprune.compat import node_details
from tfprune.errors import TfpruneError
from tfprune.tflite.interpreter import (
    DELEGATES,
    NUMPY_TYPES,
    delegated_ops,
    format_table,
    load_interpreter,
    parse,
    random_inputs,
    read_tflite,
)

# Ops that move between float and integer: at the model's edges they are the price of
# float inputs and outputs on an integer model.
CONVERSIONS = ("QUANTIZE", "DEQUANTIZE")
_TYPE_NAMES = {17: "int4"}


@dataclasses.dataclass
class OpTime:
    """One op of a `.tflite` file, where it ran and how long it took alone.

    Attributes:
        index: Integer, the op's position in the file (execution order).
        op: String, the op's name (`"CONV_2D"`).
        ran: String, what ran it in the whole file: `"xnnpack"` or `"builtin"`.
        types: String, activation types in and out (`"float32 -> int8"`).
        weights: String, its constant inputs' type and quantization (`"int8 per-channel"`),
            or `""`.
        edge: Boolean, a QUANTIZE or DEQUANTIZE that reads a model input or makes a model
            output: the cost of float I/O on an integer model.
        median_us: Float, the op's time: its one-op model's median less the empty invoke's,
            at least 0; `nan` if the op cannot run alone.
        alone_us: Float, its one-op model's median, invoke included.
        alone_ran: String, what ran the one-op model (XNNPACK may take an op alone that it
            took in the whole file, or refuse it), or the reason it could not run.
    """

    index: int
    op: str
    ran: str
    types: str
    weights: str
    edge: bool
    median_us: float
    alone_us: float
    alone_ran: str


@dataclasses.dataclass
class Profile:
    """The result of `profile`: the whole file's time and one `OpTime` per op.

    Attributes:
        path: String, the file.
        delegate: String, the delegate asked for (`"xnnpack"` or `"builtin"`).
        delegate_used: String, what ran the whole file.
        threads: Integer, interpreter threads.
        runs: Integer, timed rounds.
        total_us: Float, the whole file's median.
        invoke_us: Float, the median of an empty model's invoke (the fixed cost of a call).
        ops: List of `OpTime`, in execution order.
    """

    path: str
    delegate: str
    delegate_used: str
    threads: int
    runs: int
    total_us: float
    invoke_us: float
    ops: list

    @property
    def ops_us(self):
        """The ops' times summed (those that ran alone)."""
        return float(sum(o.median_us for o in self.ops if np.isfinite(o.median_us)))

    @property
    def rest_us(self):
        """The whole file's time less the empty invoke and the ops: what running the ops
        together adds (positive) or saves (negative)."""
        return self.total_us - self.invoke_us - self.ops_us

    def split(self, by="op"):
        """Microseconds per op name (`by="op"`), per kernel set (`by="ran"`), or in
        conversions at the edges vs the rest (`by="edge"`), largest first."""
        keys = {"op": lambda o: o.op, "ran": lambda o: o.ran,
                "edge": lambda o: "edge (de)quantize" if o.edge else "other ops"}
        if by not in keys:
            raise TfpruneError(f"split is by one of {tuple(keys)}. Received: by={by!r}")
        totals = Counter()
        for o in self.ops:
            if np.isfinite(o.median_us):
                totals[keys[by](o)] += o.median_us
        return dict(totals.most_common())

    def to_dict(self):
        return {**dataclasses.asdict(self), "ops_us": self.ops_us, "rest_us": self.rest_us,
                "split": self.split(), "split_ran": self.split("ran")}

    def __str__(self):
        lines = [f"{self.path}: profile on {self.delegate_used} (asked: {self.delegate}), "
                 f"threads={self.threads}, runs={self.runs}; each op timed alone as a one-op "
                 "model, less an empty invoke",
                 f"whole file {self.total_us:.1f} µs = invoke {self.invoke_us:.1f} + ops "
                 f"{self.ops_us:.1f} + together {self.rest_us:+.1f} (partitions, copies, "
                 "fusion)"]
        rows = [("#", "op", "ran", "types", "weights", "µs", "share", "alone µs", "alone ran")]
        for o in self.ops:
            share = o.median_us / self.ops_us if self.ops_us and np.isfinite(o.median_us) \
                else float("nan")
            rows.append((str(o.index), o.op + (" (edge)" if o.edge else ""), o.ran, o.types,
                         o.weights or "-", f"{o.median_us:.2f}", f"{share:.0%}",
                         f"{o.alone_us:.2f}", o.alone_ran))
        lines.append(format_table(rows))
        lines.append("by op: " + ", ".join(f"{k} {v:.1f} µs" for k, v in self.split().items()))
        lines.append("by kernels: " + ", ".join(f"{k} {v:.1f} µs"
                                               for k, v in self.split("ran").items()))
        return "\n".join(lines)


def profile(path, delegate="xnnpack", threads=1, runs=200, warmup=20):
    """Time per op of a `.tflite` file on LiteRT, and which kernels ran each op.

    See the module's docstring for how: LiteRT's Python API has no op profiler, so each op
    is timed alone as a one-op model, on the kernels that ran it in the whole file,
    interleaved with the whole file and an empty model. Batch 1; the first subgraph only.

    Args:
        path: Path to the `.tflite` file.
        delegate: String, `"xnnpack"` (the default CPU delegate, with the builtin kernels
            for what it refuses) or `"builtin"`, defaults to `"xnnpack"`.
        threads: Integer, interpreter threads, defaults to `1`.
        runs: Integer, timed rounds, defaults to `200`.
        warmup: Integer, untimed rounds first, defaults to `20`.

    Returns:
        A `Profile`; `str()` of it is a table, `to_dict()` a JSON-ready dict.

    Raises:
        TfpruneError: a bad file, delegate or count.
        LiteRtApiChanged: LiteRT's node listing changed (see `compat.node_details`).

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
    ...                           keras.layers.Flatten(), keras.layers.Dense(10)])
    >>> images = np.random.default_rng(0).random((32, 8, 8, 1), dtype="float32")
    >>> path = tfprune.export.to_tflite(model, "int8.tflite", quantize="int8",
    ...                                 representative_data=images, batch_size=1)
    >>> result = tfprune.bench.profile(path, runs=20)
    >>> [(o.op, o.ran, o.edge) for o in result.ops]  # doctest: +NORMALIZE_WHITESPACE
    [('QUANTIZE', 'xnnpack', True), ('CONV_2D', 'xnnpack', False),
     ('RESHAPE', 'xnnpack', False), ('FULLY_CONNECTED', 'xnnpack', False),
     ('DEQUANTIZE', 'xnnpack', True)]
    >>> all(o.median_us >= 0 for o in result.ops)
    True
    """
    if delegate not in DELEGATES:
        raise TfpruneError(f"Unknown delegate: use one of {DELEGATES}. Received: "
                           f"delegate={delegate!r}")
    for name, value, low in (("threads", threads, 1), ("runs", runs, 1), ("warmup", warmup, 0)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise TfpruneError(f"{name} must be an integer >= {low}. Received: {name}={value!r}")
    data = read_tflite(path)
    model, names = parse(data, path)
    _inline_buffers(model, data)
    whole, used, _ = load_interpreter(path, threads, delegate)
    nodes = node_details(whole)
    taken = delegated_ops(nodes) if used == "xnnpack" else set()
    graph = model.subgraphs[0]
    folded = _folded(graph, model)
    values = _tensor_values(path, graph)
    with tempfile.TemporaryDirectory(prefix="tfprune-profile-") as folder:
        calls = [_invoker(whole, path, 1), _call(_empty_model(), Path(folder) / "empty.tflite",
                                                   threads, "builtin", {})[0]]
        alone = []
        for i, op in enumerate(graph.operators or []):
            kernels = "xnnpack" if i in taken else "builtin"
            one = Path(folder) / f"op{i}.tflite"
            try:
                call, ran = _call(_one_op_model(model, i, folded), one, threads, kernels,
                                  {t: values[t] for t in _feeds(graph, model, op, folded)})
            except (TfpruneError, RuntimeError, ValueError, KeyError) as e:
                call, ran = None, f"not alone: {str(e).splitlines()[0][:80]}"
            alone.append((kernels, call, ran))
        us = _interleaved(calls + [c for _, c, _ in alone if c is not None], runs, warmup)
    medians = iter(np.median(us, axis=0))
    total, invoke = next(medians), next(medians)
    ops = []
    outputs, inputs = set(graph.outputs), set(graph.inputs)
    for i, (op, (kernels, call, ran)) in enumerate(zip(graph.operators or [], alone,
                                                       strict=True)):
        median = next(medians) if call is not None else float("nan")
        name = names[op.opcodeIndex]
        edge = name in CONVERSIONS and (op.inputs[0] in inputs or op.outputs[0] in outputs)
        alone_time = max(0.0, float(median - invoke)) if call is not None else float("nan")
        ops.append(OpTime(i, name, kernels, _types(graph, model, op, folded),
                          _weights(graph, model, op, folded), bool(edge), alone_time,
                          float(median), ran))
    return Profile(str(path), delegate, used, threads, runs, float(total), float(invoke), ops)


def _tensor_values(path, graph):
    """Every tensor's value after one run of the whole file (builtin kernels, batch 1)."""
    from ai_edge_litert import interpreter as litert

    interpreter = litert.Interpreter(
        model_content=read_tflite(path), num_threads=1,
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True)
    for d in interpreter.get_input_details():
        if d["shape_signature"][0] == -1 and d["shape"][0] != 1:
            interpreter.resize_tensor_input(d["index"], [1, *d["shape"][1:]])
    interpreter.allocate_tensors()
    for d, x in zip(interpreter.get_input_details(), random_inputs(interpreter), strict=True):
        interpreter.set_tensor(d["index"], x)
    interpreter.invoke()
    values = {}
    for t in range(len(graph.tensors or [])):
        try:
            values[t] = np.array(interpreter.get_tensor(t))
        except ValueError:  # a tensor with no data (an absent optional input)
            pass
    return values


def _inline_buffers(model, data):
    """Moves the buffers a file keeps after its flatbuffer (`offset`, `size`: large models,
    and litert-quantizer's files) into the model, so that a copy packs them too."""
    for buffer in model.buffers or []:
        if buffer.offset > 1:
            buffer.data = np.frombuffer(data[buffer.offset:buffer.offset + buffer.size],
                                        np.uint8)
            buffer.offset, buffer.size = 0, 0


def _constant(graph, model, t):
    buffer = graph.tensors[t].buffer
    held = model.buffers[buffer] if 0 < buffer < len(model.buffers) else None
    return held is not None and held.data is not None and len(held.data) > 0


def _folded(graph, model):
    """Tensor -> index of the op that makes it, for the tensors made from constants only
    (a DEQUANTIZE of float16 or int4 weights): runtimes compute them once, at load."""
    made = {}
    for i, op in enumerate(graph.operators or []):
        ins = [t for t in (op.inputs if op.inputs is not None else []) if t >= 0]
        if ins and all(_constant(graph, model, t) or t in made for t in ins):
            made.update({int(t): i for t in op.outputs if t >= 0})
    return made


def _feeds(graph, model, op, folded):
    """The op's inputs that are neither constants nor made from them: the one-op model's
    inputs."""
    return [int(t) for t in dict.fromkeys(op.inputs if op.inputs is not None else [])
            if t >= 0 and t not in folded and not _constant(graph, model, t)]


def _prelude(graph, op, folded):
    """The indices of the ops that make `op`'s inputs from constants, in file order."""
    found, pending = set(), [t for t in (op.inputs if op.inputs is not None else [])
                             if t in folded]
    while pending:
        maker = folded[pending.pop()]
        if maker not in found:
            found.add(maker)
            pending += [t for t in graph.operators[maker].inputs if t in folded]
    return sorted(found)


def _one_op_model(model, index, folded):
    """The bytes of a model that runs only op `index` of the first subgraph (and the ops
    that make its inputs from constants, which runtimes fold at load)."""
    graph = model.subgraphs[0]
    saved = (graph.operators, graph.inputs, graph.outputs, model.subgraphs,
             model.signatureDefs)
    op = graph.operators[index]
    try:
        graph.inputs = _feeds(graph, model, op, folded)
        graph.outputs = [int(t) for t in op.outputs if t >= 0]
        graph.operators = [saved[0][i] for i in _prelude(graph, op, folded)] + [op]
        model.subgraphs, model.signatureDefs = [graph], []
        return _pack(model)
    finally:
        (graph.operators, graph.inputs, graph.outputs, model.subgraphs,
         model.signatureDefs) = saved


def _empty_model():
    """The bytes of a model with no op: its output is its input (one float)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    tensor = schema.TensorT()
    tensor.shape, tensor.type, tensor.buffer, tensor.name = [1], 0, 0, "x"
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = [tensor], [0], [0], []
    model.subgraphs = [graph]
    return _pack(model)


def _pack(model):
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _call(data, path, threads, kernels, feeds):
    """`(invoke, what ran it)` for a model's bytes, written to `path`, inputs set."""
    path.write_bytes(data)
    interpreter, used, note = load_interpreter(path, threads, kernels)
    details = interpreter.get_input_details()
    for d in details:
        value = feeds.get(d["index"])
        if value is not None and tuple(d["shape"]) != value.shape:
            interpreter.resize_tensor_input(d["index"], list(value.shape))
    interpreter.allocate_tensors()
    for d, x in zip(interpreter.get_input_details(), random_inputs(interpreter), strict=True):
        interpreter.set_tensor(d["index"], feeds.get(d["index"], x))
    interpreter.invoke()
    return interpreter.invoke, used + (f" ({note})" if note else "")


def _type(tensor):
    return _TYPE_NAMES.get(tensor.type) or np.dtype(NUMPY_TYPES.get(tensor.type, np.uint8)).name


def _types(graph, model, op, folded):
    ins = [_type(graph.tensors[t]) for t in _feeds(graph, model, op, folded)]
    outs = [_type(graph.tensors[t]) for t in op.outputs if t >= 0]
    return f"{','.join(dict.fromkeys(ins)) or '-'} -> {','.join(dict.fromkeys(outs))}"


def _weights(graph, model, op, folded):
    """The op's weights (constant inputs of rank 2 or more) as stored: type and
    quantization, and "dequantized" when an op makes them from a constant of another type."""
    found = []
    for t in op.inputs if op.inputs is not None else []:
        source, how = t, ""
        if t in folded:  # follow a DEQUANTIZE back to the weights the file stores
            maker = graph.operators[folded[t]]
            source, how = maker.inputs[0], ", dequantized"
        if source < 0 or not _constant(graph, model, source):
            continue
        tensor = graph.tensors[source]
        if len(tensor.shape if tensor.shape is not None else []) < 2:
            continue  # biases and shape constants
        scales = getattr(tensor.quantization, "scale", None)
        scales = [] if scales is None else scales
        kind = "" if len(scales) == 0 else (" per-channel" if len(scales) > 1
                                            else " per-tensor")
        found.append(_type(tensor) + kind + how)
    return ", ".join(found)


def summary_line(result):
    """One line: where the time goes, for a table cell (the three largest ops, the edge
    conversions, and what ran on the builtin kernels)."""
    ops = result.split()
    top = ", ".join(f"{k} {v / result.ops_us:.0%}" for k, v in list(ops.items())[:3]) \
        if result.ops_us else "-"
    edge = result.split("edge").get("edge (de)quantize", 0.0)
    builtin = result.split("ran").get("builtin", 0.0)
    return (f"{top}; edge (de)quantize {edge:.1f} µs; builtin {builtin:.1f} µs; "
            f"together {result.rest_us:+.1f} µs")
