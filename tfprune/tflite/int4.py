"""Int4 weights for a float `.tflite` file, through Google's `litert-quantizer`.

The TFLite converter quantizes weights to 8 bits at least; 4-bit weights come from the
`litert-quantizer` package (import name `litert_quantizer`), which rewrites a float
`.tflite` file op by op from a recipe. This module holds the recipes tfprune uses and the
one call into the package; `tfprune.tflite.to_tflite(..., quantize="int4")` converts to
float first and hands the bytes here. Nothing here edits a flatbuffer by hand.

Which form is fastest depends on the kernels the runtime has, and was measured
(`benchmarks/quantize_modes.py`: LiteRT 2.3, 1 thread, batch 1, interleaved medians; the
Caffe LeNet-5 and the compressed 16-32-64 LeNet-5 of `flags/lenet5_paper.flags`):

- `"weight_only"` (int4 weights, a DEQUANTIZE op before each float op): XNNPACK refuses
  int4 DEQUANTIZE, so every conv and dense layer runs on the builtin float kernels: 166.0
  and 25.6 µs, 2.1x and 2.7x slower than the float32 files (79.1 and 9.4 µs).
- `"dynamic"` (int4 weights, activations quantized on the fly, integer compute): XNNPACK
  has int4 kernels for FULLY_CONNECTED but none for CONV_2D, which runs on the builtin
  hybrid kernels: 73.7 and 15.2 µs.
- `"mixed"` (the default): dynamic int4 for FULLY_CONNECTED, dynamic int8 for the other
  ops with 1,024 weights or more, float below (as the converter's dynamic range: XNNPACK's
  int8 conv on a one-channel input is slower than its float one): every op on XNNPACK,
  31.0 and 4.5 µs, as fast as dynamic range (33.7 and 4.7 µs) at 54% and 66% of its bytes.
  In a CNN the dense layers hold most weights (the Caffe LeNet-5: 94%), so it is 6% and
  27% larger than `"dynamic"`.
- `"dynamic_int8_edges"`: `"dynamic"`, but the first and the last layer with weights
  (the conv on the raw image, the classifier) in dynamic int8, as low-bit quantization
  commonly keeps them: the rounding of 4 bits hurts most where the weights are few. On the
  16-32-30 LeNet-5 of `flags/lenet5_int4.flags` it cost 352 bytes over `"dynamic"` and
  gave 99.02% where `"dynamic"` gave 98.97% (the run's float baseline: 99.10%); chosen
  on those test figures of that one model, so a hand-tuned choice, not a searched one.
"""

import re

from tfprune.errors import TfpruneError, UnsupportedModelError
from tfprune.options import INT4_FORMS


def available():
    """Whether the `litert-quantizer` package can be imported."""
    try:
        import litert_quantizer  # noqa: F401
    except ImportError:
        return False
    return True


def check_available():
    """Raises a one-line `TfpruneError` unless `litert-quantizer` is installed."""
    if not available():
        raise TfpruneError("quantize='int4' needs Google's litert-quantizer package: pip "
                           "install litert-quantizer. Received: quantize='int4'")


def check_form(form):
    """Raises a one-line `TfpruneError` unless `form` is one of `INT4_FORMS`."""
    if form not in INT4_FORMS:
        raise TfpruneError(f"int4_form must be one of {INT4_FORMS}. Received: "
                           f"int4_form={form!r}")


