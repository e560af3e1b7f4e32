"""The file on TensorFlow Lite Micro's interpreter, built for the host (the `tflite-micro`
package): the tensor arena its recording allocator reports (`measure_arena`,
`minimal_arena`), and its answers through TFLM's reference kernels (`predict`, `evaluate`,
`invoker`).

A microcontroller runs a `.tflite` file with TFLM out of a fixed "tensor arena" that the app
allocates, and TFLM's own docs say to find the arena's size by experiment. Here the file runs
on TFLM's interpreter with its recording allocator, and `measure_arena` reads the bytes that
allocator reports: the figure is the interpreter's, never a formula (`minimal_arena` finds it
again by bisection). `predict` and `evaluate` run inputs through TFLM's reference kernels,
one batch of the file's size at a time.
"""

import contextlib
import dataclasses
import os
import re
import sys
import tempfile

import numpy as np

from tfprune.errors import TfpruneError, UnsupportedModelError
from tfprune.micro.ops import TflmUnavailable, describe, problems
from tfprune.tflite.interpreter import (
    classes,
    dequantize,
    first_line,
    load_interpreter,
    quantize,
    read_tflite,
)

_INSTALL = "pip install 'tfprune[tflm]' (the tflite-micro package)"


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
    >>> path = tfprune.tflite.to_tflite(model, "m.tflite", target="tflm",
    ...                                 representative_data=images)
    >>> arena = tfprune.micro.measure_arena(path)
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
    >>> path = tfprune.tflite.to_tflite(model, "m.tflite", target="tflm", representative_data=x)
    >>> y = tfprune.tflite.interpreter.classes(tfprune.micro.predict(path, x))
    >>> tfprune.micro.evaluate(path, x, y)
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
