"""The model as a graph of layers: the one view that fusion and shrinking both walk.

`LayerGraph.from_model` reads a Sequential or Functional model into nodes, one per layer,
each knowing the names of the nodes it reads from. Rewriters edit the graph (`replace`,
`remove`) and `to_model` builds a new, independent Keras model from it: every layer is
re-created from its config and given its weights, so nothing is shared with the caller's
model. A `keras.ops` call between layers (`x + 3`, `ops.concatenate`) is a node too, as a
`tfprune.operations.OperationLayer`; a nested model is refused, or read as its layers by
`flatten`.

`ChannelGroups` finds the channels that must be removed together (Torch-Pruning's
dependency graph); how each layer passes channels on comes from its handler, in the one
table of layer knowledge, `tfprune.handlers.REGISTRY`.
"""

import dataclasses

import keras
import numpy as np

from tfprune import compat, handlers, operations
from tfprune.errors import TfpruneError, UnsupportedModelError


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

    Example:

    >>> import tfprune
    >>> import tfprune.models
    >>> graph = tfprune.graph.LayerGraph.from_model(tfprune.models.lenet5())
    >>> graph.consumers("conv1"), graph.nodes["ip1"].inputs
    (['pool1'], ['flatten'])
    >>> graph.remove("pool1")  # conv1 now feeds conv2
    >>> graph.nodes["conv2"].inputs
    ['conv1']
    """

    def __init__(self, nodes, outputs, sequential=False, name=None):
        self.nodes = nodes
        self.outputs = outputs
        self.sequential = sequential
        self.name = name

    @classmethod
    def from_model(cls, model, nested=False):
        """Reads `model` into a graph.

        Args:
            model: A Sequential or Functional model.
            nested: Boolean, defaults to `False`: a model nested in `model` is refused.
                `True`: a nested model called once is read as its layers, so the graph
                (and `to_model`) is flat; see `flatten`.

        Raises:
            UnsupportedModelError: a subclassed or unbuilt model, a layer called more than
                once (shared weights), a layer with several outputs, or a nested model
                (unless `nested`).
        """
        functional = _as_functional(model)
        nodes = {}
        for tensor in functional.inputs:
            layer = compat.producer(tensor)
            nodes[layer.name] = Node(layer.name, layer, [], output_shape=tuple(tensor.shape))
        alias = _read(functional, model, nodes, {}, nested)
        outputs = [_source(t, alias) for t in functional.outputs]
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
        layers = {node.name: clone_layer(node.layer) for node in self.layers()}
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
        if not model.built or compat.functional(model) is None:
            raise UnsupportedModelError(
                f"Sequential model {model.name!r} has no input shape: start it with "
                "keras.Input(shape) or build it before rewriting."
            )
        return compat.functional(model)
    if not isinstance(model, keras.Model) or compat.nodes_by_depth(model) is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} {getattr(model, 'name', '')!r} is a subclassed model: "
            "tfprune needs a Sequential or Functional model (rebuild it with keras.Input)."
        )
    return model


def _read(functional, model, nodes, alias, nested):
    """Adds the calls of `functional` to `nodes` in order, a nested model's as its own.

    `alias` maps names that are no node (a nested model, its inputs) to the node whose
    output they stand for; returns it.
    """
    by_depth = compat.nodes_by_depth(functional)
    for depth in sorted(by_depth, reverse=True):
        for kn in by_depth[depth]:
            if kn.is_input or isinstance(kn.operation, keras.layers.InputLayer):
                continue
            if isinstance(kn.operation, keras.Model):
                if not nested:
                    raise UnsupportedModelError(
                        f"Model {model.name!r} nests model {kn.operation.name!r}: flatten it "
                        "into one Functional model first (tfprune.graph.flatten(model)). "
                        f"Received: model={kn.operation.name!r}")
                _inline(kn, model, nodes, alias)
                continue
            node = _node(kn, model)
            node.inputs = [alias.get(name, name) for name in node.inputs]
            if node.name in nodes:
                raise UnsupportedModelError(
                    f"Layer {node.name!r} is called more than once (shared weights); "
                    "tfprune rewrites only models where each layer is used once.")
            nodes[node.name] = node
    return alias


def _inline(keras_node, model, nodes, alias):
    """Reads a nested model's layers in place of its call (a fine-tuned base, a stem)."""
    nested = keras_node.operation
    inner = _as_functional(nested)
    if nested.name in alias or len(inner.outputs) != 1:
        raise UnsupportedModelError(
            f"Model {model.name!r} nests model {nested.name!r} "
            + ("more than once (shared weights)" if nested.name in alias
               else f"with {len(inner.outputs)} outputs")
            + ": tfprune reads a nested model called once, with one output. "
            f"Received: model={nested.name!r}")
    for outer, tensor in zip(keras_node.input_tensors, inner.inputs, strict=True):
        alias[compat.producer(tensor).name] = _source(outer, alias)
    _read(inner, model, nodes, alias, nested=True)
    alias[nested.name] = _source(inner.outputs[0], alias)


