"""TFLite export, verification of the `.tflite` file's accuracy, and inspection of its contents.

Conversion goes through Keras' own LiteRT exporter (`model.export(..., format="litert")`,
which traces the model into a SavedModel and runs the TFLite converter), with our converter
settings: the quantization mode, the converter's sparse encoding, builtin ops only unless
asked, and an atomic write so that a failed export leaves no file behind. Reading and
loading `.tflite` files is `tfprune.interpreter`'s, below this module (`bench` is above it).
With `target="tflm"` the file is made for TensorFlow Lite for Microcontrollers: full int8,
no sparse encoding, and checked op by op against what TFLM has (`tfprune.tflm`, also below
this module) before it is written. `runtimes` says which interpreters can run a file.
"""

import dataclasses
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from tfprune import atomic, int4, selective, tflm
from tfprune.errors import DataError, TfpruneError, UnsupportedModelError
from tfprune.interpreter import (
    NUMPY_TYPES,
    classes,
    data_sizes,
    dequantize,
    first_line,
    format_table,
    load_interpreter,
    parse,
    read_tflite,
    tensor_name,
    undelegated_ops,
)
from tfprune.interpreter import quantize as quantize_values
from tfprune.options import QUANTIZE_MODES, TARGETS


def to_tflite(model, path, quantize=None, sparse=False, representative_data=None,
              int8_io=None, allow_select_ops=False, calibration_samples=200, batch_size=None,
              target="litert", int4_form="mixed", float_layers=None):
    """Converts a Keras model to a `.tflite` file, written atomically.

    Args:
        model: A built Keras model (plain layers: strip pruning wrappers first), or the path
            of a `.keras` file.
        path: Where to write the `.tflite` file; its folder must exist.
        quantize: String, one of `"none"` (float32), `"float16"` (float16 weights),
            `"dynamic"` (int8 weights, float activations), `"int8"` (full integer,
            calibrated on `representative_data`) or `"int4"` (4-bit weights through
            Google's `litert-quantizer`, in `int4_form`), defaults to `"none"` (`"int8"` for
            `target="tflm"`, which takes nothing else).
        sparse: Boolean, let the converter store sparse weights in its sparse encoding
            (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`), defaults to `False`.
        representative_data: For `quantize="int8"`: a `tf.data.Dataset` (or iterable) of
            `(x, y)` or `x`, batched or not, or a NumPy array of inputs.
        int8_io: Boolean, with `quantize="int8"`, make the input and output int8 too (else
            they stay float32 with (de)quantize ops at the ends), defaults to `None`: int8
            for `target="tflm"`, float32 otherwise.
        allow_select_ops: Boolean, allow TensorFlow (Select/Flex) ops that the builtin
            kernels lack; the app must then link the Flex delegate. Defaults to `False`.
        calibration_samples: Integer, how many inputs calibrate `int8`, defaults to `200`.
        batch_size: Integer to fix the input's batch dimension (a batch of 1 drops the
            shape ops a dynamic Flatten needs), or `None` for a dynamic batch that
            `evaluate` and `compare` resize (a batch of 1 for `target="tflm"`: a
            microcontroller runs one input at a time), defaults to `None`.
        target: String, the interpreter the file is for: `"litert"` (LiteRT, any mode) or
            `"tflm"` (TensorFlow Lite for Microcontrollers: full int8, no sparse encoding,
            every op checked against what TFLM has, naming the layer of any that is not),
            defaults to `"litert"`.
        int4_form: String, how `quantize="int4"` stores and runs its weights: `"mixed"`
            (int4 dense layers and int8 convolutions, both quantizing activations on the
            fly: every op runs on XNNPACK, the fastest form measured), `"dynamic"` (int4
            everywhere: XNNPACK has no int4 convolution, so convolutions run on the builtin
            kernels), `"dynamic_int8_edges"` (`"dynamic"` with the first and last layer
            with weights in int8: closer to the float model for little more) or
            `"weight_only"` (int4 weights dequantized before float ops, which XNNPACK
            refuses: the slowest); see `tfprune.int4`. Defaults to `"mixed"`.
        float_layers: With `quantize="int8"`, layers whose ops stay float, through the
            converter's selective quantization (`tfprune.selective`): `"auto"` (the
            convolutions on one input channel, whose int8 kernels XNNPACK runs slower
            than its float ones), layer names (a sequence or a comma-separated
            string), or `None`/`"none"` for every op in int8. No sparse encoding then, and
            not for `target="tflm"`. Defaults to `None`.

    Returns:
        The `Path` written.

    Raises:
        TfpruneError: bad arguments, representative data of the wrong shape, a folder that
            is missing or cannot be written, `quantize="int4"` without `litert-quantizer`,
            a Keras backend other than TensorFlow (save `.keras` and export it in a
            TensorFlow-backend process: `tfprune.backend.require_tensorflow`).
        UnsupportedModelError: the model needs non-builtin ops or does not convert; with
            `target="tflm"`, an op TFLM lacks or a hybrid op (named with its layer).

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
    ...                           keras.layers.Flatten(), keras.layers.Dense(10, name="fc")])
    >>> images = np.random.default_rng(0).random((32, 8, 8, 1), dtype="float32")
    >>> path = tfprune.export.to_tflite(model, "model.tflite", quantize="int8",
    ...                                 representative_data=images)
    >>> str(path), tfprune.export.inspect(path).tensor("fc").dtype
    ('model.tflite', 'int8')
    >>> micro = tfprune.export.to_tflite(model, "micro.tflite", target="tflm",
    ...                                  representative_data=images)
    >>> tfprune.export.inspect(micro).inputs    # int8 in, batch 1
    ['serving_default_args_0:0 1x8x8x1 int8']
    >>> int4 = tfprune.export.to_tflite(model, "int4.tflite", quantize="int4")
    >>> tfprune.export.inspect(int4).tensor("fc").dtype
    'int4'
    """
    from tfprune.backend import require_tensorflow  # imports Keras: not at module load

    require_tensorflow("tfprune.export.to_tflite")
    import tensorflow as tf

    model = _as_model(model)
    quantize, int8_io, batch_size = _target_defaults(target, quantize, int8_io, batch_size)
    _check_target(target, quantize, sparse, allow_select_ops, representative_data)
    _check_mode(quantize, int8_io, representative_data, sparse, int4_form)
    float_layers = _float_layers(model, quantize, float_layers, sparse, target)
    signature = _input_signature(model)
    kwargs = _converter_settings(tf, "none" if quantize == "int4" else quantize, sparse,
                                 int8_io, allow_select_ops)
    if batch_size is not None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise TfpruneError(f"batch_size must be a positive integer or None. Received: "
                               f"batch_size={batch_size!r}")
        shape, dtype = signature
        kwargs["input_signature"] = [tf.TensorSpec((batch_size, *shape[1:]), dtype)]
    if quantize == "int8":
        kwargs["representative_dataset"] = _calibration(representative_data, signature,
                                                        calibration_samples, batch_size or 1)
    path = Path(path)
    with atomic.atomic_path(path, suffix=".tflite") as tmp:
        try:
            if float_layers:
                spec = kwargs.get("input_signature") or [tf.TensorSpec(*signature)]
                tmp.write_bytes(selective.convert(model, spec, kwargs["representative_dataset"],
                                                  float_layers, int8_io))
            else:
                model.export(str(tmp), format="litert", verbose=False, **kwargs)
        except TfpruneError:
            raise
        except Exception as e:  # the converter raises many types; say what failed, in a line
            raise _conversion_error(e, allow_select_ops) from e
        if quantize == "int4":  # the float file, quantized in place before it appears
            tmp.write_bytes(int4.quantize(tmp.read_bytes(), int4_form))
            load_interpreter(tmp, threads=1)  # it loads and runs, or it is no file
        if target == "tflm":  # before the file appears: a file that does not fit is no file
            tflm.check(tmp, full_int8=True, layers=[layer.name for layer in model.layers],
                       name=path)
    return path


