"""Layer handlers: one registration teaches pruning, shrinking, fusion and counting a layer."""

import keras
import numpy as np
import pytest
from keras import layers

import tfprune
from tfprune import handlers
from tfprune.bench import count
from tfprune.graph import ChannelGroups, LayerGraph


class MyConv(layers.Layer):
    """A 2D convolution of our own: its own kernel, bias, config and call."""

    def __init__(self, filters, kernel_size, padding="valid", activation=None, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.padding = filters, kernel_size, padding
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        k = self.kernel_size
        self.kernel = self.add_weight(shape=(k, k, input_shape[-1], self.filters), name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")

    def call(self, x):
        y = keras.ops.conv(x, self.kernel, padding=self.padding)
        return self.activation(y + self.bias)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "padding": self.padding,
                "activation": keras.activations.serialize(self.activation)}


class MyDense(layers.Layer):
    """A Dense layer of our own."""

    def __init__(self, units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, x):
        return self.activation(x @ self.kernel + self.bias)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "activation": keras.activations.serialize(self.activation)}


# Registered once, from outside the package, as a user would.
tfprune.handlers.register_layer(MyConv, tfprune.handlers.Producer("filters"))
tfprune.handlers.register_layer(MyDense, tfprune.handlers.Producer("units"))


def _custom_model():
    return keras.Sequential([
        keras.Input((10, 10, 2)),
        MyConv(8, 3, activation="relu", name="c1"),
        MyConv(6, 3, activation="relu", name="c2"),
        layers.Flatten(name="flat"),
        MyDense(12, activation="relu", name="d1"),
        MyDense(3, name="out"),
    ], name="custom")


def _zero_filters(weights):
    """Indices of the output channels (last axis) that are all zero."""
    return np.flatnonzero(np.abs(weights).reshape(-1, weights.shape[-1]).sum(axis=0) == 0)


@pytest.mark.slow
def test_custom_layers_registered_once_are_pruned_shrunk_and_counted():
    model = _custom_model()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10, 10, 2)).astype("float32")
    y = rng.normal(size=(64, 3)).astype("float32")
    for layer in model.layers[:-1]:  # as if trained: dead units will output relu(bias)
        if layer.weights:
            layer.bias.assign(rng.uniform(-0.5, 0.5, layer.bias.shape))

    # Pruned: whole filters and units, during a short fit.
    pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, begin_step=0, frequency=1),
                           granularity="filter")
    wrapped = {layer.layer.name for layer in pruned.layers
               if isinstance(layer, tfprune.PruneLowMagnitude)}
    assert wrapped == {"c1", "c2", "d1"}  # the classifier is left whole
    pruned.compile("adam", "mse")
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    stripped = tfprune.strip(pruned)
    kernels = {name: stripped.get_layer(name).kernel.numpy() for name in ("c1", "c2", "d1")}
    assert [len(_zero_filters(k)) for k in kernels.values()] == [4, 3, 6]
    biases = stripped.get_layer("c1").bias.numpy()[_zero_filters(kernels["c1"])]
    assert np.all(biases == 0)  # a pruned filter's bias goes with it: its channel is zero

    # Shrunk: the zeroed filters and units leave, the outputs stay.
    plan = tfprune.shrink_plan(stripped)
    assert "c1 (MyConv): 8 -> 4 filters" in str(plan) and "d1 (MyDense): 12 -> 6 units" in str(
        plan)
    assert plan.removed["c1"] == _zero_filters(kernels["c1"]).tolist()
    small = plan.apply()
    assert [type(layer) for layer in small.layers] == [type(layer) for layer in model.layers]
    assert small.get_layer("c1").kernel.shape == (3, 3, 2, 4)
    assert small.get_layer("c2").kernel.shape == (3, 3, 4, 3)
    assert small.get_layer("d1").kernel.shape == (6 * 6 * 3, 6)
    assert small.get_layer("out").kernel.shape == (6, 3)
    ya, yb = np.asarray(stripped(x)), np.asarray(small(x))
    np.testing.assert_allclose(yb, ya, rtol=1e-5, atol=1e-5 * np.abs(ya).max())

    # Counted: parameters and MACs of the custom layers, before and after.
    before, after = count(stripped), count(small)
    assert before["c1"].macs == 8 * 8 * (3 * 3 * 2 * 8)
    assert before["d1"].macs == 216 * 12 and before["d1"].params == 216 * 12 + 12
    assert after["c1"].macs == 8 * 8 * (3 * 3 * 2 * 4) and after["c1"].params == 72 + 4
    assert after["c2"].macs == 6 * 6 * (3 * 3 * 4 * 3) and after["c2"].params == 108 + 3
    assert after["d1"].macs == 108 * 6 and after["d1"].params == 108 * 6 + 6
    assert after["out"].macs == 6 * 3
    assert after.macs == 4608 + 3888 + 648 + 18


