"""`keras.ops` calls between layers, as nodes of the layer graph.

A functional model records a `keras.ops` call made on its tensors (`x * 0.5`,
`ops.relu6(x + 3) / 6`, `ops.concatenate`) as an operation node, not a layer: MobileNetV3's
hard-sigmoid is one. `LayerGraph.from_model` turns each such call into an `OperationLayer`:
a layer holding the operation (its Keras config) and the call's arguments, with the
tensors it read replaced by `{"__input__": i}` and every constant kept as a value. So the
rewriters treat it as a layer, and the models they build hold it as one (it saves and
loads in a `.keras` file like any layer).

What tfprune knows of each operation kind lives in `OPERATIONS`, a dict of the operation's
class name (`"Add"`, `"Relu6"`, `"Concatenate"`, ...) to a `LayerHandler`: how channels pass
through, how shrinking slices its constants, which `activation=` it equals. An operation
kind not in the table is a barrier (its channels are kept); `register_operation` teaches
one. A call that cannot be rebuilt (several outputs, an argument that is no tensor and no
plain value) is refused with one line naming it, where it is, and the fix.

Example:

>>> x = keras.Input((4, 4, 8))
>>> y = keras.layers.Conv2D(8, 1, name="conv")(x)
>>> model = keras.Model(x, keras.ops.relu6(y + 3.0) / 6.0)
>>> graph = tfprune.graph.LayerGraph.from_model(model)
>>> [node.layer.kind for node in graph.layers()[1:]]
['Add', 'Relu6', 'TrueDivide']
>>> groups = tfprune.graph.ChannelGroups(graph)
>>> sorted(set(groups.rules.values()))
['pass', 'producer']
"""

import keras
import numpy as np

from tfprune import compat, handlers
from tfprune.errors import UnsupportedModelError
from tfprune.handlers import BARRIER, CONCAT, FLATTEN, MERGE, PASS, LayerHandler


@keras.saving.register_keras_serializable(package="tfprune")
class OperationLayer(keras.layers.Layer):
    """One `keras.ops` call of a functional model, as a layer (no weights).

    Args:
        operation: Dict, the operation serialized by `keras.saving.serialize_keras_object`.
        arguments: Dict with `"args"` (a list) and `"kwargs"` (a dict) of the call, where
            `{"__input__": i}` stands for the i-th tensor the layer is called with and
            `{"__array__": values, "dtype": name}` for an array constant.
        **kwargs: Base layer arguments (`name`, `dtype`).

    Example:

    >>> layer = tfprune.operations.OperationLayer(
    ...     keras.saving.serialize_keras_object(keras.src.ops.numpy.Add()),
    ...     {"args": [{"__input__": 0}, 3.0], "kwargs": {}})
    >>> np.asarray(layer([np.zeros((1, 2), "float32")])).tolist()
    [[3.0, 3.0]]
    """

    def __init__(self, operation, arguments, **kwargs):
        super().__init__(**kwargs)
        self.operation = operation
        self.arguments = arguments
        self._op = keras.saving.deserialize_keras_object(operation)

    @property
    def kind(self):
        """The operation's class name (`"Add"`, `"Relu6"`, ...)."""
        return self.operation["class_name"]

    @property
    def op_config(self):
        return self.operation.get("config", {})

    def constants(self):
        """The array and number constants among the call's arguments."""
        found = []
        _walk(self.arguments, lambda v: found.append(_value(v)) if _is_constant(v) else None)
        return found

    def call(self, inputs):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        args = _fill(self.arguments["args"], inputs)
        kwargs = _fill(self.arguments["kwargs"], inputs)
        return self._op(*args, **kwargs)

    def get_config(self):
        return {**super().get_config(), "operation": self.operation,
                "arguments": self.arguments}


# Reading a call.