def _float_layers(model, quantize, float_layers, sparse, target):
    """`float_layers` resolved to layer names, or `()`; raises where it cannot apply."""
    if float_layers in (None, "none", "", ()):
        return ()
    if quantize != "int8":
        raise TfpruneError(f"float_layers applies to quantize='int8' only. Received: "
                           f"quantize={quantize!r}, float_layers={float_layers!r}")
    if target == "tflm":
        raise TfpruneError("target='tflm' needs every op in int8 (TFLite Micro on a "
                           "microcontroller has no float kernels to spare): leave "
                           f"float_layers out. Received: float_layers={float_layers!r}")
    if sparse:
        raise TfpruneError("float_layers has no sparse encoding (the converter's selective "
                           "quantization skips it): pass sparse=False. Received: sparse=True")
    return selective.resolve(model, float_layers)


def _target_defaults(target, quantize, int8_io, batch_size):
    """`quantize`, `int8_io` and `batch_size` with their defaults for `target` filled in."""
    micro = target == "tflm"
    if quantize is None:
        quantize = "int8" if micro else "none"
    if int8_io is None:
        int8_io = micro and quantize == "int8"
    if batch_size is None and micro:
        batch_size = 1
    return quantize, int8_io, batch_size


def _check_target(target, quantize, sparse, allow_select_ops, representative_data):
    if target not in TARGETS:
        raise TfpruneError(f"target must be one of {TARGETS}. Received: target={target!r}")
    if target != "tflm":
        return
    if quantize != "int8":
        raise TfpruneError("target='tflm' exports full int8 (TFLite Micro has no hybrid "
                           "kernels, and a microcontroller rarely has floating point): pass "
                           f"quantize='int8' or leave it out. Received: quantize={quantize!r}")
    if sparse:
        raise TfpruneError("target='tflm' cannot use the sparse encoding (TFLite Micro has no "
                           "DENSIFY op to expand it): pass sparse=False. Received: sparse=True")
    if allow_select_ops:
        raise TfpruneError("target='tflm' runs builtin ops only (TFLite Micro has no Flex "
                           "delegate): pass allow_select_ops=False. Received: "
                           "allow_select_ops=True")
    if representative_data is None:
        raise TfpruneError("target='tflm' exports full int8, whose activation ranges are "
                           "calibrated on data: pass representative_data (a few hundred "
                           "training inputs). Received: representative_data=None")


