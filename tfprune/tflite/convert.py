"""A Keras model converted to a `.tflite` file: `to_tflite`, `to_tflite_where_sparse_pays`.

Conversion goes through Keras' own LiteRT exporter (`model.export(..., format="litert")`,
which traces the model into a SavedModel and runs the TFLite converter), with our converter
settings: the quantization mode, the converter's sparse encoding, builtin ops only unless
asked, and an atomic write so that a failed export leaves no file behind. Reading and
loading `.tflite` files is `tfprune.tflite.interpreter`'s, below this module (`bench` is
above it).
With `target="tflm"` the file is made for TensorFlow Lite for Microcontrollers: full int8,
no sparse encoding, and checked op by op against what TFLM has (`tfprune.micro`, also below
this module) before it is written.
"""

import dataclasses
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from tfprune import atomic, micro
from tfprune.errors import DataError, TfpruneError, UnsupportedModelError
from tfprune.options import QUANTIZE_MODES, TARGETS
from tfprune.tflite import int4, selective
from tfprune.tflite.interpreter import (
    first_line,
    load_interpreter,
    undelegated_ops,
)


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
            refuses: the slowest); see `tfprune.tflite.int4`. Defaults to `"mixed"`.
        float_layers: With `quantize="int8"`, layers whose ops stay float, through the
            converter's selective quantization (`tfprune.tflite.selective`): `"auto"` (the
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
    >>> path = tfprune.tflite.to_tflite(model, "model.tflite", quantize="int8",
    ...                                 representative_data=images)
    >>> str(path), tfprune.tflite.inspect(path).tensor("fc").dtype
    ('model.tflite', 'int8')
    >>> micro = tfprune.tflite.to_tflite(model, "micro.tflite", target="tflm",
    ...                                  representative_data=images)
    >>> tfprune.tflite.inspect(micro).inputs    # int8 in, batch 1
    ['serving_default_args_0:0 1x8x8x1 int8']
    >>> int4 = tfprune.tflite.to_tflite(model, "int4.tflite", quantize="int4")
    >>> tfprune.tflite.inspect(int4).tensor("fc").dtype
    'int4'
    """
    from tfprune.backend import require_tensorflow  # imports Keras: not at module load

    require_tensorflow("tfprune.tflite.to_tflite")
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
            micro.check(tmp, full_int8=True, layers=[layer.name for layer in model.layers],
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
    >>> choice = tfprune.tflite.to_tflite_where_sparse_pays(model, "m.tflite",
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
    check_shape(first, shape, "representative_data")

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


def check_shape(x, shape, name):
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