def test_fusion_leaves_registered_layers_without_a_fusion_kind_alone():
    model = keras.Sequential([keras.Input((6, 6, 2)), MyConv(3, 3, name="c"),
                              layers.BatchNormalization(name="bn"), layers.Flatten(),
                              MyDense(2, name="d")])
    steps = tfprune.fusion.plan(model)
    assert not steps.merges and "leaves bn:" in str(steps)


def test_a_subclass_is_pruned_shrunk_and_counted_as_its_parent_but_not_fused():
    class MyConv2D(layers.Conv2D):
        pass

    model = keras.Sequential([keras.Input((6, 6, 2)), MyConv2D(4, 3, name="c"),
                              layers.BatchNormalization(name="bn"), layers.Flatten(),
                              layers.Dense(2, name="d")])
    conv = model.get_layer("c")
    assert handlers.REGISTRY.lookup(conv) is handlers.REGISTRY.lookup(layers.Conv2D)
    assert handlers.REGISTRY.lookup(conv, exact=True) is handlers.REGISTRY.default
    assert count(model)["c"].macs == 4 * 4 * 3 * 3 * 2 * 4
    _ = conv.kernel.assign(conv.kernel.numpy() * [0.0, 1.0, 1.0, 0.0])
    assert tfprune.shrink(model).get_layer("c").filters == 2
    # Fusion rewrites exact types only: the subclass may override call().
    plan = tfprune.fusion.plan(model)
    assert all("c" not in step.layers for step in plan.merges)
    assert "leaves c: no rule merges MyConv2D" in str(plan)


def test_register_prunable_alone_prunes_and_keeps_channels_saying_how_to_shrink():
    class Gate(layers.Layer):
        """y = x @ w: prunable, but unknown to shrinking and counting."""

        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], 4), name="w")

        def call(self, x):
            return x @ self.w

    try:
        tfprune.register_prunable(Gate, lambda layer: [layer.w])
        model = keras.Sequential([keras.Input((5,)), Gate(name="g"), layers.Dense(2)])
        assert tfprune.prune(model, tfprune.ConstantSparsity(0.5, 0)).layers[0].layer.name == "g"
        plan = tfprune.shrink_plan(model)
        assert "stops at g" in str(plan) and "register_layer" in str(plan)
        assert count(model)["g"].params == 20 and count(model)["g"].macs == 0
    finally:
        handlers.REGISTRY.unregister(Gate)


def test_register_prunable_on_a_subclass_keeps_the_rest_of_its_parents_handler():
    class Half(layers.Dense):
        """Prunes only the first half of its input rows."""

    try:
        tfprune.register_prunable(Half, lambda layer: [layer.kernel])
        handler = handlers.REGISTRY.lookup(Half)
        assert handler is not handlers.REGISTRY.lookup(layers.Dense)
        assert handler.units == "units" and handler.prunable
        model = keras.Sequential([keras.Input((4,)), Half(3, name="h"), layers.Dense(2)])
        assert ChannelGroups(LayerGraph.from_model(model)).rules["h"] == "producer"
        assert count(model)["h"].macs == 12
        pruned = tfprune.PruneLowMagnitude(Half(3), tfprune.ConstantSparsity(0.5, 0))
        pruned.build((None, 4))
        assert [pw.variable for pw in pruned.prunable] == [pruned.layer.kernel]
    finally:
        handlers.REGISTRY.unregister(Half)
    assert handlers.REGISTRY.lookup(Half) is handlers.REGISTRY.lookup(layers.Dense)


def test_a_registry_instance_owns_its_table():
    registry = handlers.HandlerRegistry()
    assert registry.lookup(layers.Dense(2)) is registry.default
    assert not registry.supports(layers.Dense(2))
    registry.register(MyDense, handlers.Producer("units"))
    assert registry.supports(MyDense(2)) and handlers.REGISTRY.lookup(MyDense).units == "units"
    with pytest.raises(TypeError, match="layer_class"):
        registry.register(object, handlers.PassThrough())
    with pytest.raises(TypeError, match="handler"):
        registry.register(MyDense, lambda layer: [])
    with pytest.raises(TypeError, match="fn"):
        tfprune.register_prunable(MyDense, "kernel")
    with pytest.raises(tfprune.TfpruneError, match="positions"):
        handlers.Producer(positions="middle")