def _source(tensor, alias):
    name = compat.producer(tensor).name
    return alias.get(name, name)


def _node(keras_node, model):
    """The `Node` of one call in a functional model: a layer's, or a `keras.ops` call's."""
    layer = keras_node.operation
    if not isinstance(layer, keras.layers.Layer):
        layer, tensors = operations.from_call(keras_node, model)
        return Node(name=layer.name, layer=layer, packed=True,
                    inputs=[compat.producer(t).name for t in tensors],
                    input_shapes=[tuple(t.shape) for t in tensors],
                    output_shape=tuple(keras_node.outputs[0].shape))
    if len(keras_node.outputs) != 1:
        raise UnsupportedModelError(
            f"Layer {layer.name!r} has {len(keras_node.outputs)} outputs; tfprune rewrites "
            "only layers with one output."
        )
    args = keras_node.arguments.args
    return Node(
        name=layer.name,
        layer=layer,
        inputs=[compat.producer(t).name for t in keras_node.input_tensors],
        packed=len(args) == 1 and isinstance(args[0], (list, tuple)),
        weights=[np.array(w) for w in layer.get_weights()],
        input_shapes=[tuple(t.shape) for t in keras_node.input_tensors],
        output_shape=tuple(keras_node.outputs[0].shape),
    )


def flatten(model):
    """`model` as one Functional model, with the layers of any nested model in its place.

    A fine-tuned `keras.applications` base inside a Sequential, or a model built of
    sub-models (ConvNeXt's stem), becomes a model every tfprune stage can read. Nothing is
    shared with `model`: layers are re-created with its weights.

    Raises:
        UnsupportedModelError: see `LayerGraph.from_model` (a nested model called twice, or
            with several outputs).

    Example:

    >>> base = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="inner")])
    >>> x = keras.Input((8,))
    >>> model = keras.Model(x, keras.layers.Dense(2, name="head")(base(x)))
    >>> [layer.name for layer in tfprune.graph.flatten(model).layers[1:]]
    ['inner', 'head']
    """
    graph = LayerGraph.from_model(model, nested=True)
    graph.sequential = False
    return graph.to_model()


def clone_layer(layer):
    """A new, unbuilt layer with `layer`'s config (no weights, nothing shared)."""
    return layer.__class__.from_config(layer.get_config())


# Coupled channel groups: Torch-Pruning's dependency graph, over the last (channel) axis.


def channel_rule(node):
    """How `node` maps its input channels to its output channels.

    Unknown channel counts and channels_first layers are barriers; otherwise the layer's
    handler decides (`tfprune.handlers.LayerHandler.channels`).

    Returns:
        A `(rule, reason)` pair. `rule` is one of `"producer"` (fresh output channels),
        `"pass"` (input i -> output i), `"merge"` (every input's i -> output i),
        `"depthwise"` (input i -> outputs i*m..i*m+m-1), `"concat"` (indices shifted),
        `"flatten"` (input i -> outputs p*C+i) or `"barrier"` (unknown: channels kept on both
        sides), and `reason` says why a barrier is one (else `None`).
    """
    kind = type(node.layer).__name__
    if any(s is None or s[-1] is None for s in [*node.input_shapes, node.output_shape]):
        return "barrier", f"{kind} {node.name!r} has an unknown channel count"
    if node.layer.get_config().get("data_format", "channels_last") != "channels_last":
        return "barrier", f"{kind} {node.name!r} is channels_first"
    rule, reason = handlers.REGISTRY.lookup(node.layer).channels(node)
    if rule not in handlers.RULES:
        raise TfpruneError(f"The handler of {kind} returned an unknown channel rule; use one "
                           f"of {handlers.RULES}. Received: rule={rule!r}")
    return rule, reason


