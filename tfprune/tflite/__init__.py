"""TFLite (LiteRT) files: conversion, running, inspection, and which runtimes take them.

    interpreter.py  reading, sizing and loading `.tflite` files on LiteRT; the ops a
                    delegate left to the builtin kernels (LiteRT's node list: `compat`)
    convert.py      `to_tflite`, `to_tflite_where_sparse_pays`: a Keras model to a file
    int4.py         int4 weights through `litert-quantizer`
    selective.py    int8 with chosen layers in float (the converter's selective quantization)
    run.py          `predict`, `evaluate`, `correct`: a file's answers and accuracy
    inspection.py   `inspect`: ops, weight tensors, sparsity, sizes
    runs_on.py      `runtimes`: LiteRT with XNNPACK, LiteRT builtin, TFLite Micro

The names below load on first use (PEP 562), so that `tfprune.micro`, which reads files
with `interpreter`, can be imported by `convert` and `runs_on` (a file for TFLite Micro is
checked on TFLM's ops) without a cycle through this package.

This package is also `tfprune.export` (the name the API has always had):
`tfprune.export.to_tflite` is `tfprune.tflite.to_tflite`.

Example:

>>> tfprune.export.to_tflite is tfprune.tflite.to_tflite
True
"""

import importlib

PUBLIC = {
    **{name: f"tfprune.tflite.convert:{name}" for name in (
        "SparseChoice", "to_tflite", "to_tflite_where_sparse_pays")},
    **{name: f"tfprune.tflite.inspection:{name}" for name in (
        "TensorInfo", "TFLiteInfo", "inspect")},
    **{name: f"tfprune.tflite.run:{name}" for name in ("correct", "evaluate", "predict")},
    **{name: f"tfprune.tflite.runs_on:{name}" for name in ("Runtime", "runtimes")},
}

__all__ = sorted(PUBLIC)


def __getattr__(name):
    if name not in PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attribute = PUBLIC[name].partition(":")
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