@dataclasses.dataclass
class SparseChoice:
    """Which encoding `to_tflite_where_sparse_pays` wrote, and why.

    Attributes:
        path: The `Path` written.
        sparse: Whether the file written holds the converter's sparse encoding.
        reason: One line: why the sparse or the dense encoding was kept.
        dense_bytes: Size of the dense file.
        sparse_bytes: Size of the sparse file.
        dense_delegate: What runs the dense file: `"xnnpack"` or `"builtin"`.
        sparse_delegate: What runs the sparse file.
    """

    path: Path
    sparse: bool
    reason: str
    dense_bytes: int
    sparse_bytes: int
    dense_delegate: str
    sparse_delegate: str

    def to_dict(self):
        return {**dataclasses.asdict(self), "path": str(self.path)}


def to_tflite_where_sparse_pays(model, path, **kwargs):
    """Writes `model` to `path` with the converter's sparse encoding only where it pays.

    The model is converted twice, dense and sparse (`to_tflite(..., sparse=...)`). The
    sparse file is kept only if it is smaller and runs as the dense one does: on the same
    delegate, with no more ops left to the builtin kernels (XNNPACK refuses some sparse
    ops, such as an int8 `FULLY_CONNECTED`, and the encoding adds a `DENSIFY` op per sparse
    tensor, which XNNPACK takes for float weights only). Otherwise the dense file is
    written. Either way the file at `path` is complete or absent.

    Args:
        model: See `to_tflite`.
        path: Where to write the `.tflite` file.
        **kwargs: The other arguments of `to_tflite`, except `sparse`.

    Returns:
        A `SparseChoice`: what was written, and why.

    Raises:
        See `to_tflite`.

    Example:

    >>> model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, name="fc"),
    ...                           keras.layers.Dense(10, name="out")])
    >>> fc = model.get_layer("fc")
    >>> _ = fc.kernel.assign(fc.kernel * (np.random.default_rng(0).random((32, 64)) > 0.9))
    >>> choice = tfprune.export.to_tflite_where_sparse_pays(model, "m.tflite",
    ...                                                    quantize="dynamic")
    >>> choice.sparse, choice.sparse_delegate
    (False, 'builtin')
    >>> print(choice.reason)
    dense: XNNPACK refuses its sparse FULLY_CONNECTED, so the builtin kernels would run it
    """
    if "sparse" in kwargs:
        raise TfpruneError("to_tflite_where_sparse_pays chooses the encoding itself. "
                           f"Received: sparse={kwargs['sparse']!r}")
    path = Path(path)
    dense_only = _dense_only(model, kwargs)
    if dense_only:
        to_tflite(model, path, sparse=False, **kwargs)
        ran = _runs_on(path)
        return SparseChoice(path, False, dense_only, ran["bytes"], ran["bytes"],
                            ran["delegate"], ran["delegate"])
    trial = path.with_name(f".{path.name}.sparse-trial")
    try:
        to_tflite(model, trial, sparse=True, **kwargs)
        to_tflite(model, path, sparse=False, **kwargs)
        dense, sparse = _runs_on(path), _runs_on(trial)
        keep, reason = _sparse_pays(dense, sparse)
        if keep:
            os.replace(trial, path)
    finally:
        trial.unlink(missing_ok=True)
    return SparseChoice(path, keep, reason, dense["bytes"], sparse["bytes"],
                        dense["delegate"], sparse["delegate"])


