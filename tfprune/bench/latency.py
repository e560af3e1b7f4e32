"""Interpreter latency A/B of `.tflite` files, file sizes, and loading files safely.

The numbers that matter on an edge device are those of the `.tflite` file on the LiteRT
interpreter. `compare` runs every file in one process, interleaved round by round
(A B A B ...), after a warm-up, so that a noisy machine slows all of them alike; it reports
medians and the per-round ratio to the first file, whose spread says how much to trust it.
"""

import dataclasses
import gzip
import os
import re
import time
from pathlib import Path

import numpy as np

from tfprune.errors import TfpruneError

DELEGATES = ("xnnpack", "builtin")
_TFLITE_IDENTIFIER = b"TFL3"


def file_sizes(path):
    """Size of a file in bytes, raw and gzipped (level 9) as a download would be.

    Args:
        path: Path to the file.

    Returns:
        A tuple `(raw_bytes, gzip_bytes)` of integers.

    Raises:
        TfpruneError: the file is missing.
    """
    data = _read(path)
    return data_sizes(data)


def data_sizes(data):
    """`(raw_bytes, gzip_bytes)` of bytes already in memory (gzip level 9, as `file_sizes`)."""
    return len(data), len(gzip.compress(data, compresslevel=9, mtime=0))


def read_tflite(path):
    """Returns the bytes of a `.tflite` file after checking that it is one.

    Raises:
        TfpruneError: the file is missing, empty, or not a TFLite flatbuffer.
    """
    data = _read(path)
    if not data:
        raise TfpruneError(f"File {str(path)!r} is empty: export the model again "
                           "(tfprune.export.to_tflite).")
    if len(data) < 8 or data[4:8] != _TFLITE_IDENTIFIER:
        raise TfpruneError(f"File {str(path)!r} is not a TFLite model (no 'TFL3' identifier): "
                           "pass a .tflite file written by the TFLite converter.")
    return data


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
        reason = _first_line(e)
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
        return any(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())
    except Exception:  # a private API: if it changes, assume the delegate ran
        return True


def _read(path):
    path = Path(path)
    if not path.is_file():
        raise TfpruneError(f"File {str(path)!r} does not exist: check the path.")
    return path.read_bytes()


def _first_line(error):
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


@dataclasses.dataclass
class Timing:
    """Latency of one file with one delegate, over the interleaved rounds.

    `ratio_*` is this file's time divided by the first file's in the same round: its
    median, 10th and 90th percentile.
    """

    path: str
    delegate: str
    delegate_used: str
    note: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    ratio_median: float
    ratio_p10: float
    ratio_p90: float
    size_raw: int
    size_gzip: int


@dataclasses.dataclass
class Comparison:
    """The result of `compare`: settings and one `Timing` per file and delegate."""

    paths: list
    threads: int
    batch_size: int
    runs: int
    warmup: int
    timings: list

    def timing(self, path, delegate="xnnpack"):
        """The `Timing` of `path` (or its index in `paths`) with `delegate`."""
        path = self.paths[path] if isinstance(path, int) else str(path)
        for t in self.timings:
            if t.path == path and t.delegate == delegate:
                return t
        raise KeyError((path, delegate))

    def to_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        names = _short_names(self.paths)
        head = (f"LiteRT latency, threads={self.threads} batch={self.batch_size} "
                f"runs={self.runs} warmup={self.warmup} (interleaved per round, one process)")
        rows = [("model", "delegate", "ran", "median ms", "p10 ms", "p90 ms",
                 "ratio [p10, p90]", "raw B", "gzip B")]
        for t in self.timings:
            rows.append((names[t.path], t.delegate, t.delegate_used, f"{t.median_ms:.4f}",
                         f"{t.p10_ms:.4f}", f"{t.p90_ms:.4f}",
                         f"{t.ratio_median:.3f} [{t.ratio_p10:.3f}, {t.ratio_p90:.3f}]",
                         f"{t.size_raw:,}", f"{t.size_gzip:,}"))
        lines = [head, format_table(rows)]
        lines += [f"note: {names[t.path]} [{t.delegate}]: {t.note}"
                  for t in self.timings if t.note]
        return "\n".join(lines)


