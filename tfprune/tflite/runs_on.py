"""Which interpreters can run a `.tflite` file, and why not (`runtimes`): LiteRT with XNNPACK,
LiteRT's builtin kernels, TensorFlow Lite Micro.
"""

import dataclasses

from tfprune import micro
from tfprune.errors import TfpruneError
from tfprune.tflite.interpreter import (
    load_interpreter,
    read_tflite,
    undelegated_ops,
)


@dataclasses.dataclass
class Runtime:
    """Whether one interpreter can run a `.tflite` file, and why not.

    Attributes:
        name: String, `"LiteRT + XNNPACK"`, `"LiteRT builtin"` or `"TFLite Micro"`.
        runs: String, `"yes"`, `"partly"` (XNNPACK leaves some ops to the builtin kernels),
            `"no"`, or `"not run"` (TFLite Micro's op table fits but the package is missing).
        detail: String, why (or what was measured).
    """

    name: str
    runs: str
    detail: str

    def __str__(self):
        return f"{self.name}: {self.runs}" + (f" ({self.detail})" if self.detail else "")


def runtimes(path):
    """Which interpreters can run a `.tflite` file: LiteRT with XNNPACK, LiteRT's builtin
    kernels, TensorFlow Lite for Microcontrollers; each loaded and run, and why not.

    Args:
        path: Path to the `.tflite` file.

    Returns:
        A list of three `Runtime`s.

    Raises:
        TfpruneError: the file is missing, empty or not a TFLite model.

    Example:

    >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, name="fc")])
    >>> path = tfprune.tflite.to_tflite(model, "dynamic.tflite", quantize="dynamic")
    >>> [(r.name, r.runs) for r in tfprune.tflite.runtimes(path)]
    [('LiteRT + XNNPACK', 'yes'), ('LiteRT builtin', 'yes'), ('TFLite Micro', 'no')]
    """
    read_tflite(path)  # a bad file is an error, not three "no"s
    return [_litert_xnnpack(path), _litert_builtin(path), _micro(path)]


def _litert_xnnpack(path):
    name = "LiteRT + XNNPACK"
    try:
        interpreter, used, note = load_interpreter(path, 1, "xnnpack")
    except TfpruneError as e:
        return Runtime(name, "no", str(e))
    if used != "xnnpack":
        return Runtime(name, "no", note)
    left = undelegated_ops(interpreter)
    if left:
        return Runtime(name, "partly", f"{', '.join(left)} run on the builtin kernels")
    return Runtime(name, "yes", "")


def _litert_builtin(path):
    try:
        load_interpreter(path, 1, "builtin")
    except TfpruneError as e:
        return Runtime("LiteRT builtin", "no", str(e))
    return Runtime("LiteRT builtin", "yes", "")


def _micro(path):
    name = "TFLite Micro"
    found = micro.problems(path)
    if found:
        return Runtime(name, "no", "; ".join(f"{p}: {p.fix}" for p in found[:4]))
    floats = micro.int8_problems(path)
    kind = (f"computes in floating point in {len(floats)} ops (a microcontroller needs an "
            "FPU)" if floats else "full int8")
    try:
        arena = micro.measure_arena(path)
    except micro.TflmUnavailable as e:
        return Runtime(name, "not run", f"every op is in TFLM's op table, {kind}; {e}")
    except TfpruneError as e:
        return Runtime(name, "no", str(e))
    return Runtime(name, "yes", f"{kind}; arena {arena}")