def _dense_only(model, kwargs):
    """Why a file of these `to_tflite` arguments can have no sparse encoding, or `""`."""
    if kwargs.get("quantize") == "int4":  # litert-quantizer has no sparse encoding
        return "dense: int4 files have no sparse encoding"
    if (kwargs.get("quantize") == "int8" and kwargs.get("target", "litert") != "tflm"
            and selective.resolve(_as_model(model), kwargs.get("float_layers"))):
        return "dense: the converter's selective quantization (float_layers) has no sparse encoding"
    return ""


def _runs_on(path):
    """Size, delegate, load note and the ops left outside the delegate of a `.tflite` file."""
    interpreter, used, note = load_interpreter(path, threads=1)
    return {"bytes": os.path.getsize(path), "delegate": used, "note": note,
            "outside": Counter(undelegated_ops(interpreter)) if used == "xnnpack" else Counter()}


def _sparse_pays(dense, sparse):
    """`(keep sparse?, why)` from `_runs_on` of the dense and the sparse file."""
    if sparse["delegate"] != dense["delegate"]:
        op = re.search(r"failed to delegate (\w+)", sparse["note"])
        what = f"its sparse {op.group(1)}" if op else "the sparse file"
        return False, f"dense: XNNPACK refuses {what}, so the builtin kernels would run it"
    more = sparse["outside"] - dense["outside"]
    if more:
        ops = ", ".join(f"{n} {op}" for op, n in sorted(more.items()))
        return False, (f"dense: the sparse encoding leaves {ops} outside XNNPACK (the "
                       "builtin kernels would run them)")
    if sparse["bytes"] >= dense["bytes"]:
        return False, (f"dense: the sparse file is not smaller ({sparse['bytes']:,} bytes, "
                       f"dense {dense['bytes']:,})")
    return True, (f"sparse: {sparse['bytes']:,} bytes instead of {dense['bytes']:,}, on the "
                  f"same delegate ({sparse['delegate']})")


