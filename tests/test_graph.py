import keras
import numpy as np
import pytest
from keras import layers

import tfprune
from tfprune.errors import UnsupportedModelError
from tfprune.graph import LayerGraph
from tfprune.models import lenet5


def _residual():
    x = keras.Input((8, 8, 3))
    a = layers.Conv2D(4, 3, padding="same", name="a")(x)
    b = layers.Conv2D(4, 1, name="b")(x)
    y = layers.Add(name="add")([a, b])
    y = layers.Concatenate(name="cat")([y, a])
    return keras.Model(x, layers.GlobalAveragePooling2D(name="gap")(y))


def test_sequential_round_trip_is_an_independent_equal_model():
    model = lenet5()
    graph = LayerGraph.from_model(model)
    assert [n.name for n in graph.layers()][:2] == ["conv1", "pool1"]
    assert graph.consumers("conv1") == ["pool1"]
    rebuilt = graph.to_model()
    assert isinstance(rebuilt, keras.Sequential)
    x = np.random.rand(2, 28, 28, 1).astype("float32")
    np.testing.assert_allclose(rebuilt(x), model(x), rtol=1e-6)
    rebuilt.layers[0].kernel.assign(np.zeros(rebuilt.layers[0].kernel.shape))
    assert np.any(model.layers[0].kernel.numpy() != 0)


def test_functional_graph_edges_and_rebuild():
    model = _residual()
    graph = LayerGraph.from_model(model)
    assert graph.nodes["add"].inputs == ["a", "b"] and graph.nodes["add"].packed
    assert sorted(graph.consumers("a")) == ["add", "cat"]
    assert graph.only_consumer("b").name == "add"
    x = np.random.rand(2, 8, 8, 3).astype("float32")
    np.testing.assert_allclose(graph.to_model()(x), model(x), rtol=1e-6)


def test_remove_rewires_consumers():
    model = keras.Sequential([keras.Input((4,)), layers.Dense(3, name="d"),
                              layers.Dropout(0.5, name="drop"), layers.Dense(2, name="e")])
    graph = LayerGraph.from_model(model)
    graph.remove("drop")
    assert graph.nodes["e"].inputs == ["d"]
    assert len(graph.to_model().layers) == 2


def test_unsupported_models_are_named():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(UnsupportedModelError, match="subclassed"):
        LayerGraph.from_model(Sub())
    with pytest.raises(UnsupportedModelError, match="no input shape"):
        LayerGraph.from_model(keras.Sequential([layers.Dense(2)]))
    shared = layers.Dense(4)
    x = keras.Input((4,))
    with pytest.raises(UnsupportedModelError, match="more than once"):
        LayerGraph.from_model(keras.Model(x, shared(shared(x))))
    inner = keras.Sequential([keras.Input((4,)), layers.Dense(2)])
    with pytest.raises(UnsupportedModelError, match="nests"):
        LayerGraph.from_model(keras.Model(x, inner(x)))


def test_flatten_reads_a_nested_model_as_its_layers():
    base = keras.Sequential([keras.Input((6, 6, 3)), layers.Conv2D(4, 3, name="inner_conv"),
                             layers.BatchNormalization(name="inner_bn")], name="base")
    x = keras.Input((6, 6, 3))
    y = layers.GlobalAveragePooling2D(name="gap")(layers.ReLU(name="relu")(base(x)))
    model = keras.Model(x, layers.Dense(2, name="head")(y))
    flat = tfprune.graph.flatten(model)
    assert [layer.name for layer in flat.layers[1:]] == [
        "inner_conv", "inner_bn", "relu", "gap", "head"]
    data = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(flat(data), model(data), rtol=1e-6, atol=1e-6)
    graph = LayerGraph.from_model(model, nested=True)
    assert graph.nodes["relu"].inputs == ["inner_bn"]
    twice = keras.Model(x, layers.Add()([base(x), base(x)]))
    with pytest.raises(UnsupportedModelError, match="more than once"):
        tfprune.graph.flatten(twice)
