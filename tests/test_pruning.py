"""prune / strip / sparsity on whole models, .keras round trips, bad input."""

import warnings

import keras
import numpy as np
import pytest

import tfprune
from tfprune import models
from tfprune.errors import TfpruneError, UnsupportedModelError

L = keras.layers
# Also run under KERAS_BACKEND=jax by .ci/run.
pytestmark = pytest.mark.backend_neutral


def _schedule(final=0.8, end=6):
    return tfprune.PolynomialDecay(0.0, final, begin_step=0, end_step=end, frequency=2)


def _images(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28, 1)).astype("float32"), rng.integers(0, 10, n)


def _fit(model, steps=8, batch=8, **kw):
    x, y = _images(steps * batch)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0,
              callbacks=[tfprune.UpdatePruningStep()], **kw)
    return model


def _branchy():
    inp = keras.Input((8, 8, 4), name="image")
    a = L.Conv2D(8, 3, padding="same", name="left")(inp)
    b = L.Conv2D(8, 1, name="right")(inp)
    x = L.Add(name="add")([a, b])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(5, name="head")(x)
    return keras.Model(inp, L.Softmax(name="probs")(out), name="branchy")


@pytest.mark.slow
def test_prune_never_touches_the_callers_model():
    model = models.lenet5()
    before = [w.copy() for w in model.get_weights()]
    pruned = _fit(tfprune.prune(model, _schedule()))
    assert not set(map(id, model.layers)) & {id(getattr(x, "layer", x)) for x in pruned.layers}
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert max(tfprune.sparsity(model).values()) == 0.0


@pytest.mark.slow
def test_pruned_model_starts_equal_and_reaches_target_sparsity_and_strip_matches():
    model = models.lenet5()
    pruned = tfprune.prune(model, _schedule(0.8))
    x, _ = _images(8, seed=3)
    np.testing.assert_allclose(pruned(x), model(x), rtol=1e-5, atol=1e-6)
    _fit(pruned)
    achieved = tfprune.sparsity(pruned)
    assert list(achieved) == ["conv1", "conv2", "ip1", "ip2"]
    assert all(abs(s - 0.8) <= 0.01 for s in achieved.values()), achieved
    small = tfprune.strip(pruned)
    assert isinstance(small, keras.Sequential) == isinstance(model, keras.Sequential)
    assert [layer.name for layer in small.layers] == [layer.name for layer in model.layers]
    assert not any(isinstance(layer, tfprune.PruneLowMagnitude) for layer in small.layers)
    np.testing.assert_allclose(small(x), pruned(x), rtol=1e-5, atol=1e-6)
    assert tfprune.sparsity(small) == pytest.approx(achieved, abs=1e-9)


@pytest.mark.slow
def test_sparsities_give_named_layers_their_own_final_sparsity_on_the_same_steps():
    schedule = _schedule(0.8)
    pruned = tfprune.prune(models.lenet5(), schedule, sparsities={"conv1": 0.25, "ip2": 0.0})
    schedules = {w.layer.name: w.schedule for w in pruned.layers
                 if isinstance(w, tfprune.PruneLowMagnitude)}
    assert schedules == {"conv1": _schedule(0.25), "conv2": schedule, "ip1": schedule,
                         "ip2": _schedule(0.0)}
    achieved = tfprune.sparsity(_fit(pruned))
    assert achieved["conv1"] == pytest.approx(0.25, abs=0.01)
    assert achieved["ip2"] == 0.0
    assert achieved["ip1"] == pytest.approx(0.8, abs=0.01)


@pytest.mark.slow
def test_functional_branchy_model_and_filter_granularity_keeps_the_classifier():
    model = _branchy()
    assert tfprune.pruning.plan(model, "filter") == {"left": "filter", "right": "filter"}
    assert tfprune.pruning.plan(model, {"*": "filter", "head": "weight"}) == {
        "left": "filter", "right": "filter", "head": "weight"}   # asked for by name
    pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, 0, frequency=1),
                           granularity={"Conv2D": "filter", "Dense": "filter"})
    x = np.random.default_rng(0).random((16, 8, 8, 4)).astype("float32")
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, np.arange(16) % 5, batch_size=4, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    small = tfprune.strip(pruned)
    zeroed = []
    for name in ("left", "right"):
        layer = small.get_layer(name)
        dead = np.abs(layer.kernel.numpy()).reshape(-1, 8).sum(axis=0) == 0
        assert dead.sum() == 4 and (layer.bias.numpy()[dead] == 0).all()
        zeroed.append(np.flatnonzero(dead))
    np.testing.assert_array_equal(*zeroed)   # coupled by the Add: the same channels
    head = small.get_layer("head").kernel.numpy()
    assert (head != 0).all()        # the classifier is left whole
    np.testing.assert_allclose(small(x), pruned(x), rtol=1e-5, atol=1e-6)
    assert tfprune.shrink(small).get_layer("left").filters == 4