def _as_model(model):
    import keras

    if isinstance(model, (str, os.PathLike)):
        model_path = Path(model)
        if model_path.suffix != ".keras" or not model_path.is_file():
            raise TfpruneError(f"Expected a Keras model or an existing .keras file. Received: "
                               f"model={str(model)!r}")
        try:  # in Keras' safe mode: a file's Lambda code never runs
            return keras.saving.load_model(model_path, compile=False)
        except Exception as e:  # zip, JSON and deserialisation errors all mean "not a model"
            raise TfpruneError(f"Cannot load {str(model)!r} as a Keras model "
                               f"({first_line(e)[:200]}): pass a file written by "
                               "model.save('name.keras').") from e
    if not isinstance(model, keras.Model):
        raise TfpruneError(f"Expected a Keras model or a .keras path. Received: "
                           f"model={type(model).__name__}")
    return model


def _check_mode(quantize, int8_io, representative_data, sparse=False, int4_form="mixed"):
    if quantize not in QUANTIZE_MODES:
        raise TfpruneError(f"quantize must be one of {QUANTIZE_MODES}. Received: "
                           f"quantize={quantize!r}")
    int4.check_form(int4_form)
    if quantize == "int4":
        int4.check_available()
        if sparse:
            raise TfpruneError("quantize='int4' has no sparse encoding (litert-quantizer "
                               "quantizes dense float weights): pass sparse=False. Received: "
                               "sparse=True")
    if quantize == "int8" and representative_data is None:
        raise TfpruneError("quantize='int8' calibrates activation ranges: pass "
                           "representative_data (e.g. a slice of the training set).")
    if int8_io and quantize != "int8":
        raise TfpruneError(f"int8_io=True needs quantize='int8'. Received: quantize={quantize!r}")


def _input_signature(model):
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise UnsupportedModelError("The model has no defined inputs: build it with "
                                    "keras.Input (or call it once on data) before export.")
    if len(inputs) != 1:
        raise UnsupportedModelError(f"Only single-input models are supported. Received: "
                                    f"{len(inputs)} inputs")
    return tuple(inputs[0].shape), inputs[0].dtype


def _converter_settings(tf, quantize, sparse, int8_io, allow_select_ops):
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if quantize == "int8"
           else tf.lite.OpsSet.TFLITE_BUILTINS]
    if allow_select_ops:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    target_spec = {"supported_ops": ops}
    optimizations = [] if quantize == "none" else [tf.lite.Optimize.DEFAULT]
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    if quantize == "float16":
        target_spec["supported_types"] = [tf.float16]
    kwargs = {"optimizations": optimizations, "target_spec": target_spec}
    if int8_io:
        kwargs.update(inference_input_type=tf.int8, inference_output_type=tf.int8)
    return kwargs


def _calibration(data, signature, samples, batch=1):
    """A representative-dataset generator of `batch`-sized inputs, checked against the model."""
    shape, dtype = signature
    batches = iter(_inputs_of(data))
    try:
        first = next(batches)
    except StopIteration:
        raise DataError("representative_data is empty: pass a few hundred training "
                        "inputs.") from None
    _check_shape(first, shape, "representative_data")

    def generate():
        count, pending = 0, []
        for x in _chain(first, batches):
            x = np.asarray(x, dtype=dtype)
            for row in (x if x.ndim == len(shape) else x[None]):
                pending.append(row)
                if len(pending) == batch:
                    yield [np.stack(pending)]
                    count, pending = count + batch, []
                    if count >= samples:
                        return

    return generate


def _inputs_of(data):
    if isinstance(data, np.ndarray):
        return [data]
    return (_x_of(element) for element in data)


def _x_of(element):
    x = element[0] if isinstance(element, (tuple, list)) else element
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def _chain(first, rest):
    yield first
    yield from rest