def from_call(keras_node, model):
    """`(layer, input tensors)` for the operation node `keras_node` of `model`.

    Raises:
        UnsupportedModelError: the call cannot be rebuilt (see `refusal`).
    """
    operation = keras_node.operation
    if _computes_mask(operation, model):
        raise UnsupportedModelError(refusal(operation, model, "it computes a mask"))
    if len(keras_node.outputs) != 1:
        raise UnsupportedModelError(refusal(
            operation, model, f"it has {len(keras_node.outputs)} outputs"))
    tensors = []
    try:
        arguments = {"args": _template(list(keras_node.arguments.args), tensors),
                     "kwargs": _template(dict(keras_node.arguments.kwargs), tensors)}
        layer = OperationLayer(keras.saving.serialize_keras_object(operation), arguments,
                               name=operation.name)
    except Exception as error:  # whatever stops the call being rebuilt from its config
        why = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
        raise UnsupportedModelError(refusal(operation, model, why)) from None
    return layer, tensors


def refusal(operation, model, why):
    """One line for a `keras.ops` call tfprune cannot rebuild: which, where, what to do."""
    nodes = compat.inbound_nodes(operation)
    feeds = sorted({compat.producer(tensor).name for node in nodes[:1]
                    for tensor in node.input_tensors if compat.producer(tensor) is not None})
    where = f" on the output of {', '.join(repr(name) for name in feeds)}" if feeds else ""
    kind = type(operation).__name__
    if _computes_mask(operation, model):
        fix = "tfprune rewrites models without masking: remove the Masking layer"
    else:
        fix = ("make it a layer (a Layer subclass taught to tfprune with "
               "tfprune.register_layer)")
    return (f"Model {model.name!r} calls operation {operation.name!r} ({kind}){where}, "
            f"which tfprune cannot rebuild ({why}): {fix}. "
            f"Received: operation={operation.name!r}")


def _computes_mask(operation, model):
    """Keras records a `Masking` layer's mask as `NotEqual` and `Any` operation nodes."""
    return type(operation).__name__ in ("NotEqual", "Any") and any(
        isinstance(layer, keras.layers.Masking) for layer in model.layers)


def _template(value, tensors):
    """`value` with each KerasTensor replaced by `{"__input__": i}` (appended to `tensors`)."""
    if isinstance(value, keras.KerasTensor):
        tensors.append(value)
        return {"__input__": len(tensors) - 1}
    if isinstance(value, (list, tuple)):
        return [_template(v, tensors) for v in value]
    if isinstance(value, dict):
        return {k: _template(v, tensors) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.ndarray, np.generic)) or keras.ops.is_tensor(value):
        array = np.asarray(keras.ops.convert_to_numpy(value))
        return {"__array__": array.tolist(), "dtype": str(array.dtype)}
    raise TypeError(f"an argument of type {type(value).__name__}")


def _fill(value, inputs):
    if isinstance(value, dict):
        if "__input__" in value:
            return inputs[value["__input__"]]
        if "__array__" in value:
            return np.asarray(value["__array__"], value["dtype"])
        return {k: _fill(v, inputs) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, inputs) for v in value]
    return value


def _walk(value, fn):
    fn(value)
    if isinstance(value, dict) and "__array__" not in value and "__input__" not in value:
        for v in value.values():
            _walk(v, fn)
    elif isinstance(value, list):
        for v in value:
            _walk(v, fn)


def _is_constant(value):
    return (isinstance(value, dict) and "__array__" in value) or (
        isinstance(value, (int, float)) and not isinstance(value, bool))


def _value(value):
    return np.asarray(value["__array__"]) if isinstance(value, dict) else np.asarray(value)