def format_table(rows):
    """Left-aligned columns, two spaces apart: the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _short_names(paths):
    base = [os.path.basename(p) for p in paths]
    return {p: (b if base.count(b) == 1 else p) for p, b in zip(paths, base, strict=True)}


def compare(*paths, threads=1, batch_size=1, runs=200, warmup=20, delegates=DELEGATES):
    """Latency of `.tflite` files on the LiteRT interpreter, interleaved A B A B per round.

    For each delegate in turn, every file gets an interpreter with the same random input;
    after `warmup` interleaved rounds, each of `runs` rounds times one `invoke()` of every
    file in order. The ratio of each file to the first is taken per round, so slow spells
    of a shared machine cancel out. A file XNNPACK fails to prepare runs on the builtin
    kernels, and its `Timing.note` says so.

    Args:
        *paths: Paths to one or more `.tflite` files; the first is the reference.
        threads: Integer, interpreter threads, defaults to `1`.
        batch_size: Integer, the batch of the timed input (the file's input must have a
            dynamic or equal batch dimension), defaults to `1`.
        runs: Integer, timed rounds, defaults to `200`.
        warmup: Integer, untimed rounds first, defaults to `20`.
        delegates: Sequence of `"xnnpack"` (default CPU delegate) and `"builtin"` (without
            default delegates), each reported separately, defaults to both.

    Returns:
        A `Comparison`; `str()` of it is a table, `to_dict()` a JSON-ready dict.

    Raises:
        TfpruneError: no path, a bad file, a batch the model cannot take, or bad counts.

    Example:

    >>> result = tfprune.bench.compare("baseline.tflite", "compressed.tflite", runs=50)
    >>> result.timing(1).ratio_median  # compressed / baseline
    """
    _check_compare_args(paths, threads, batch_size, runs, warmup, delegates)
    paths = [str(p) for p in paths]
    sizes = {p: file_sizes(p) for p in paths}
    timings = []
    for delegate in delegates:
        loaded = [_ready(p, threads, delegate, batch_size) for p in paths]
        ms = _interleaved([call for call, _, _ in loaded], runs, warmup)
        ratios = ms / ms[:, :1]
        for i, (p, (_, used, note)) in enumerate(zip(paths, loaded, strict=True)):
            p10, med, p90 = np.percentile(ms[:, i], [10, 50, 90])
            r10, rmed, r90 = np.percentile(ratios[:, i], [10, 50, 90])
            timings.append(Timing(p, delegate, used, note, float(med), float(p10), float(p90),
                                  float(rmed), float(r10), float(r90), *sizes[p]))
    return Comparison(paths, threads, batch_size, runs, warmup, timings)


def _check_compare_args(paths, threads, batch_size, runs, warmup, delegates):
    if not paths:
        raise TfpruneError("No .tflite file to benchmark: pass one or more paths.")
    for name, value, low in (("threads", threads, 1), ("batch_size", batch_size, 1),
                             ("runs", runs, 1), ("warmup", warmup, 0)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise TfpruneError(f"{name} must be an integer >= {low}. Received: {name}={value!r}")
    bad = [d for d in delegates if d not in DELEGATES]
    if bad or not delegates:
        raise TfpruneError(f"delegates must be a non-empty subset of {DELEGATES}. Received: "
                           f"delegates={tuple(delegates)!r}")


def _ready(path, threads, delegate, batch_size):
    """`(invoke, delegate_used, note)` for `path`, input set, tried once at `batch_size`."""
    interpreter, used, note = load_interpreter(path, threads, delegate)
    call = _invoker(interpreter, path, batch_size)
    try:
        call()
    except RuntimeError as e:
        if used != "xnnpack":
            raise TfpruneError(f"{str(path)!r} fails on the LiteRT interpreter "
                               f"({_first_line(e)}): export it again.") from e
        interpreter = load_interpreter(path, threads, "builtin")[0]
        call = _invoker(interpreter, path, batch_size)
        used, note = "builtin", (f"XNNPACK failed at batch {batch_size} ({_first_line(e)}); "
                                 "ran builtin kernels")
    return call, used, note


def _invoker(interpreter, path, batch_size):
    """Sets the input once (resized to `batch_size`) and returns the bare `invoke`."""
    details = interpreter.get_input_details()
    if batch_size != details[0]["shape"][0]:
        if any(d["shape_signature"][0] != -1 for d in details):
            raise TfpruneError(
                f"{str(path)!r} has a fixed batch of {details[0]['shape'][0]}: use "
                f"batch_size={details[0]['shape'][0]} or export with a dynamic batch. "
                f"Received: batch_size={batch_size}")
        for d in details:
            interpreter.resize_tensor_input(d["index"], [batch_size, *d["shape"][1:]])
        interpreter.allocate_tensors()
    for d, x in zip(interpreter.get_input_details(), random_inputs(interpreter),
                    strict=True):
        interpreter.set_tensor(d["index"], x)
    return interpreter.invoke


def _interleaved(calls, runs, warmup):
    """Times each call once per round, in order; returns milliseconds, shape (runs, calls)."""
    for _ in range(warmup):
        for call in calls:
            call()
    ms = np.empty((runs, len(calls)))
    clock = time.perf_counter_ns
    for r in range(runs):
        for i, call in enumerate(calls):
            start = clock()
            call()
            ms[r, i] = (clock() - start) / 1e6
    return ms
