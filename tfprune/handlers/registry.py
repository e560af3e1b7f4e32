"""`HandlerRegistry`, the table of handlers owned by an instance, and `REGISTRY`, the one
every stage reads; `register_layer` and `register_prunable` extend it.
"""


import keras

from tfprune.handlers.base import LayerHandler, as_prunable


class HandlerRegistry:
    """The table of layer handlers: `layer class -> LayerHandler`, owned by this instance.

    `REGISTRY` is the one every stage reads; a separate instance starts empty (useful in
    tests). A layer with a `get_prunable_weights()` method prunes those weights whatever
    its handler says.
    """

    def __init__(self):
        self._table = {}
        self.default = LayerHandler()

    def register(self, layer_class, handler):
        """Registers (or replaces) the handler of `layer_class` (and of its subclasses).

        Raises:
            TypeError: `layer_class` is not a Keras layer class or `handler` not a
                `LayerHandler`.
        """
        if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
            raise TypeError(f"`layer_class` must be a Keras layer class. Received: "
                            f"layer_class={layer_class!r}")
        if not isinstance(handler, LayerHandler):
            raise TypeError(f"`handler` must be a tfprune.handlers.LayerHandler. Received: "
                            f"handler={handler!r}")
        self._table[layer_class] = handler

    def unregister(self, layer_class):
        """Removes the handler registered for exactly `layer_class`, if any."""
        self._table.pop(layer_class, None)

    def lookup(self, layer, exact=False):
        """The handler of `layer` (an instance or a class); the base `LayerHandler` if none.

        Args:
            layer: A layer or a layer class.
            exact: Boolean, defaults to `False`: follow the class's MRO, so subclasses of a
                registered class share its handler. `True`: only the handler registered
                for this very class (what fusion uses: a subclass may override `call`).
        """
        cls = layer if isinstance(layer, type) else type(layer)
        if exact:
            return self._table.get(cls, self.default)
        for parent in cls.__mro__:
            if parent in self._table:
                return self._table[parent]
        return self.default

    def supports(self, layer):
        """Whether `layer` has weights to prune (it need not be built)."""
        return callable(getattr(layer, "get_prunable_weights", None)) or self.lookup(
            layer).prunable

    def prunable_weights(self, layer):
        """The `PrunableWeight`s of a built layer (empty if it has none)."""
        own = getattr(layer, "get_prunable_weights", None)
        items = own() if callable(own) else self.lookup(layer).prunable_weights(layer)
        return [as_prunable(w) for w in items]


REGISTRY = HandlerRegistry()


def register_layer(layer_class, handler):
    """Teaches every stage of tfprune a layer type: pruning, shrinking, fusion, counting.

    Args:
        layer_class: A `keras.layers.Layer` subclass (its subclasses share the handler,
            except for fusion).
        handler: A `LayerHandler`, e.g. `Producer("units")` for a Dense-like layer,
            `PassThrough()` for a per-channel one.

    Raises:
        TypeError: `layer_class` is not a layer class or `handler` not a `LayerHandler`.

    Example: a Dense-like layer of one's own, pruned, shrunk and counted like a Dense.

    >>> import keras
    >>> import tfprune
    >>> class MyDense(keras.layers.Layer):
    ...     def __init__(self, units, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.units = units
    ...     def build(self, input_shape):
    ...         self.kernel = self.add_weight(shape=(input_shape[-1], self.units))
    ...         self.bias = self.add_weight(shape=(self.units,), initializer="zeros")
    ...     def call(self, x):
    ...         return x @ self.kernel + self.bias
    ...     def get_config(self):
    ...         return {**super().get_config(), "units": self.units}
    >>> tfprune.handlers.register_layer(MyDense, tfprune.handlers.Producer("units"))
    >>> model = keras.Sequential([keras.Input((6,)), MyDense(4, name="mine"),
    ...                           keras.layers.Dense(2)])
    >>> tfprune.bench.count(model)["mine"].macs
    24
    """
    REGISTRY.register(layer_class, handler)


def register_prunable(layer_class, fn):
    """Tells pruning which weights of a layer type to mask; the rest of its handler stays.

    The shorthand of `register_layer` for pruning alone: `layer_class` keeps the handler
    it had (its parent class's, or none: then shrinking keeps its channels and counting
    gives it 0 MACs) with `fn` for its prunable weights. Register a full handler with
    `register_layer` to have it shrunk and counted too.

    Args:
        layer_class: A `keras.layers.Layer` subclass.
        fn: Callable taking a built layer, returning its prunable variables (input
            channels on axis -2, output channels on axis -1) or `PrunableWeight`s.

    Raises:
        TypeError: `layer_class` is not a layer class or `fn` is not callable.

    Example:

    >>> import keras
    >>> import tfprune
    >>> class Gate(keras.layers.Layer):
    ...     def build(self, input_shape):
    ...         self.w = self.add_weight(shape=(input_shape[-1], 4))
    ...     def call(self, x):
    ...         return x @ self.w
    >>> tfprune.register_prunable(Gate, lambda layer: [layer.w])
    >>> tfprune.handlers.REGISTRY.supports(Gate())
    True
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise TypeError(f"`layer_class` must be a Keras layer class. Received: "
                        f"layer_class={layer_class!r}")
    REGISTRY.register(layer_class, REGISTRY.lookup(layer_class).with_prunable_weights(fn))
