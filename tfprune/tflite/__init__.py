"""TFLite (LiteRT) files: conversion, running, inspection, and which runtimes take them.

    interpreter.py  reading, sizing and loading `.tflite` files on LiteRT; the ops a
                    delegate left to the builtin kernels (LiteRT's node list: `compat`)
    convert.py      `to_tflite`, `to_tflite_where_sparse_pays`: a Keras model to a file
    int4.py         int4 weights through `litert-quantizer`
    selective.py    int8 with chosen layers in float (the converter's selective quantization)
    run.py          `predict`, `evaluate`, `correct`: a file's answers and accuracy
    inspection.py   `inspect`: ops, weight tensors, sparsity, sizes
    runs_on.py      `runtimes`: LiteRT with XNNPACK, LiteRT builtin, TFLite Micro

This package is also `tfprune.export` (the name the API has always had):
`tfprune.export.to_tflite` is `tfprune.tflite.to_tflite`.

Example:

>>> tfprune.export.to_tflite is tfprune.tflite.to_tflite
True
"""

from tfprune.tflite.convert import SparseChoice, to_tflite, to_tflite_where_sparse_pays
from tfprune.tflite.inspection import TensorInfo, TFLiteInfo, inspect
from tfprune.tflite.run import correct, evaluate, predict
from tfprune.tflite.runs_on import Runtime, runtimes

__all__ = ["Runtime", "SparseChoice", "TFLiteInfo", "TensorInfo", "correct", "evaluate",
           "inspect", "predict", "runtimes", "to_tflite", "to_tflite_where_sparse_pays"]