def recipe(form="mixed", edges=()):
    """The `litert-quantizer` recipe (its JSON format, as Python data) of an int4 form.

    Args:
        form: String, one of `INT4_FORMS` (see `quantize`), defaults to `"mixed"`.
        edges: For `"dynamic_int8_edges"`: the output tensor names of the ops kept in int8
            (`edge_ops` finds them in a file), defaults to `()`.

    Returns:
        A list of recipe entries; later entries take precedence for the ops they name.

    Example:

    >>> [(e["operation"], e["op_config"]["weight_tensor_config"]["num_bits"])
    ...  for e in tfprune.tflite.int4.recipe("mixed")]
    [('*', 8), ('FULLY_CONNECTED', 4)]
    """
    check_form(form)
    if form == "weight_only":
        return [_entry("*", 4, dynamic=False)]
    if form == "dynamic":
        return [_entry("*", 4)]
    if form == "dynamic_int8_edges":
        # litert-quantizer's scope of an op: its output names, each followed by ";"
        return [_entry("*", 4), *(_entry("*", 8, regex=f"^{re.escape(name)};")
                                  for name in edges)]
    # int8 where XNNPACK has no int4 kernel, and (as the TFLite converter's dynamic range)
    # float for weights under 1,024 values: a first conv on one channel runs faster in float
    return [_entry("*", 8, min_weight_elements=1024), _entry("FULLY_CONNECTED", 4)]


def _entry(operation, bits, dynamic=True, min_weight_elements=0, regex=".*"):
    return {
        "regex": regex,
        "operation": operation,
        "algorithm_key": "min_max_uniform_quantize",
        "op_config": {
            "weight_tensor_config": {"num_bits": bits, "symmetric": True,
                                     "granularity": "CHANNELWISE", "dtype": "INT"},
            "compute_precision": "INTEGER" if dynamic else "FLOAT",
            "explicit_dequantize": not dynamic,
            "skip_checks": False,
            "min_weight_elements": min_weight_elements,
        },
    }


# Ops whose weights the recipes quantize.
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def edge_ops(float_model):
    """The output tensor names of the first and the last op with weights in a float file.

    Args:
        float_model: Bytes of a float32 `.tflite` file.

    Returns:
        A tuple of one or two names (one when the model has a single such op), or `()`.
    """
    from tfprune.tflite.interpreter import parse

    model, names = parse(bytes(float_model), "the float model")
    graph = model.subgraphs[0]
    weighted = [op for op in graph.operators if names[op.opcodeIndex] in WEIGHTED_OPS]
    found = []
    for op in weighted[:1] + weighted[-1:]:
        name = graph.tensors[op.outputs[0]].name
        name = name.decode() if isinstance(name, bytes) else name
        if name not in found:
            found.append(name)
    return tuple(found)


def quantize(float_model, form="mixed"):
    """Int4 weights for a float `.tflite` model, in one of the forms above.

    Args:
        float_model: Bytes of a float32 `.tflite` file (no sparse encoding).
        form: String, one of `"mixed"` (dynamic int4 for FULLY_CONNECTED, dynamic int8
            for the other ops with 1,024 weights or more, float below: all on XNNPACK),
            `"dynamic"` (dynamic int4 for every supported op), `"dynamic_int8_edges"`
            (`"dynamic"` with the first and last layer with weights in int8) or
            `"weight_only"` (int4 weights dequantized before float ops), defaults to
            `"mixed"`.

    Returns:
        The quantized model's bytes.

    Raises:
        TfpruneError: `litert-quantizer` is missing, or `form` is unknown.
        UnsupportedModelError: the quantizer fails on the model.

    Example:

    >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, name="fc")])
    >>> float_file = tfprune.tflite.to_tflite(model, "float.tflite")
    >>> data = tfprune.tflite.int4.quantize(float_file.read_bytes())
    >>> len(data) < float_file.stat().st_size / 5   # 4 bits a weight instead of 32
    True
    """
    check_available()
    check_form(form)
    entries = recipe(form, edge_ops(float_model) if form == "dynamic_int8_edges" else ())
    from litert_quantizer import Quantizer

    try:
        quantizer = Quantizer(bytearray(float_model), entries)
        result = quantizer.quantize(enable_progress_bar=False, enable_progress_report=False)
    except Exception as e:  # the quantizer raises many types; say what failed, in a line
        reason = next((line.strip() for line in str(e).splitlines() if line.strip()),
                      type(e).__name__)
        raise UnsupportedModelError(f"litert-quantizer failed on the model ({type(e).__name__}: "
                                    f"{reason[:300]}): export it with quantize='dynamic' "
                                    f"instead. Received: int4_form={form!r}") from e
    return bytes(result.quantized_model)
