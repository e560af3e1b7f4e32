"""Full int8 with a few layers left in float: the TFLite converter's selective quantization.

Full int8 is not always the fastest int8 on LiteRT. `tfprune.bench.profile` of the
compressed LeNet-5 (`benchmarks/quantize_modes.py`) put the whole gap between full int8 and
dynamic range in its first conv, on a one-channel input: XNNPACK's QS8 convolution costs
more there than its float one (the input channel is too few to fill its int8 vector
lanes; the weights are tiny either way). Left in float, that conv reads the float input
directly and the file is as fast as dynamic range with int8 activations everywhere else.

`float_layers` does that through the converter's own selective quantization, the
`denylisted_nodes` of `tf.lite.experimental.QuantizationDebugger` (documented in the
TFLite guide "Inspecting quantization errors with quantization debugger", section
"Selective quantization"): the model is calibrated once by the converter and quantized with
the named layers' ops left in float. `slow_layers` names the layers the measurement says
to keep: convolutions whose input has at most `MAX_FLOAT_CHANNELS` channel (one: on
three, an RGB image, XNNPACK's int8 conv was the faster).

A file with a float op is not for integer-only hardware: TensorFlow Lite Micro, and NPUs
and DSPs that take integer ops only, need every op in int8 (`target="tflm"` refuses it).
"""

import functools
import re
import tempfile
import warnings

from tfprune.errors import TfpruneError, UnsupportedModelError

# Convolutions reading at most this many channels stay float under `float_layers="auto"`.
# Measured (`benchmarks/quantize_modes.py`, XNNPACK, `bench.profile`): on one channel
# (LeNet-5's first conv, 28x28x1) XNNPACK's int8 conv is slower than its float one; on three
# (mobilenet_tiny's first conv, 32x32x3 RGB) it is faster (2.06 against 2.64 µs on the
# compressed model, 3.88 against 5.28 on the baseline), so RGB first convs stay int8.
MAX_FLOAT_CHANNELS = 1
_CONVOLUTIONS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv1D")


def slow_layers(model, max_channels=MAX_FLOAT_CHANNELS):
    """Names of the convolutions of `model` that read at most `max_channels` channels.

    These are the layers whose int8 kernels XNNPACK runs slower than its float ones on
    this machine (the first conv of a CNN on grayscale images).

    Args:
        model: A built `keras.Model`.
        max_channels: Integer, the widest input that counts, defaults to `MAX_FLOAT_CHANNELS`.

    Returns:
        A tuple of layer names, in the model's layer order.

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="a"),
    ...                           keras.layers.Conv2D(4, 3, name="b")])
    >>> tfprune.tflite.selective.slow_layers(model)
    ('a',)
    """
    return tuple(layer.name for layer in model.layers
                 if type(layer).__name__ in _CONVOLUTIONS
                 and _channels_in(layer) is not None and _channels_in(layer) <= max_channels)


def _channels_in(layer):
    try:
        shape = layer.input.shape
    except (AttributeError, ValueError):
        return None
    return shape[-1]


def resolve(model, float_layers):
    """`float_layers` as a tuple of layer names of `model`: `"auto"` -> `slow_layers`,
    `None`, `"none"` or `()` -> `()`, a comma-separated string or a sequence -> its names,
    each checked to be a layer of the model."""
    if float_layers is None or float_layers in ("none", "", ()):
        return ()
    if float_layers == "auto":
        return slow_layers(model)
    names = (tuple(n.strip() for n in float_layers.split(",") if n.strip())
             if isinstance(float_layers, str) else tuple(float_layers))
    known = [layer.name for layer in model.layers]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise TfpruneError(f"float_layers names no layer of the model: {', '.join(unknown)} "
                           f"(its layers: {', '.join(known)}). Received: "
                           f"float_layers={float_layers!r}")
    return names


def convert(model, input_signature, representative, float_layers, int8_io=False):
    """Full int8 `.tflite` bytes of `model` with the ops of `float_layers` left in float.

    Args:
        model: A built `keras.Model`.
        input_signature: A list of one `tf.TensorSpec` (the batch fixed or not).
        representative: A representative-dataset generator function (as the converter's).
        float_layers: Non-empty sequence of layer names of `model`.
        int8_io: Boolean, int8 input and output (else float, with (de)quantize ops).

    Returns:
        The file's bytes.

    Raises:
        UnsupportedModelError: a layer has no op of its own in the converted graph.
    """
    import tensorflow as tf

    # The debugger runs its debug model on TensorFlow's own (deprecated) interpreter.
    with tempfile.TemporaryDirectory() as saved_model, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        converter = _converter(model, input_signature, saved_model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        # The debugger calibrates with the converter, then quantizes with the denylist.
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: _first(representative),
            debug_options=tf.lite.experimental.QuantizationDebugOptions())
        nodes = op_outputs(debugger.calibrated_model, float_layers)
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=nodes, fully_quantize=bool(int8_io))
        return debugger.get_nondebug_quantized_model()


def _first(representative, count=1):
    """The debugger runs its debug model on this at construction: one input is enough."""
    for i, element in enumerate(representative()):
        if i >= count:
            return
        yield element


def _converter(model, input_signature, folder):
    """The TFLite converter Keras' LiteRT export builds (Keras' ExportArchive, then
    `from_saved_model`), returned before it converts so the debugger can drive it."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", functools.partial(model.__call__, training=False),
                         input_signature=input_signature)
    archive.write_out(folder, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(folder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.experimental_enable_resource_variables = True
    return converter


def op_outputs(data, layers):
    """The output tensor names of the ops of each layer in `layers`, in a converted model.

    The converter names an op's output after the TensorFlow ops fused into it
    (`"m_1/conv1_1/Relu;m_1/conv1_1/BiasAdd;..."`), each under its Keras layer's scope,
    which Keras may number (`conv1_1`).

    Args:
        data: Bytes of a `.tflite` file.
        layers: Layer names.

    Returns:
        A list of tensor names.

    Raises:
        UnsupportedModelError: a layer has no op (the converter folded it into another).
    """
    from tfprune.tflite.interpreter import parse

    model, _ = parse(data, "the calibrated model")
    graph = model.subgraphs[0]
    names = [graph.tensors[i].name for op in graph.operators for i in op.outputs]
    names = [n.decode() if isinstance(n, bytes) else n for n in names]
    found = []
    for layer in layers:
        scope = re.compile(rf"(^|/){re.escape(layer)}(_\d+)?/")
        mine = [n for n in names if any(scope.search(part) for part in n.split(";"))]
        if not mine:
            raise UnsupportedModelError(f"Layer {layer!r} has no op of its own in the converted "
                                        "model (the converter merged it into another), so it "
                                        f"cannot stay float. Received: float_layers={layers!r}")
        found += mine
    return found