def _map_constants(value, fn):
    """`value` with every array constant replaced by `fn(array)` (same encoding)."""
    if isinstance(value, dict) and "__array__" in value:
        array = fn(np.asarray(value["__array__"], value["dtype"]))
        return {"__array__": array.tolist(), "dtype": value["dtype"]}
    if isinstance(value, dict):
        return {k: _map_constants(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_constants(v, fn) for v in value]
    return value


# Handlers, one per operation kind.


def _kind(node):
    return f"operation {node.name!r} ({node.layer.kind})"


class Elementwise(LayerHandler):
    """An element-wise operation on tensors and constants (`x + 3`, `relu6`, `x * gate`).

    Output channel i reads channel i of every tensor input: one input passes channels
    through, several are coupled as a residual `Add` couples them (a squeeze-and-excitation
    `x * gate` included: the gate's channel i scales the map's channel i). Constants must be
    scalars or per-channel (last axis 1 or the channel count); shrinking slices the latter.

    Args:
        activation: String, the `activation=` this operation equals when it has one
            tensor input and no other argument (fusion folds it into the layer before);
            defaults to `None`.
    """

    def __init__(self, activation=None):
        self.activation = activation

    def channels(self, node):
        channels, rank = node.output_shape[-1], len(node.output_shape)
        for shape in node.input_shapes:
            if len(shape) != rank or shape[-1] != channels:
                return BARRIER, f"{_kind(node)} broadcasts its inputs across channels"
        for value in node.layer.constants():
            if value.ndim > rank or (value.ndim and value.shape[-1] not in (1, channels)):
                return BARRIER, f"{_kind(node)} broadcasts a constant across channels"
        return (MERGE if len(node.inputs) > 1 else PASS), None

    def channel_weights(self, layer, channels):
        return []

    def slice(self, node, keep_in, keep_out, dropped):
        channels = len(keep_out)

        def cut(array):
            per_channel = array.ndim and array.shape[-1] == channels and channels > 1
            return array[..., keep_out] if per_channel else array

        config = node.layer.get_config()
        config["arguments"] = _map_constants(config["arguments"], cut)
        return config, []

    def affine(self, node):
        """`x + c`, `x - c`, `c - x`, `x * c`, `c * x`, `x / c` with one constant `c` that is
        a scalar or per channel: `(s, t)` per channel (else `None`)."""
        args = node.layer.arguments["args"]
        kind, channels = node.layer.kind, node.output_shape[-1]
        if (kind not in _AFFINE or len(args) != 2 or node.layer.arguments["kwargs"]
                or len(node.inputs) != 1 or sum(_is_constant(a) for a in args) != 1):
            return None
        first = args[0] == {"__input__": 0}
        c = _value(args[1] if first else args[0]).astype(np.float64)
        if c.size not in (1, channels) or (c.ndim and c.size != c.shape[-1]):
            return None
        c = np.broadcast_to(c.reshape(-1), (channels,))
        one, zero = np.ones(channels), np.zeros(channels)
        return {("Add", True): (one, c), ("Add", False): (one, c),
                ("Subtract", True): (one, -c), ("Subtract", False): (-one, c),
                ("Multiply", True): (c, zero), ("Multiply", False): (c, zero),
                ("TrueDivide", True): (1 / c, zero), ("Divide", True): (1 / c, zero),
                }.get((kind, first))

    def as_activation(self, config):
        arguments = config["arguments"]
        plain = arguments["args"] == [{"__input__": 0}] and not arguments["kwargs"]
        if self.activation is None:
            return None
        if not plain or _extra_config(config):
            return None, f"{config['operation']['class_name']} with arguments"
        return self.activation, None


_AFFINE = ("Add", "Subtract", "Multiply", "TrueDivide", "Divide")


def _extra_config(config):
    return {k: v for k, v in config["operation"].get("config", {}).items() if k != "name"}


class Reduce(LayerHandler):
    """Mean, Max, Min, Sum over axes other than the channel axis: channels pass through."""

    def channels(self, node):
        axis = node.layer.op_config.get("axis")
        rank = len(node.input_shapes[0])
        axes = [a % rank for a in np.atleast_1d(axis)] if axis is not None else [rank - 1]
        if len(node.inputs) != 1 or rank - 1 in axes:
            return BARRIER, f"{_kind(node)} reduces the channel axis"
        return PASS, None

    def channel_weights(self, layer, channels):
        return []


class Concat(LayerHandler):
    """`ops.concatenate` on the channel axis: each input's channels, shifted."""

    def channels(self, node):
        axis = node.layer.op_config.get("axis", 0)
        if axis not in (-1, len(node.output_shape) - 1):
            return BARRIER, f"{_kind(node)} joins along axis {axis}"
        return CONCAT, None

    def channel_weights(self, layer, channels):
        return []


class Reshape(LayerHandler):
    """`ops.reshape`, `squeeze`, `expand_dims`: channels last and kept, or a flatten."""

    def channels(self, node):
        before, after = node.input_shapes[0], node.output_shape
        if len(node.inputs) != 1:
            return BARRIER, f"{_kind(node)} takes several tensors"
        if after[-1] == before[-1] and np.prod(after[1:]) == np.prod(before[1:]):
            return PASS, None
        if len(after) == 2 and node.layer.kind == "Reshape":
            return FLATTEN, None
        return BARRIER, f"{_kind(node)} moves channels to other axes"

    def channel_weights(self, layer, channels):
        return []

    def slice(self, node, keep_in, keep_out, dropped):
        config = node.layer.get_config()
        if node.layer.kind == "Reshape":
            shape = list(config["operation"]["config"]["newshape"])
            if shape[-1] != -1:
                shape[-1] = int(keep_out.sum())
            config["operation"] = {**config["operation"], "config": {
                **config["operation"]["config"], "newshape": shape}}
        return config, []


class Operations(LayerHandler):
    """The handler of `OperationLayer`: asks `OPERATIONS` for the operation's kind."""

    def _of(self, layer_or_config):
        kind = (layer_or_config.kind if isinstance(layer_or_config, OperationLayer)
                else layer_or_config["operation"]["class_name"])
        return OPERATIONS.get(kind)

    def channels(self, node):
        handler = self._of(node.layer)
        if handler is None:
            return BARRIER, (f"{_kind(node)} is an operation the channel analysis does not "
                             "know (tfprune.operations.register_operation teaches it)")
        return handler.channels(node)

    def channel_weights(self, layer, channels):
        return []

    def slice(self, node, keep_in, keep_out, dropped):
        return self._of(node.layer).slice(node, keep_in, keep_out, dropped)

    def affine(self, node):
        handler = self._of(node.layer)
        return None if handler is None else handler.affine(node)

    def as_activation(self, config):
        handler = self._of(config)
        return None if handler is None else handler.as_activation(config)


OPERATIONS = {}


def register_operation(kind, handler):
    """Teaches tfprune a `keras.ops` operation kind (its class name, e.g. `"Erf"`).

    Raises:
        TypeError: `kind` is not a string or `handler` not a `LayerHandler`.
    """
    if not isinstance(kind, str) or not isinstance(handler, LayerHandler):
        raise TypeError(f"register_operation takes a class name and a LayerHandler. "
                        f"Received: kind={kind!r}, handler={handler!r}")
    OPERATIONS[kind] = handler


def _register_defaults():
    activations = {"Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid",
                   "HardSigmoid": "hard_sigmoid", "Silu": "silu", "HardSilu": "hard_silu",
                   "Tanh": "tanh", "Softplus": "softplus", "Softsign": "softsign",
                   "Selu": "selu"}
    for kind, name in activations.items():
        register_operation(kind, Elementwise(activation=name))
    for kind in ("Add", "Subtract", "Multiply", "TrueDivide", "Divide", "Maximum", "Minimum",
                 "Power", "Gelu", "Elu", "LeakyRelu", "Exp", "Log", "Log1p", "Expm1", "Sqrt",
                 "Square", "Abs", "Absolute", "Negative", "Reciprocal", "Clip", "Sign",
                 "Floor", "Round", "Cast"):
        register_operation(kind, Elementwise())
    for kind in ("Mean", "Max", "Min", "Sum"):
        register_operation(kind, Reduce())
    register_operation("Concatenate", Concat())
    for kind in ("Reshape", "Squeeze", "ExpandDims"):
        register_operation(kind, Reshape())
    handlers.REGISTRY.register(OperationLayer, Operations())


_register_defaults()
