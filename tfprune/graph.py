"""The model as a graph of layers: the one view that fusion and shrinking both walk.

`LayerGraph.from_model` reads a Sequential or Functional model into nodes, one per layer,
each knowing the names of the nodes it reads from. Rewriters edit the graph (`replace`,
`remove`) and `to_model` builds a new, independent Keras model from it: every layer is
re-created from its config and given its weights, so nothing is shared with the caller's
model.
"""

import dataclasses

import keras
import numpy as np

from tfprune.errors import UnsupportedModelError


@dataclasses.dataclass
class Node:
    """One layer call.

    Attributes:
        name: The layer's name, unique in the graph.
        layer: The layer (for a replaced node, a template: only its config is used).
        inputs: Names of the nodes this one reads, in call order.
        packed: Whether the layer is called with a list (Add, Concatenate) or one tensor.
        weights: The weights `to_model` gives the new layer.
        input_shapes: Shapes of the inputs in the original model (batch axis included).
        output_shape: Shape of the output in the original model, or of the replacement.
    """

    name: str
    layer: keras.layers.Layer
    inputs: list
    packed: bool = False
    weights: list = dataclasses.field(default_factory=list)
    input_shapes: list = dataclasses.field(default_factory=list)
    output_shape: tuple = None

    @property
    def is_input(self):
        return isinstance(self.layer, keras.layers.InputLayer)

    @property
    def config(self):
        return self.layer.get_config()


class LayerGraph:
    """A Sequential or Functional model as a graph of `Node`s in topological order.

    Attributes:
        nodes: Dict of name -> `Node`, inputs first, in an order where every node comes
            after the nodes it reads.
        outputs: Names of the nodes whose outputs are the model's outputs.
        sequential: Whether the model was a `keras.Sequential`.
        name: The model's name.
    """

    def __init__(self, nodes, outputs, sequential=False, name=None):
        self.nodes = nodes
        self.outputs = outputs
        self.sequential = sequential
        self.name = name

    @classmethod
    def from_model(cls, model):
        """Reads `model` into a graph.

        Raises:
            UnsupportedModelError: a subclassed or unbuilt model, a nested model, a layer
                called more than once (shared weights), or a layer with several outputs.
        """
        functional = _as_functional(model)
        nodes = {}
        for tensor in functional.inputs:
            layer = tensor._keras_history.operation
            nodes[layer.name] = Node(layer.name, layer, [], output_shape=tuple(tensor.shape))
        for depth in sorted(functional._nodes_by_depth, reverse=True):
            for kn in functional._nodes_by_depth[depth]:
                layer = kn.operation
                if kn.is_input or isinstance(layer, keras.layers.InputLayer):
                    continue
                _check_layer(layer, model)
                if layer.name in nodes:
                    raise UnsupportedModelError(
                        f"Layer {layer.name!r} is called more than once (shared weights); "
                        "tfprune rewrites only models where each layer is used once."
                    )
                args = kn.arguments.args
                packed = len(args) == 1 and isinstance(args[0], (list, tuple))
                if len(kn.outputs) != 1:
                    raise UnsupportedModelError(
                        f"Layer {layer.name!r} has {len(kn.outputs)} outputs; tfprune rewrites "
                        "only layers with one output."
                    )
                nodes[layer.name] = Node(
                    name=layer.name,
                    layer=layer,
                    inputs=[t._keras_history.operation.name for t in kn.input_tensors],
                    packed=packed,
                    weights=[np.array(w) for w in layer.get_weights()],
                    input_shapes=[tuple(t.shape) for t in kn.input_tensors],
                    output_shape=tuple(kn.outputs[0].shape),
                )
        outputs = [t._keras_history.operation.name for t in functional.outputs]
        return cls(nodes, outputs, isinstance(model, keras.Sequential), model.name)

    # Queries.

    @property
    def input_names(self):
        return [name for name, node in self.nodes.items() if node.is_input]

    def layers(self):
        """The non-input nodes, in topological order."""
        return [node for node in self.nodes.values() if not node.is_input]

    def consumers(self, name):
        """Names of the nodes that read `name`'s output (each once)."""
        return [n.name for n in self.nodes.values() if name in n.inputs]

    def is_output(self, name):
        return name in self.outputs

    def only_consumer(self, name):
        """The single node reading `name`, or `None` if several do or it is a model output."""
        consumers = self.consumers(name)
        if len(consumers) != 1 or self.is_output(name):
            return None
        return self.nodes[consumers[0]]

    # Edits.

    def replace(self, name, layer, weights, output_shape=None):
        """Puts `layer` (built from its config by `to_model`) with `weights` in `name`'s place.

        The new layer takes over the node's name in the graph; consumers are unchanged.
        """
        node = self.nodes[name]
        node.layer = layer
        node.weights = [np.asarray(w) for w in weights]
        if output_shape is not None:
            node.output_shape = tuple(output_shape)

    def remove(self, name):
        """Removes a one-input node; whoever read it reads its input instead."""
        node = self.nodes.pop(name)
        if len(node.inputs) != 1:
            raise ValueError(f"Only one-input nodes can be removed. Received: {name!r}")
        source = node.inputs[0]
        for other in self.nodes.values():
            other.inputs = [source if i == name else i for i in other.inputs]
        self.outputs = [source if o == name else o for o in self.outputs]

    # Building.

    def to_model(self, name=None):
        """A new Keras model: Sequential if the original was and the graph is still a chain."""
        name = name or self.name
        inputs = {n: self._input_tensor(self.nodes[n]) for n in self.input_names}
        layers = {node.name: _clone_layer(node.layer) for node in self.layers()}
        if self.sequential and self._is_chain():
            model = keras.Sequential([*inputs.values(), *layers.values()], name=name)
        else:
            tensors = dict(inputs)
            for node in self.layers():
                args = [tensors[i] for i in node.inputs]
                tensors[node.name] = layers[node.name](args if node.packed else args[0])
            ins = list(inputs.values())
            outs = [tensors[n] for n in self.outputs]
            model = keras.Model(ins[0] if len(ins) == 1 else ins,
                                outs[0] if len(outs) == 1 else outs, name=name)
        for node in self.layers():
            if node.weights or layers[node.name].weights:
                layers[node.name].set_weights(node.weights)
        return model

    @staticmethod
    def _input_tensor(node):
        cfg = node.layer.get_config()
        return keras.Input(batch_shape=tuple(cfg["batch_shape"]), dtype=cfg.get("dtype"),
                           name=node.name)

    def _is_chain(self):
        previous = self.input_names
        if len(previous) != 1:
            return False
        for node in self.layers():
            if node.inputs != previous or node.packed:
                return False
            previous = [node.name]
        return self.outputs == previous


def _as_functional(model):
    if isinstance(model, keras.Sequential):
        if not model.built or getattr(model, "_functional", None) is None:
            raise UnsupportedModelError(
                f"Sequential model {model.name!r} has no input shape: start it with "
                "keras.Input(shape) or build it before rewriting."
            )
        return model._functional
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise UnsupportedModelError(
            f"{type(model).__name__} {getattr(model, 'name', '')!r} is a subclassed model: "
            "tfprune needs a Sequential or Functional model (rebuild it with keras.Input)."
        )
    return model


def _check_layer(layer, model):
    if isinstance(layer, keras.Model):
        raise UnsupportedModelError(
            f"Model {model.name!r} nests model {layer.name!r}: flatten it into one "
            "Functional model first."
        )


def _clone_layer(layer):
    return layer.__class__.from_config(layer.get_config())
