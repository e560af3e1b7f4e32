"""The distiller: its loss against a hand computation, with pruning callbacks, saved and
loaded, and under tf.distribute."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tfprune
from tfprune.distill import Distiller, SoftTargetLoss


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _pair(activation=None):
    teacher = keras.Sequential([keras.Input((6,)), keras.layers.Dense(12, name="hidden"),
                                keras.layers.Dense(4, activation=activation, name="out")])
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, name="hidden"),
                                keras.layers.Dense(4, activation=activation, name="out")])
    return student, teacher


@pytest.mark.parametrize("from_logits", [True, False])
def test_loss_is_the_hand_computed_mix_of_labels_and_softened_teacher(from_logits):
    student, teacher = _pair(None if from_logits else "softmax")
    distiller = Distiller(student, teacher, temperature=2.5, weight=0.3,
                          from_logits=from_logits)
    distiller.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 6)).astype("float32")
    y = rng.integers(0, 4, 16)
    s, t = np.asarray(student(x), "float64"), np.asarray(teacher(x), "float64")
    zs, zt = (s, t) if from_logits else (np.log(s), np.log(t))  # logits up to a shift
    hard = -np.mean(_log_softmax(zs)[np.arange(16), y])
    p, log_q = np.exp(_log_softmax(zt / 2.5)), _log_softmax(zs / 2.5)
    soft = 2.5**2 * np.mean(np.sum(p * (np.log(p) - log_q), axis=-1))
    expected = 0.7 * hard + 0.3 * soft
    got = float(distiller.compute_loss(x=x, y=y, y_pred=distiller(x)))
    assert got == pytest.approx(expected, rel=1e-5)
    assert soft > 0.01  # the two models disagree: the soft term is really in the sum
    assert float(SoftTargetLoss(2.5, from_logits)(teacher(x), student(x))) == pytest.approx(
        soft, rel=1e-5)


@pytest.mark.slow
def test_fits_a_pruned_student_and_never_trains_the_teacher():
    student, teacher = _pair("softmax")
    before = [w.copy() for w in teacher.get_weights()]
    pruned = tfprune.prune(student, tfprune.ConstantSparsity(0.5, begin_step=0, frequency=2),
                           granularity="filter", layers=["hidden"])
    distiller = Distiller(pruned, teacher)
    assert {id(v) for v in distiller.trainable_variables} == {
        id(v) for v in pruned.trainable_variables}
    distiller.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = np.random.rand(64, 6).astype("float32"), np.random.randint(0, 4, 64)
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0,
                            callbacks=[tfprune.UpdatePruningStep()])
    assert np.isfinite(history.history["loss"]).all() and "accuracy" in history.history
    assert tfprune.sparsity(pruned) == {"hidden": 1 / 3, "out": 0.0}  # 2 of 3 units kept
    small = tfprune.strip(pruned)  # the student is a plain pruned model
    assert [layer.units for layer in small.layers] == [3, 4]
    assert all(np.array_equal(a, b) for a, b in zip(before, teacher.get_weights(),
                                                     strict=True))
    assert teacher.trainable  # frozen inside the distiller, not by changing the teacher


@pytest.mark.slow
def test_a_distilled_student_prunes_its_batchnorm_with_the_filters_before_it():
    # Under a Distiller the masks still move by channel group: the BatchNorm after a pruned
    # conv loses the same channels (its gamma and beta zeroed), so the pruned channels
    # carry no constant into the residual Add and shrink removes them.
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(8, 1, name="a")(inputs)
    a = keras.layers.BatchNormalization(name="a_bn")(a)
    b = keras.layers.Conv2D(8, 3, padding="same", name="b")(inputs)
    b = keras.layers.BatchNormalization(name="b_bn")(b)
    x = keras.layers.Add(name="add")([a, b])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    student = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="out")(x))
    teacher = keras.models.clone_model(student)
    for layer in ("a_bn", "b_bn"):  # trained statistics: beta away from 0
        student.get_layer(layer).set_weights([np.full(8, 1.5, "float32"),
                                              np.full(8, 0.3, "float32"),
                                              np.zeros(8, "float32"), np.ones(8, "float32")])
    pruned = tfprune.prune(student, tfprune.ConstantSparsity(0.5, begin_step=0, frequency=1),
                           granularity={"a": "filter", "b": "filter"})
    distiller = Distiller(pruned, teacher)
    distiller.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((16, 8, 8, 3), dtype="float32")
    distiller.fit(x, np.zeros(16, "int32"), batch_size=8, epochs=1, verbose=0,
                  callbacks=[tfprune.UpdatePruningStep()])
    plain = tfprune.strip(pruned)
    gamma, beta = plain.get_layer("a_bn").get_weights()[:2]
    assert int((gamma == 0).sum()) == int((beta == 0).sum()) == 4
    small = tfprune.shrink(tfprune.fuse(plain))
    assert small.get_layer("a").filters == small.get_layer("b").filters == 4


def test_saves_and_loads(tmp_path):
    student, teacher = _pair("softmax")
    distiller = Distiller(student, teacher, temperature=3.0, weight=0.25)
    x = np.random.rand(4, 6).astype("float32")
    expected = distiller(x)  # built, as after fit
    restored = Distiller.from_config(distiller.get_config())
    assert (restored.temperature, restored.weight, restored.from_logits) == (3.0, 0.25, False)
    distiller.save(tmp_path / "d.keras")
    loaded = keras.models.load_model(tmp_path / "d.keras")
    assert isinstance(loaded, Distiller) and loaded.weight == 0.25
    np.testing.assert_allclose(loaded(x), expected, atol=1e-6)
    np.testing.assert_allclose(loaded.teacher(x), teacher(x), atol=1e-6)


@pytest.mark.parametrize("kwargs, words", [
    ({"temperature": 0}, "temperature > 0"), ({"weight": 1.5}, "weight in [0, 1]"),
    ({"teacher": "baseline.keras"}, "teacher to be a Keras model")])
def test_bad_arguments_are_one_clear_error(kwargs, words):
    student, teacher = _pair()
    arguments = {"teacher": teacher, **kwargs}
    with pytest.raises(tfprune.TfpruneError, match=words.replace("[", r"\[").replace(
            "]", r"\]")):
        Distiller(student, **arguments)


SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    import tfprune
    from tfprune.distill import Distiller

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 12)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    with strategy.scope():
        teacher = keras.Sequential([keras.Input((12,)), keras.layers.Dense(32, name="a"),
                                    keras.layers.Dense(2, activation="softmax", name="b")])
        student = tfprune.prune(teacher, tfprune.PolynomialDecay(0.0, 0.75, 0, 8, frequency=2),
                                granularity={"a": "filter"})
        distiller = Distiller(student, teacher, temperature=2.0)
        distiller.compile("adam", "sparse_categorical_crossentropy")
    before = [w.copy() for w in teacher.get_weights()]
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0,
                            callbacks=[tfprune.UpdatePruningStep()])
    backing = student.layers[0].masks[0]._value
    replicas = [np.asarray(v) for v in backing.values]
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "mirrored": type(backing).__name__,
        "masks_agree": bool(all(np.array_equal(replicas[0], r) for r in replicas[1:])),
        "sparsity": tfprune.sparsity(student)["a"],
        "teacher_unchanged": all(np.array_equal(a, b)
                                 for a, b in zip(before, teacher.get_weights())),
        "loss_finite": bool(np.isfinite(history.history["loss"]).all()),
    }))
    """
)


@pytest.mark.slow
def test_distils_under_mirrored_strategy_on_two_cpus():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=root)
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["mirrored"] == "MirroredVariable"
    assert report["masks_agree"] and report["sparsity"] == 0.75
    assert report["teacher_unchanged"] and report["loss_finite"]