def test_granularity_dict_by_name_class_default_and_none():
    model = models.lenet5()
    chosen = tfprune.pruning.plan(
        model, {"conv1": "weight", "Conv2D": "2:4", "ip2": None, "*": "block"})
    assert chosen == {"conv1": "weight", "conv2": "2:4", "ip1": "block"}
    assert tfprune.pruning.plan(model, "weight", layers=["conv2", "ip1"]) == {
        "conv2": "weight", "ip1": "weight"}
    assert list(tfprune.pruning.plan(model, "weight",
                                     layers=lambda layer: "conv" in layer.name)) == [
        "conv1", "conv2"]
    pruned = tfprune.prune(model, _schedule(), layers=["ip1"], granularity="block",
                           block_shape=(1, 4))
    wrapped = [layer for layer in pruned.layers if isinstance(layer, tfprune.PruneLowMagnitude)]
    assert [w.layer.name for w in wrapped] == ["ip1"] and wrapped[0].block_shape == (1, 4)


@pytest.mark.slow
def test_save_and_load_keeps_masks_and_step_without_custom_objects(tmp_path):
    pruned = _fit(tfprune.prune(models.lenet5(), _schedule(0.6), granularity={"ip1": "2:4"}))
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.models.load_model(path)
    x, _ = _images(8, seed=5)
    np.testing.assert_allclose(loaded(x), pruned(x), rtol=1e-6, atol=1e-6)
    for a, b in zip(pruned.layers, loaded.layers, strict=True):
        assert type(a) is type(b)
        if isinstance(a, tfprune.PruneLowMagnitude):
            assert int(b.pruning_step) == int(a.pruning_step) == 7
            assert b.schedule == a.schedule and b.granularity == a.granularity
            for ma, mb in zip(a.masks, b.masks, strict=True):
                np.testing.assert_array_equal(np.asarray(ma), np.asarray(mb))
    # Training the loaded model resumes at step 8.
    _fit(loaded, steps=2)
    assert int(loaded.layers[0].pruning_step) == 9
    # The stripped model saves as a plain Keras model.
    tfprune.strip(loaded).save(tmp_path / "small.keras")
    plain = keras.models.load_model(tmp_path / "small.keras")
    assert tfprune.sparsity(plain)["ip1"] == pytest.approx(0.5, abs=0.01)