def _check_shape(x, shape, name):
    """Accepts a batch (`shape`) or a single input (`shape[1:]`); raises otherwise."""
    x_shape = tuple(np.shape(x))
    for candidate in (shape, shape[1:]):
        if len(x_shape) == len(candidate) and all(
                c is None or c == s for c, s in zip(candidate, x_shape, strict=True)):
            return
    raise DataError(f"{name} yields inputs of shape {x_shape} but the model takes "
                    f"{shape} (None = any): pass data the model was trained on. "
                    f"Received: shape={x_shape}")


def _conversion_error(error, allow_select_ops):
    text = str(error)
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)))
    if ops and not allow_select_ops:
        return UnsupportedModelError(
            f"The model needs TensorFlow ops that TFLite's builtin kernels lack: "
            f"{', '.join(ops)}. Replace the layers that use them, or pass "
            "allow_select_ops=True (the app must then link the Flex delegate).")
    if ops:
        return UnsupportedModelError(f"The model uses ops TFLite cannot run even with Select "
                                     f"TF ops: {', '.join(ops)}. Replace the layers that use "
                                     "them.")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    reason = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "")
    return UnsupportedModelError(f"TFLite conversion failed ({type(error).__name__}: "
                                 f"{reason[:300]}): check the model converts with "
                                 "quantize='none' first.")


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
    >>> path = tfprune.export.to_tflite(model, "model.tflite")
    >>> x = np.random.default_rng(0).random((100, 4), dtype="float32")
    >>> y = model.predict(x, verbose=0).argmax(axis=1)   # the Keras model's own answers
    >>> tfprune.export.evaluate(path, x, y)
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
    >>> path = tfprune.export.to_tflite(model, "model.tflite")
    >>> x = np.random.default_rng(0).random((5, 4), dtype="float32")
    >>> y = model.predict(x, verbose=0).argmax(axis=1)
    >>> y[0] = (y[0] + 1) % 3   # one label the model cannot match
    >>> tfprune.export.correct(path, x, y).tolist()
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
        _check_shape(x, (None, *runner.shape[1:]), "dataset")
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
    >>> y = tfprune.export.predict(tfprune.export.to_tflite(model, "m.tflite"), x)
    >>> bool(np.allclose(y, model.predict(x, verbose=0), atol=1e-5))
    True
    """
    runner = _Runner(*load_interpreter(path, threads, delegate)[:2],
                     reload=lambda: load_interpreter(path, threads, "builtin")[0], raw=raw)
    x = np.asarray(x)
    _check_shape(x, (None, *runner.shape[1:]), "x")
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


# --- inspection ------------------------------------------------------------------------------

@dataclasses.dataclass
class TensorInfo:
    """A constant (weight) tensor of a `.tflite` file.

    `bytes` is what the file stores for its values (fewer when stored sparse);
    `index_bytes` what the sparse encoding adds for its segment and index arrays;
    `zero_fraction` is the share of the dense tensor's elements that are zero (equal to the
    zero point when quantized); `densified` says a DENSIFY op expands it at run time.
    """

    name: str
    shape: list
    dtype: str
    bytes: int
    zero_fraction: float
    sparse: bool
    densified: bool
    quantized: str
    index_bytes: int = 0


@dataclasses.dataclass
class TFLiteInfo:
    """What `inspect` finds in a `.tflite` file."""

    path: str
    size_raw: int
    size_gzip: int
    ops: dict
    tensors: list
    inputs: list
    outputs: list

    @property
    def densify(self):
        """True when a DENSIFY op expands sparse weights to dense at run time."""
        return "DENSIFY" in self.ops

    @property
    def sparse_tensors(self):
        return [t for t in self.tensors if t.sparse]

    def tensor(self, substring):
        """The first weight tensor whose name contains `substring`."""
        for t in self.tensors:
            if substring in t.name:
                return t
        raise KeyError(f"No weight tensor of {self.path!r} has {substring!r} in its name; "
                       f"they are {[_scope(t.name) for t in self.tensors]}")

    def to_dict(self):
        return {**dataclasses.asdict(self), "densify": self.densify}

    def __str__(self):
        weights = sum(t.bytes for t in self.tensors)
        index = sum(t.index_bytes for t in self.tensors)
        lines = [f"{self.path}: {self.size_raw:,} bytes, {self.size_gzip:,} gzipped; "
                 f"weights {weights:,} bytes in {len(self.tensors)} tensors"
                 + (f" + {index:,} bytes of sparse indices" if index else ""),
                 "inputs: " + ", ".join(self.inputs), "outputs: " + ", ".join(self.outputs),
                 "ops: " + ", ".join(f"{name} x{n}" for name, n in self.ops.items()),
                 f"sparse tensors: {len(self.sparse_tensors)}; DENSIFY op: "
                 + ("yes (sparse weights densified at run time)" if self.densify else "no")]
        rows = [("tensor", "shape", "dtype", "bytes", "index B", "zeros", "stored", "quant")]
        for t in self.tensors:
            stored = ("sparse+densify" if t.densified else "sparse") if t.sparse else "dense"
            rows.append((_scope(t.name), "x".join(map(str, t.shape)) or "scalar",
                         t.dtype, f"{t.bytes:,}", f"{t.index_bytes:,}",
                         f"{t.zero_fraction:.1%}", stored, t.quantized))
        lines.append(format_table(rows))
        return "\n".join(lines)


def _scope(name):
    """The layer scope of a converter tensor name ("m/conv1/BiasAdd;m/conv1/conv" -> "m/conv1")."""
    first = name.split(";")[0]
    return (first.rsplit("/", 1)[0] if "/" in first else first)[:56]


def inspect(path):
    """What a `.tflite` file holds: ops, weight tensors with their sparsity, sizes.

    Args:
        path: Path to the `.tflite` file.

    Returns:
        A `TFLiteInfo`: `ops` (name -> count), `tensors` (a `TensorInfo` per constant
        tensor: shape, dtype, bytes, fraction of zeros, stored sparse?, densified?),
        `densify`, `size_raw`, `size_gzip`; `str()` of it is a report, `to_dict()` a
        JSON-ready dict.

    Raises:
        TfpruneError: the file is missing, empty, truncated or not a TFLite model.

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
    ...                           keras.layers.Flatten(), keras.layers.Dense(10, name="fc")])
    >>> conv = model.get_layer("conv")
    >>> kernel, bias = conv.get_weights()
    >>> kernel[..., :3] = 0.0   # 3 of the 4 filters
    >>> conv.set_weights([kernel, bias])
    >>> info = tfprune.export.inspect(tfprune.export.to_tflite(model, "m.tflite", sparse=True))
    >>> info.tensor("conv").zero_fraction, info.tensor("conv").sparse, info.densify
    (0.75, True, True)
    >>> print(info)
    m.tflite: ... bytes, ... gzipped; weights ... bytes in ... tensors + ... bytes of sparse indices
    ...
    ops: DENSIFY x1, CONV_2D x1, ...
    """
    data = read_tflite(path)
    model, names = parse(data, path)
    try:
        graph = model.subgraphs[0]
        ops = Counter(names[op.opcodeIndex] for op in graph.operators or [])
        densified = {op.inputs[0] for op in graph.operators or []
                     if names[op.opcodeIndex] == "DENSIFY"}
        tensors = [info for i, t in enumerate(graph.tensors or [])
                   if (info := _tensor_info(t, model.buffers, data, i in densified))]
        inputs = [_io(graph.tensors[i]) for i in graph.inputs]
        outputs = [_io(graph.tensors[i]) for i in graph.outputs]
    except Exception as e:  # flatbuffers reads past the end of a truncated file in many ways
        raise TfpruneError(f"Cannot parse {str(path)!r} as a TFLite model ({e}): the file is "
                           "truncated or corrupt; export it again.") from None
    raw, gz = data_sizes(data)
    return TFLiteInfo(str(path), raw, gz, dict(ops), tensors, inputs, outputs)


_INT4 = 17  # schema TensorType.INT4: packed two values a byte, no NumPy type


def _tensor_info(tensor, buffers, data, densified):
    buffer = buffers[tensor.buffer] if tensor.buffer < len(buffers) else None
    if buffer is None:
        return None
    if buffer.offset > 1:  # large models keep buffers after the flatbuffer
        raw = np.frombuffer(data[buffer.offset:buffer.offset + buffer.size], np.uint8)
    else:
        raw = np.asarray(buffer.data if buffer.data is not None else [], np.uint8)
    if raw.size == 0:
        return None
    dtype = NUMPY_TYPES.get(tensor.type)
    shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
    quant = tensor.quantization
    scales = quant.scale if quant is not None and quant.scale is not None else []
    zero_point = 0
    if quant is not None and quant.zeroPoint is not None and len(quant.zeroPoint) == 1:
        zero_point = int(quant.zeroPoint[0])
    zeros = float("nan")
    dense = int(np.prod(shape)) if shape else 1
    if tensor.type == _INT4:  # two values a byte, low nibble first, sign-extended
        nibbles = np.stack([raw & 0xF, raw >> 4], axis=-1).reshape(-1)[:dense].astype(np.int8)
        values = np.where(nibbles > 7, nibbles - 16, nibbles)
        zeros = 1.0 - int(np.count_nonzero(values != zero_point)) / dense if dense else 0.0
    elif dtype is not None and raw.size % np.dtype(dtype).itemsize == 0:
        values = raw.view(dtype)
        nonzero = int(np.count_nonzero(values != zero_point))
        zeros = 1.0 - nonzero / dense if dense else 0.0
    quantized = "" if len(scales) == 0 else ("per-channel" if len(scales) > 1 else "per-tensor")
    name = tensor_name(tensor)
    kind = "int4" if tensor.type == _INT4 else np.dtype(dtype).name if dtype else \
        f"type{tensor.type}"
    return TensorInfo(name, shape, kind,
                      int(raw.size), zeros, tensor.sparsity is not None, densified, quantized,
                      _index_bytes(tensor.sparsity))


def _index_bytes(sparsity):
    """Bytes of the segment and index arrays of a sparse tensor's dimension metadata."""
    total = 0
    for dim in (sparsity.dimMetadata or []) if sparsity is not None else []:
        for vector in (dim.arraySegments, dim.arrayIndices):
            values = getattr(vector, "values", None)
            if values is not None:
                total += np.asarray(values).nbytes
    return int(total)


def _io(tensor):
    name = tensor_name(tensor)
    shape = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
    dims = "x".join("?" if d == -1 else str(d) for d in shape)
    return f"{name} {dims} {np.dtype(NUMPY_TYPES.get(tensor.type, np.uint8)).name}"


# --- runtimes ---------------------------------------------------------------------------------


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
    >>> path = tfprune.export.to_tflite(model, "dynamic.tflite", quantize="dynamic")
    >>> [(r.name, r.runs) for r in tfprune.export.runtimes(path)]
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
    found = tflm.problems(path)
    if found:
        return Runtime(name, "no", "; ".join(f"{p}: {p.fix}" for p in found[:4]))
    floats = tflm.int8_problems(path)
    kind = (f"computes in floating point in {len(floats)} ops (a microcontroller needs an "
            "FPU)" if floats else "full int8")
    try:
        arena = tflm.measure_arena(path)
    except tflm.TflmUnavailable as e:
        return Runtime(name, "not run", f"every op is in TFLM's op table, {kind}; {e}")
    except TfpruneError as e:
        return Runtime(name, "no", str(e))
    return Runtime(name, "yes", f"{kind}; arena {arena}")