class ChannelGroups:
    """Coupled channels: a union-find over the channels of every node's output.

    Each node output channel ("slot") is joined with the channels it must be removed with:
    a pass-through layer's output channel i with its input channel i, every branch of an
    Add (Subtract, Multiply, ...) at the same index, a Concatenate's output channel with the
    input channel it copies, a Flatten's outputs with the channel they came from. A channel
    can leave the model only if its whole group can.

    Attributes:
        graph: The `LayerGraph`.
        rules: Dict of node name -> rule (see `channel_rule`).
        barriers: Dict of node name -> why the analysis stops there.
        offsets: Dict of node name -> index of its channel 0 among all slots.
        sizes: Dict of node name -> its output channel count.
        num_slots: The number of channels (slots) of all node outputs together.

    Example:

    >>> import keras
    >>> import tfprune
    >>> x = keras.Input((8, 8, 3))
    >>> a = keras.layers.Conv2D(4, 3, padding="same", name="a")(x)
    >>> b = keras.layers.Conv2D(4, 1, name="b")(x)
    >>> model = keras.Model(x, keras.layers.Add(name="add")([a, b]))
    >>> groups = tfprune.graph.ChannelGroups(tfprune.graph.LayerGraph.from_model(model))
    >>> groups.rules["add"], groups.find(groups.slot("a", 2)) == groups.find(groups.slot("b", 2))
    ('merge', True)
    """

    def __init__(self, graph):
        self.graph = graph
        self.rules, self.barriers, self.offsets, self.sizes = {}, {}, {}, {}
        total = 0
        for name, node in graph.nodes.items():
            size = node.output_shape[-1]
            self.sizes[name] = int(size) if size is not None else 0
            self.offsets[name] = total
            total += self.sizes[name]
        self._parent = np.arange(total)
        self.num_slots = total
        for node in graph.layers():
            rule, reason = channel_rule(node)
            self.rules[node.name] = rule
            if reason:
                self.barriers[node.name] = reason
            self._join(node, rule)
        self._labels = np.array([self.find(s) for s in range(total)], dtype=np.int64)

    def slot(self, name, index):
        """The global index of channel `index` of node `name`'s output."""
        return self.offsets[name] + index

    def find(self, slot):
        """The group (a representative slot) `slot` belongs to."""
        parent = self._parent
        root = slot
        while parent[root] != root:
            root = parent[root]
        while parent[slot] != root:
            parent[slot], slot = root, parent[slot]
        return int(root)

    def group_of(self, name):
        """Group of each of node `name`'s output channels, as an array."""
        return self._labels[self.offsets[name]:self.offsets[name] + self.sizes[name]]

    def _union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)

    def _join(self, node, rule):
        out = self.offsets[node.name]
        if rule in ("pass", "merge"):
            for source in node.inputs:
                for i in range(self.sizes[node.name]):
                    self._union(self.slot(source, i), out + i)
        elif rule == "depthwise":
            multiplier = node.layer.get_config()["depth_multiplier"]
            for i in range(self.sizes[node.inputs[0]]):
                for j in range(multiplier):
                    self._union(self.slot(node.inputs[0], i), out + i * multiplier + j)
        elif rule == "concat":
            shift = 0
            for source in node.inputs:
                for i in range(self.sizes[source]):
                    self._union(self.slot(source, i), out + shift + i)
                shift += self.sizes[source]
        elif rule == "flatten":
            channels = self.sizes[node.inputs[0]]
            for p in range(self.sizes[node.name]):
                self._union(self.slot(node.inputs[0], p % channels), out + p)
