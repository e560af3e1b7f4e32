"""A `.tflite` file run on the LiteRT interpreter: `predict`, `evaluate`, `correct`.

Batches are fed at the file's batch size (the last one padded), inputs quantized and
outputs dequantized as the file's tensors say, so that a float, float16, dynamic-range or
full-int8 file is measured on the same images the same way.
"""

import numpy as np

from tfprune.errors import DataError, TfpruneError, UnsupportedModelError
from tfprune.tflite.convert import check_shape
from tfprune.tflite.interpreter import (
    classes,
    dequantize,
    load_interpreter,
)
from tfprune.tflite.interpreter import quantize as quantize_values


def evaluate(path, x, y=None, batch_size=None, threads=None, delegate="xnnpack"):
    """Classification accuracy of a `.tflite` file on the LiteRT interpreter.

    Takes data as Keras' `Model.evaluate` does: arrays `x` and `y`, or a dataset of
    `(x, y)` batches. Batches run whole when the file's batch dimension is dynamic (the
    input is resized), else in chunks of the file's batch. Int8 inputs are quantized and
    outputs dequantized with the file's own scale and zero point. Labels may be class
    indices or one-hot; a single output unit is read as a sigmoid (> 0.5).

    Args:
        path: Path to the `.tflite` file.
        x: The inputs, an array (with `y`), or a `tf.data.Dataset` (or any iterable) of
            `(x, y)` batches (without `y`).
        y: The labels, an array as long as `x`; `None` when `x` is a dataset.
        batch_size: Integer, the batch for arrays, defaults to `32` (as Keras); not with a
            dataset, which is batched already.
        threads: Integer or `None`, interpreter threads, defaults to `None`.
        delegate: String, `"xnnpack"` or `"builtin"`, defaults to `"xnnpack"` (falls back to
            the builtin kernels if XNNPACK cannot prepare the model).

    Returns:
        Accuracy, a float in [0, 1].

    Raises:
        TfpruneError: a bad file, or data whose shape the model cannot take.
        DataError: inputs without labels, labels of another length, an empty dataset.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, "softmax")])
    >>> path = tfprune.tflite.to_tflite(model, "model.tflite")
    >>> x = np.random.default_rng(0).random((100, 4), dtype="float32")
    >>> y = model.predict(x, verbose=0).argmax(axis=1)   # the Keras model's own answers
    >>> tfprune.tflite.evaluate(path, x, y)
    1.0
    """
    right = correct(path, x, y, batch_size=batch_size, threads=threads, delegate=delegate)
    return int(np.sum(right)) / len(right)


def correct(path, x, y=None, batch_size=None, threads=None, delegate="xnnpack"):
    """Per image, whether a `.tflite` file classifies it right: what `evaluate` averages.

    Two files' answers on the same images pair up for a paired interval of their accuracy
    difference (`tfprune.stats.paired`).

    Args:
        path, x, y, batch_size, threads, delegate: As `evaluate` takes them.

    Returns:
        A boolean array, one entry per image, in the order of the data.

    Raises:
        TfpruneError, DataError: as `evaluate`.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, "softmax")])
    >>> path = tfprune.tflite.to_tflite(model, "model.tflite")
    >>> x = np.random.default_rng(0).random((5, 4), dtype="float32")
    >>> y = model.predict(x, verbose=0).argmax(axis=1)
    >>> y[0] = (y[0] + 1) % 3   # one label the model cannot match
    >>> tfprune.tflite.correct(path, x, y).tolist()
    [False, True, True, True, True]
    """
    batches = _labelled_batches(x, y, batch_size)
    runner = _Runner(*load_interpreter(path, threads, delegate)[:2],
                     reload=lambda: load_interpreter(path, threads, "builtin")[0])
    right = []
    for element in batches:
        if not isinstance(element, (tuple, list)) or len(element) < 2:
            raise DataError("evaluate needs a dataset of (x, y) batches, or arrays x and y. "
                            f"Received: an element of type {type(element).__name__}")
        x, y = (v.numpy() if hasattr(v, "numpy") else np.asarray(v) for v in element[:2])
        check_shape(x, (None, *runner.shape[1:]), "dataset")
        if x.ndim == len(runner.shape) - 1:
            x, y = x[None], np.asarray(y)[None]
        predicted = classes(runner(x))
        labels = np.argmax(y, axis=-1) if y.ndim == 2 and y.shape[-1] > 1 else y.reshape(-1)
        right.append(predicted == labels.astype(np.int64))
    if not right or not sum(len(r) for r in right):
        raise DataError("evaluate got no data: pass arrays x and y, or (x, y) batches.")
    return np.concatenate(right).astype(bool)


