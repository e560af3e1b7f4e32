"""Recovery on BatchNorm CNNs: adaptive BatchNorm, mask updates sized to the run, the
retrain budget, and exact merges after retraining."""

import json

import keras
import numpy as np
import pytest

import tfprune
from tfprune.distill import Distiller
from tfprune.pipeline import PipelineConfig, budget
from tfprune.pruning import batchnorm

L = keras.layers


def _bn_model(momentum=0.99):
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(8, 3, use_bias=False, name="conv")(inputs)
    x = L.BatchNormalization(momentum=momentum, name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.Conv2D(4, 1, use_bias=False, name="head")(x)
    x = L.BatchNormalization(momentum=momentum, name="head_bn")(x)
    outputs = L.Dense(3, name="out")(L.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(inputs, outputs)


def _images(n=512, seed=0):
    return np.random.default_rng(seed).normal(2.0, 3.0, size=(n, 6, 6, 2)).astype("float32")


def _batch_stats(model, x, layer):
    """The mean and (biased) variance over `x` of what reaches BatchNorm `layer`."""
    probe = keras.Model(model.inputs, model.get_layer(layer).input)
    values = np.asarray(probe(x, training=False)).reshape(-1, probe.output.shape[-1])
    return values.mean(axis=0), values.var(axis=0)


def test_recalibrate_makes_the_statistics_those_of_the_images():
    model, x = _bn_model(), _images()
    assert batchnorm.recalibrate(model, x, batch_size=128) == 2
    mean, var = _batch_stats(model, x, "bn")
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean, mean, rtol=1e-4, atol=1e-4)
    # The average of four batch variances: close to the variance over all the images.
    np.testing.assert_allclose(bn.moving_variance, var, rtol=0.05)
    assert bn.momentum == 0.99  # restored
    np.testing.assert_array_equal(model.get_layer("conv").kernel.shape, (3, 3, 2, 8))


def test_recalibrate_leaves_weights_and_frozen_batchnorms_alone():
    model, x = _bn_model(), _images()
    model.get_layer("head_bn").trainable = False
    before = {w.path: np.asarray(w).copy() for w in model.weights}
    assert batchnorm.recalibrate(model, x) == 1
    after = {w.path: np.asarray(w) for w in model.weights}
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    assert changed == {"bn/moving_mean", "bn/moving_variance"}
    assert batchnorm.recalibrate(model, None) == 0
    assert batchnorm.recalibrate(model, x[:0]) == 0


def test_recalibrate_reaches_through_pruning_wrappers_and_a_distiller():
    model, x = _bn_model(momentum=0.999), _images()
    pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, begin_step=0), "filter")
    wrapped_bn = [w for w in pruned.layers if getattr(w, "layer", None) is not None
                  and w.layer.name == "bn"]
    assert wrapped_bn, "the BatchNorm after a filter-pruned conv is wrapped as a follower"
    distiller = Distiller(pruned, _bn_model(), temperature=2.0, weight=0.5, from_logits=True)
    assert batchnorm.recalibrate(distiller, x) == 2  # the student's, not the teacher's
    mean, _ = _batch_stats(tfprune.strip(pruned), x, "bn")
    np.testing.assert_allclose(wrapped_bn[0].layer.moving_mean, mean, rtol=1e-4, atol=1e-4)


def test_sample_is_seeded_and_never_larger_than_the_data():
    x = np.arange(100)[:, None]
    a, b = batchnorm.sample(x, 10, seed=3), batchnorm.sample(x, 10, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) == 10 and len(batchnorm.sample(x, 500)) == 100


@pytest.mark.parametrize("kwargs", [{"images": 0}, {"batch_size": -1}, {"images": 1.5}])
def test_adaptive_batchnorm_rejects_bad_sizes(kwargs):
    with pytest.raises(tfprune.TfpruneError, match=next(iter(kwargs))):
        tfprune.AdaptiveBatchNorm(_images(8), **kwargs)