def test_prune_twice_keeps_existing_wrappers():
    once = tfprune.prune(models.lenet5(), _schedule(), layers=["conv2"])
    twice = tfprune.prune(once, _schedule(), layers=["ip1"])
    names = [x.layer.name for x in twice.layers if isinstance(x, tfprune.PruneLowMagnitude)]
    assert names == ["conv2", "ip1"]


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(3)

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize(
    "make, kwargs, error, match",
    [
        (lambda: Subclassed(), {}, UnsupportedModelError, "subclassed model"),
        (lambda: keras.Sequential([keras.Input((4, 4, 1)), L.Flatten()]), {},
         UnsupportedModelError, "no layer to prune"),
        (models.lenet5, {"granularity": "channel"}, TfpruneError,
         "Unknown granularity.*Received: granularity='channel'"),
        (models.lenet5, {"granularity": "2:4"}, TfpruneError, "'conv1' cannot take 2:4"),
        (models.lenet5, {"layers": ["conv9"]}, TfpruneError,
         "No layer named 'conv9'.*Received: layers=\\['conv9'\\]"),
        (models.lenet5, {"layers": ["pool1"]}, TfpruneError, "'pool1' .*no weights to prune"),
        (models.lenet5, {"granularity": {"Conv3D": "weight"}}, TfpruneError,
         "granularity key 'Conv3D'"),
        (models.lenet5, {"granularity": {"conv1": "rows"}}, TfpruneError, "Unknown granularity"),
        (models.lenet5, {"granularity": 3}, TfpruneError, "Received: granularity=3"),
        (models.lenet5, {"block_size": (1, 4)}, TfpruneError, "Unknown option 'block_size'"),
        (lambda: keras.Sequential([L.Dense(3)]), {}, UnsupportedModelError, "no input shape"),
        (models.lenet5, {"sparsities": {"conv9": 0.5}}, TfpruneError,
         "does not have: \\['conv9'\\].*Received: sparsities="),
        (models.lenet5, {"sparsities": {"ip2": 0.5}, "layers": ["conv1"]}, TfpruneError,
         "not pruned .*\\['ip2'\\]"),
        (models.lenet5, {"sparsities": {"conv1": 1.0}}, TfpruneError, "final_sparsity=1.0"),
    ],
)
def test_bad_input_raises_one_line_errors(make, kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        tfprune.prune(make(), _schedule(), **kwargs)
    assert "\n" not in str(info.value)


def test_strip_and_sparsity_of_plain_models():
    model = models.lenet5()
    copy = tfprune.strip(model)
    x, _ = _images(4)
    np.testing.assert_allclose(copy(x), model(x), rtol=1e-6)
    assert tfprune.sparsity(copy) == {"conv1": 0.0, "conv2": 0.0, "ip1": 0.0, "ip2": 0.0}
    with pytest.raises(UnsupportedModelError, match="subclassed"):
        tfprune.strip(Subclassed())


def test_filter_granularity_protects_every_branch_of_an_output_add():
    inp = keras.Input((6, 6, 3))
    a = L.Conv2D(4, 3, padding="same", name="a")(inp)
    b = L.Conv2D(4, 1, name="b")(inp)
    hidden = L.Conv2D(4, 1, name="hidden")(inp)
    model = keras.Model(inp, [L.Add(name="sum")([a, b]), L.Flatten(name="flat")(hidden)])
    with pytest.raises(UnsupportedModelError, match=r"output layers \['a', 'b', 'hidden'\] "
                       "are left whole: name them"):
        tfprune.pruning.plan(model, "filter")
    assert tfprune.pruning.plan(model, {"*": "filter", "hidden": "weight"}) == {
        "hidden": "weight"}
    inner = keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(L.Add()([a, b]))))
    assert tfprune.pruning.plan(inner, "filter") == {"a": "filter", "b": "filter"}


def test_strip_and_sparsity_warn_when_pruning_never_happened():
    model = keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(4, 3, name="conv1"),
                              L.Flatten(name="flat"), L.Dense(8, name="ip1"),
                              L.Dense(3, name="ip2")])
    schedule = tfprune.ConstantSparsity(0.5, begin_step=20, frequency=2)
    pruned = tfprune.prune(model, schedule, layers=["conv1", "ip1"])
    pruned.compile("sgd", "mse")
    x = np.random.default_rng(0).random((8, 6, 6, 1)).astype("float32")

    def fit(epochs):
        pruned.fit(x, np.zeros((8, 3)), batch_size=1, epochs=epochs, verbose=0,
                   callbacks=[tfprune.UpdatePruningStep()])

    for call in (tfprune.strip, tfprune.sparsity):   # never fit with the callback
        with pytest.warns(UserWarning, match=r"\['conv1', 'ip1'\] were never pruned"):
            call(pruned)
    fit(1)   # steps 0..7, all before begin_step 20
    with pytest.warns(UserWarning, match="not begun for layers 'conv1' at step 7 < begin_step "
                      "20, 'ip1' at step 7.*lower the schedule's begin_step"):
        assert tfprune.sparsity(pruned) == {"conv1": 0.0, "ip1": 0.0, "ip2": 0.0}
    fit(2)   # on to step 23: pruned at 20 and 22
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Keras's JAX variables warn under NumPy 2 (their __array__ takes no copy=).
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        small = tfprune.strip(pruned)
        assert tfprune.sparsity(small) == {"conv1": 0.5, "ip1": 0.5, "ip2": 0.0}