def predict(path, x, batch_size=256, threads=None, delegate="xnnpack", raw=False):
    """Outputs of a `.tflite` file on the LiteRT interpreter for an array of inputs.

    Inputs are quantized and outputs dequantized with the file's own scale and zero point,
    as in `evaluate`, unless `raw`.

    Args:
        path: Path to the `.tflite` file (one input, one output).
        x: Array of inputs.
        batch_size: Integer, inputs per invocation of a dynamic-batch file (a fixed-batch
            file runs in chunks of its batch), defaults to `256`.
        threads: Integer or `None`, interpreter threads, defaults to `None`.
        delegate: String, `"xnnpack"` or `"builtin"`, defaults to `"xnnpack"` (falls back to
            the builtin kernels if XNNPACK cannot prepare the model).
        raw: Boolean, return the output tensor's own values (int8 for a full-int8 file),
            defaults to `False`.

    Returns:
        Array with one row of outputs per input.

    Raises:
        TfpruneError: a bad file, or inputs of a shape the model cannot take.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> x = np.random.default_rng(0).random((5, 4), dtype="float32")
    >>> y = tfprune.tflite.predict(tfprune.tflite.to_tflite(model, "m.tflite"), x)
    >>> bool(np.allclose(y, model.predict(x, verbose=0), atol=1e-5))
    True
    """
    runner = _Runner(*load_interpreter(path, threads, delegate)[:2],
                     reload=lambda: load_interpreter(path, threads, "builtin")[0], raw=raw)
    x = np.asarray(x)
    check_shape(x, (None, *runner.shape[1:]), "x")
    return np.concatenate([runner(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def _labelled_batches(x, y, batch_size):
    """`(x, y)` batches from arrays `x` and `y`, or `x` itself when it is a dataset."""
    if y is None:
        if isinstance(x, np.ndarray):
            raise DataError("evaluate got inputs without labels: pass y (as in Keras' "
                            "evaluate) or a dataset of (x, y) batches.")
        if batch_size is not None:
            raise TfpruneError("batch_size is for arrays: a dataset is batched already. "
                               f"Received: batch_size={batch_size!r}")
        return x
    kind = type(x).__name__
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype == object or x.ndim == 0:
        raise DataError("With y, x must be an array of inputs; pass a dataset of (x, y) "
                        f"batches without y. Received: x of type {kind}")
    if len(x) != len(y):
        raise DataError(f"x and y must hold as many examples. Received: {len(x)} inputs and "
                        f"{len(y)} labels")
    batch_size = 32 if batch_size is None else batch_size
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise TfpruneError(f"batch_size must be a positive integer. Received: "
                           f"batch_size={batch_size!r}")
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]


class _Runner:
    """Runs batches through an interpreter's one input and one output, (de)quantizing."""

    def __init__(self, interpreter, delegate_used="builtin", reload=None, raw=False):
        self.interpreter, self.delegate_used, self.reload = interpreter, delegate_used, reload
        self.raw = raw
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UnsupportedModelError("evaluate needs a model with one input and one output. "
                                        f"Received: {len(inputs)} inputs, {len(outputs)} outputs")
        self.input, self.output = inputs[0], outputs[0]
        signature = self.input["shape_signature"]
        self.dynamic = signature[0] == -1
        self.shape = tuple(None if d == -1 else int(d) for d in signature)
        self.batch = int(self.input["shape"][0])

    def __call__(self, x):
        if not self.dynamic:
            return np.concatenate([self._fixed(x[i:i + self.batch])
                                   for i in range(0, len(x), self.batch)])
        if len(x) != self.batch:
            self.interpreter.resize_tensor_input(self.input["index"], [len(x), *self.shape[1:]])
            self.interpreter.allocate_tensors()
            self.batch = len(x)
        return self._invoke(x)

    def _fixed(self, x):
        """Runs a fixed-batch file on up to `batch` rows, padding the last chunk."""
        missing = self.batch - len(x)
        if missing:
            x = np.concatenate([x, np.repeat(x[-1:], missing, axis=0)])
        return self._invoke(x)[:self.batch - missing]

    def _invoke(self, x):
        self.interpreter.set_tensor(self.input["index"], _quantize(x, self.input))
        try:
            self.interpreter.invoke()
        except RuntimeError:
            if self.delegate_used != "xnnpack" or self.reload is None:
                raise
            self._fall_back(len(x))  # XNNPACK rejected the resized graph: builtin kernels
            self.interpreter.set_tensor(self.input["index"], _quantize(x, self.input))
            self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        return y if self.raw else _dequantize(y, self.output)

    def _fall_back(self, batch):
        self.interpreter, self.delegate_used = self.reload(), "builtin"
        if self.dynamic:
            self.interpreter.resize_tensor_input(self.input["index"], [batch, *self.shape[1:]])
            self.interpreter.allocate_tensors()


def _quantize(x, detail):
    return quantize_values(x, detail["dtype"], *detail["quantization"])


def _dequantize(y, detail):
    return dequantize(y, *detail["quantization"])


