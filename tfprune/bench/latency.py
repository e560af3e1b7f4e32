"""Interpreter latency A/B of `.tflite` files.

The numbers that matter on an edge device are those of the `.tflite` file on the LiteRT
interpreter. `compare` runs every file in one process, interleaved round by round
(A B A B ...), after a warm-up, so that a noisy machine slows all of them alike; it reports
medians in microseconds and, per round, the speedup of each file over the first (the first
file's time divided by this file's), whose spread says how much to trust it. Reading and
loading the files is `tfprune.tflite.interpreter`'s.
"""

import dataclasses
import os
import time

import numpy as np

from tfprune.errors import TfpruneError
from tfprune.tflite.interpreter import (
    DELEGATES,
    file_sizes,
    first_line,
    format_table,
    load_interpreter,
    random_inputs,
)


@dataclasses.dataclass
class Timing:
    """Latency of one file with one delegate, over the interleaved rounds.

    Times are in microseconds. `speedup*` is the first file's time divided by this file's
    in the same round (above 1: this file is faster): its median, 10th and 90th percentile.
    """

    path: str
    delegate: str
    delegate_used: str
    note: str
    median_us: float
    p10_us: float
    p90_us: float
    speedup: float
    speedup_p10: float
    speedup_p90: float
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
        raise KeyError(f"No timing of {path!r} with delegate {delegate!r}: compare timed "
                       f"{self.paths} with {sorted({t.delegate for t in self.timings})}")

    def to_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        names = _short_names(self.paths)
        head = (f"LiteRT latency, threads={self.threads} batch={self.batch_size} "
                f"runs={self.runs} warmup={self.warmup} (interleaved per round, one process)\n"
                f"speedup = {names[self.paths[0]]}'s time / the file's, per round: median "
                "[10th, 90th percentile]")
        rows = [("model", "delegate", "ran", "median µs", "p10 µs", "p90 µs",
                 "speedup [p10, p90]", "raw B", "gzip B")]
        for t in self.timings:
            rows.append((names[t.path], t.delegate, t.delegate_used, f"{t.median_us:.1f}",
                         f"{t.p10_us:.1f}", f"{t.p90_us:.1f}",
                         f"{t.speedup:.2f}x [{t.speedup_p10:.2f}, {t.speedup_p90:.2f}]",
                         f"{t.size_raw:,}", f"{t.size_gzip:,}"))
        lines = [head, format_table(rows)]
        lines += [f"note: {names[t.path]} [{t.delegate}]: {t.note}"
                  for t in self.timings if t.note]
        return "\n".join(lines)


def _short_names(paths):
    base = [os.path.basename(p) for p in paths]
    return {p: (b if base.count(b) == 1 else p) for p, b in zip(paths, base, strict=True)}


def compare(*paths, threads=1, batch_size=1, runs=200, warmup=20, delegates=DELEGATES):
    """Latency of `.tflite` files on the LiteRT interpreter, interleaved A B A B per round.

    For each delegate in turn, every file gets an interpreter with the same random input;
    after `warmup` interleaved rounds, each of `runs` rounds times one `invoke()` of every
    file in order. Each file's speedup over the first (the first's time / the file's) is
    taken per round, so slow spells of a shared machine cancel out. A file XNNPACK fails to
    prepare runs on the builtin kernels, and its `Timing.note` says so.

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

    >>> wide = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64),
    ...                          keras.layers.Dense(10)])
    >>> narrow = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8),
    ...                            keras.layers.Dense(10)])
    >>> a = tfprune.export.to_tflite(wide, "baseline.tflite")
    >>> b = tfprune.export.to_tflite(narrow, "compressed.tflite")
    >>> result = tfprune.bench.compare(a, b, runs=50)
    >>> [t.delegate for t in result.timings]
    ['xnnpack', 'xnnpack', 'builtin', 'builtin']
    >>> result.timing(0).speedup  # the first file is the reference
    1.0
    >>> result.timing(1).speedup > 0  # baseline time / compressed time, median per round
    True
    """
    _check_compare_args(paths, threads, batch_size, runs, warmup, delegates)
    paths = [str(p) for p in paths]
    sizes = {p: file_sizes(p) for p in paths}
    timings = []
    for delegate in delegates:
        loaded = [_ready(p, threads, delegate, batch_size) for p in paths]
        us = _interleaved([call for call, _, _ in loaded], runs, warmup)
        speedups = us[:, :1] / us
        for i, (p, (_, used, note)) in enumerate(zip(paths, loaded, strict=True)):
            p10, med, p90 = np.percentile(us[:, i], [10, 50, 90])
            s10, smed, s90 = np.percentile(speedups[:, i], [10, 50, 90])
            timings.append(Timing(p, delegate, used, note, float(med), float(p10), float(p90),
                                  float(smed), float(s10), float(s90), *sizes[p]))
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
                               f"({first_line(e)}): export it again.") from e
        interpreter = load_interpreter(path, threads, "builtin")[0]
        call = _invoker(interpreter, path, batch_size)
        used, note = "builtin", (f"XNNPACK failed at batch {batch_size} ({first_line(e)}); "
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


def _interleaved(calls, runs, warmup, clock=time.perf_counter_ns):
    """Times each call once per round, in order; returns microseconds, shape (runs, calls)."""
    for _ in range(warmup):
        for call in calls:
            call()
    us = np.empty((runs, len(calls)))
    for r in range(runs):
        for i, call in enumerate(calls):
            start = clock()
            call()
            us[r, i] = (clock() - start) / 1e3
    return us