@pytest.mark.slow
def test_a_pruned_model_ends_fit_with_statistics_of_its_own_weights():
    """Momentum 0.999 over a short fit leaves the statistics of the unpruned model; the
    callback puts those of the pruned one in place before validation and at the end."""
    model, x = _bn_model(momentum=0.999), _images(256)
    y = np.random.default_rng(1).integers(0, 3, 256)
    pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, begin_step=0, frequency=1),
                           "filter")
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = tfprune.AdaptiveBatchNorm(x, images=256, batch_size=64)
    pruned.fit(x, y, batch_size=64, epochs=2, verbose=0, validation_data=(x[:64], y[:64]),
               callbacks=[tfprune.UpdatePruningStep(), callback])
    assert callback.recalibrated == 3  # two validations, and the end of training
    stripped = tfprune.strip(pruned)
    mean, _ = _batch_stats(stripped, x, "head_bn")
    np.testing.assert_allclose(stripped.get_layer("head_bn").moving_mean, mean,
                               rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_adaptive_batchnorm_can_recompute_at_each_epoch_end_too():
    model, x = _bn_model(), _images(128)
    model.compile("adam", "mse")
    callback = tfprune.AdaptiveBatchNorm(x, images=128, batch_size=64, at_epoch_end=True)
    model.fit(x, np.zeros((128, 3)), batch_size=64, epochs=2, verbose=0, callbacks=[callback])
    assert callback.recalibrated == 3  # two epoch ends, and the end of training


def test_the_prune_budget_follows_the_cut_and_the_data():
    config = PipelineConfig()
    short = budget.prune_epochs(config, train_size=9000, sparsity=0.5)
    assert short > budget.prune_epochs(config, train_size=9000, sparsity=0.2)
    assert budget.prune_epochs(config, train_size=54000, sparsity=0.5) < short
    assert budget.prune_epochs(config, train_size=100, sparsity=0.9) == budget.MAX_PRUNE_EPOCHS
    assert budget.prune_epochs(config, train_size=10**7, sparsity=0.5) == 1


@pytest.mark.parametrize("steps", [8, 100, 284, 5000])
def test_mask_updates_are_about_32_whatever_the_stage_length(steps):
    config = PipelineConfig()
    every = budget.frequency(config, steps)
    end = budget.end_step(config, steps, every)
    schedule = tfprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=end, frequency=every)
    updates = sum(bool(schedule(step)[0]) for step in range(steps))
    assert end <= steps
    assert min(budget.UPDATES, int(0.75 * steps)) - 2 <= updates <= 1.25 * budget.UPDATES, updates
    assert schedule(end)[1] == pytest.approx(0.5)  # the schedule reaches its sparsity


def test_best_epoch_stops_after_patience_and_keeps_the_best_weights():
    scores = iter([0.5, 0.8, 0.7, 0.75, 0.9, 0.95])
    model = keras.Sequential([keras.Input((2,)), L.Dense(1)])
    seen = []

    def measure(m, validation):
        seen.append(m.get_weights()[0].copy())
        return next(scores)

    best = budget.best_epoch_callback(((), ()), measure, patience=2)
    model.compile("sgd", "mse")
    history = model.fit(np.ones((8, 2)), np.ones((8, 1)), epochs=6, verbose=0, callbacks=[best])
    assert len(history.epoch) == 4  # epoch 2 was best; 3 and 4 did not beat it: stop
    assert (best.best_epoch, best.epochs_run, best.best) == (2, 4, 0.8)
    # The rate falls after each epoch that did not improve (epoch 3), not after the last.
    np.testing.assert_allclose(best.learning_rates, [0.01, 0.01, 0.01, 0.003], rtol=1e-5)
    np.testing.assert_array_equal(model.get_weights()[0], seen[1])


def test_config_defaults_leave_the_budget_to_the_tool():
    config = PipelineConfig().validate()
    assert (config.prune_epochs, config.retrain_epochs, config.frequency) == (None, None, None)
    assert budget.retrain_epochs(config, 3) == (6, True)
    assert budget.retrain_epochs(PipelineConfig(validation_split=0.0), 3) == (6, False)