def test_a_handler_with_an_unknown_channel_rule_is_named():
    class Odd(layers.Layer):
        def call(self, x):
            return x

    class OddHandler(handlers.LayerHandler):
        def channels(self, node):
            return "sideways", None

    try:
        handlers.register_layer(Odd, OddHandler())
        model = keras.Sequential([keras.Input((3,)), layers.Dense(3), Odd(), layers.Dense(2)])
        with pytest.raises(tfprune.TfpruneError, match="Received: rule='sideways'"):
            tfprune.shrink_plan(model)
    finally:
        handlers.REGISTRY.unregister(Odd)


def test_custom_pass_through_and_identity_layers():
    class Scale(layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

        def call(self, x):
            return x * self.w

    class Noise(layers.Layer):
        def call(self, x, training=False):
            return x + keras.random.normal(keras.ops.shape(x)) if training else x

    try:
        handlers.register_layer(Scale, handlers.PassThrough())
        handlers.register_layer(Noise, handlers.Identity())
        model = keras.Sequential([keras.Input((4,)), layers.Dense(5, name="h"),
                                  Scale(name="s"), Noise(name="n"), layers.Dense(2, name="o")])
        h, s = model.get_layer("h"), model.get_layer("s")
        _ = h.kernel.assign(h.kernel.numpy() * [1.0, 0.0, 1.0, 0.0, 1.0])
        _ = h.bias.assign([0.0, 0.5, 0.0, -1.0, 0.0])
        _ = s.w.assign([1.0, 2.0, 3.0, 4.0, 5.0])
        small = tfprune.shrink(model)
        assert small.get_layer("s").w.shape == (3,) and small.get_layer("h").units == 3
        x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
        np.testing.assert_allclose(small(x), model(x), rtol=1e-5, atol=1e-6)
        fused = tfprune.fuse(model)
        assert "n" not in [layer.name for layer in fused.layers]
    finally:
        handlers.REGISTRY.unregister(Scale)
        handlers.REGISTRY.unregister(Noise)


def test_a_handler_that_does_not_match_its_layer_is_named():
    class Odd(layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], 3), name="w")

        def call(self, x):
            return x @ self.w

    try:
        handlers.register_layer(Odd, handlers.Producer("units"))  # no `kernel`, no `units`
        with pytest.raises(tfprune.UnsupportedModelError, match="no weight 'kernel'.*Producer"):
            tfprune.PruneLowMagnitude(Odd(), tfprune.ConstantSparsity(0.5, 0)).build((None, 4))
        model = keras.Sequential([keras.Input((4,)), Odd(name="odd"), layers.Dense(2)])
        assert "no 'units' in its config" in str(tfprune.shrink_plan(model))
    finally:
        handlers.REGISTRY.unregister(Odd)


def test_groups_and_channel_weights_say_what_zeroes_a_whole_channel():
    """What channel-group masking needs: the filter, its bias and the BatchNorm after it."""
    x = keras.Input((6, 6, 2))
    y = layers.Conv2D(4, 3, name="conv")(x)
    y = layers.ReLU(name="relu")(layers.BatchNormalization(name="bn")(y))
    model = keras.Model(x, layers.Conv2D(3, 1, name="next")(y))
    rng = np.random.default_rng(0)
    model.get_layer("bn").set_weights([rng.uniform(0.5, 1.5, 4), rng.uniform(0.5, 1, 4),
                                       rng.normal(size=4), rng.uniform(0.5, 1.5, 4)])
    model.get_layer("conv").bias.assign(rng.uniform(0.5, 1, 4))
    graph = LayerGraph.from_model(model)
    groups = ChannelGroups(graph)
    group = groups.find(groups.slot("conv", 1))
    for name, node in graph.nodes.items():
        for i in np.flatnonzero(groups.group_of(name) == group):
            handler = handlers.REGISTRY.lookup(node.layer)
            for weight in handler.channel_weights(node.layer, groups.sizes[name]):
                weight.assign(np.where(np.arange(weight.shape[-1]) == i, 0.0, weight.numpy()))
            if groups.rules[name] == "producer":
                for pw in handler.prunable_weights(node.layer):
                    value = np.moveaxis(pw.variable.numpy(), pw.out_axis, 0)
                    value[i] = 0
                    pw.variable.assign(np.moveaxis(value, 0, pw.out_axis))
    relu = keras.Model(x, model.get_layer("relu").output)
    out = np.asarray(relu(rng.normal(size=(2, 6, 6, 2)).astype("float32")))
    assert (out[..., 1] == 0).all() and (out[..., [0, 2, 3]] != 0).any()
    assert model.get_layer("next").kernel.numpy()[..., 1, :].any()  # consumers keep theirs
