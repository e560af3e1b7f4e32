"""TensorFlow Lite for Microcontrollers (TFLM): which ops it has, whether a file fits it, the
file measured on its interpreter, and the file as C source.

    ops.py          `MICRO_OPS` (our table of TFLM's builtin ops), `problems`,
                    `int8_problems`, `check`: what keeps a file off TFLM, op by op
    activations.py  `activation_peak`: the tensors that fill the arena (lifetimes)
    interpreter.py  TFLM's interpreter for the host (`tflite-micro`): `measure_arena`,
                    `minimal_arena`, `predict`, `evaluate`, `invoker`
    csource.py      `write`: a full-int8 file as C source (`tfprune-export-c`)

This package is also `tfprune.tflm` (its name before it was a package). TFLM's host latency
is a measurement (`tfprune.bench.compare_tflm`), and the run's `tflm` stage and its part of
the report are the pipeline's (`tfprune.pipeline.stages.tflm`, `.tflm_report`).
"""

from tfprune.micro.activations import ActivationPeak, activation_peak
from tfprune.micro.interpreter import (
    Arena,
    available,
    evaluate,
    invoker,
    measure_arena,
    minimal_arena,
    predict,
    runtime,
    version,
)
from tfprune.micro.ops import (
    MICRO_CUSTOM_OPS,
    MICRO_OPS,
    Problem,
    TflmUnavailable,
    check,
    describe,
    int8_problems,
    problems,
)

__all__ = ["MICRO_CUSTOM_OPS", "MICRO_OPS", "ActivationPeak", "Arena", "Problem",
           "TflmUnavailable", "activation_peak", "available", "check", "describe", "evaluate",
           "int8_problems", "invoker", "measure_arena", "minimal_arena", "predict", "problems",
           "runtime", "version"]


def __getattr__(name):
    """`tfprune.micro.csource` without importing it first (as the README does)."""
    if name == "csource":
        import importlib

        return importlib.import_module("tfprune.micro.csource")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