def _bn_cnn_file(tmp_path):
    inputs = keras.Input((28, 28, 1))
    x = L.Conv2D(16, 5, strides=2, use_bias=False, name="conv1")(inputs)
    x = L.BatchNormalization(momentum=0.999, name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.Conv2D(32, 3, strides=2, use_bias=False, name="conv2")(x)
    x = L.BatchNormalization(momentum=0.999, name="bn2")(x)
    x = L.ReLU(name="relu2")(x)
    x = L.Flatten(name="flatten")(x)
    outputs = L.Dense(10, activation="softmax", name="out")(x)
    path = tmp_path / "bn_cnn.keras"
    keras.Model(inputs, outputs).save(path)
    return str(path)


def _run(mnist_dir, folder, model, **overrides):
    settings = dict(model=model, data_dir=mnist_dir, train_limit=1200, test_limit=200,
                    baseline_epochs=3, final_sparsity=0.5, granularity="filter",
                    quantize=("dynamic",), representative_size=32, bench_runs=10,
                    bench_warmup=2, export_dir=str(folder), verbose=0, keep_going=True,
                    plots=False, batchnorm_images=256, baseline_learning_rate=0.003)
    settings.update(overrides)
    return tfprune.pipeline.run(PipelineConfig(**settings).validate())


@pytest.mark.slow
def test_the_defaults_size_the_run_fold_after_retraining_and_say_so(mnist_dir, tmp_path):
    report = _run(mnist_dir, tmp_path / "run", _bn_cnn_file(tmp_path))
    records = json.loads((tmp_path / "run" / "stages.json").read_text())
    assert "merge" not in records and "fold" in records
    assert [row["stage"] for row in report["stages"]] == [
        "baseline", "prune", "retrain", "fold", "shrink"]
    prune = records["prune"]["result"]
    steps_per_epoch = -(-1080 // 128)  # 1,200 images less a 10% validation split
    assert prune["epochs"] == budget.prune_epochs(PipelineConfig(), 1080, 0.5) == 10
    assert prune["steps"] == 10 * steps_per_epoch
    assert 25 <= prune["updates"] <= 40 and prune["frequency"] == 2
    assert f"a mask update every {prune['frequency']} steps" in records["prune"]["figure"]
    retrain = records["retrain"]["result"]
    assert retrain["early_stopping"] and retrain["epochs"] == 20
    assert 1 <= retrain["best_epoch"] <= retrain["epochs_run"] <= 20
    assert retrain["epochs_run"] - retrain["best_epoch"] <= budget.PATIENCE
    # BatchNorm stayed through retraining and folded after it: exactly, so the folded model
    # scores what the retrained one did.
    folded = records["fold"]["result"]
    assert folded["layer_count"] < len(keras.models.load_model(tmp_path / "run" /
                                                               "retrained.keras").layers)
    assert retrain["val_accuracy"] > 0.5  # it learned: the next check means something
    assert folded["val_accuracy"] == pytest.approx(retrain["val_accuracy"], abs=0.004)
    run = tmp_path / "run"
    x = np.random.default_rng(0).random((16, 28, 28, 1), dtype="float32")
    np.testing.assert_allclose(keras.models.load_model(run / "folded.keras")(x),
                               keras.models.load_model(run / "retrained.keras")(x),
                               rtol=1e-4, atol=1e-5)  # the fold is exact
    md = (tmp_path / "run" / "report.md").read_text()
    assert "a mask update every" in md and "best of" in md


@pytest.mark.slow
def test_explicit_flags_win_and_merging_can_come_first(mnist_dir, tmp_path):
    _run(mnist_dir, tmp_path / "run", _bn_cnn_file(tmp_path), baseline_epochs=1,
         prune_epochs=1, retrain_epochs=1, frequency=2, fold_after_retrain=False,
         batchnorm_images=0)
    records = json.loads((tmp_path / "run" / "stages.json").read_text())
    assert "merge" in records and "fold" not in records
    prune, retrain = records["prune"]["result"], records["retrain"]["result"]
    assert (prune["epochs"], prune["frequency"]) == (1, 2)
    assert (retrain["epochs"], retrain["early_stopping"]) == (1, False)
