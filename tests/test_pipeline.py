"""The pipeline end to end on a tiny configuration, `resume`, and holding zeros in retraining."""

import json

import keras
import numpy as np
import pytest

import tfprune
from tfprune import pipeline
from tfprune.pipeline import PipelineConfig, training


def tiny(mnist_dir, folder, **overrides):
    """A configuration that runs every stage in seconds: a few hundred images, one epoch.

    Its compressed model is barely trained, so it goes on past the stage checks
    (`keep_going`; tests/test_faults.py tests them) and its verdict is "not earned".
    """
    settings = dict(
        data_dir=mnist_dir, train_limit=256, test_limit=200, baseline_epochs=1, prune_epochs=1,
        retrain_epochs=1, baseline_batch_size=64, prune_batch_size=64, retrain_batch_size=64,
        final_sparsity=0.5, frequency=1, granularity="Conv2D:filter,Dense:filter,ip2:none",
        merge="approximate", quantize=("int8",), representative_size=32, bench_runs=10,
        bench_warmup=2, export_dir=str(folder), verbose=0, keep_going=True)
    settings.update(overrides)
    return PipelineConfig(**settings)


def _logged(capsys):
    out = capsys.readouterr().out
    logged = {}
    for line in out.splitlines():
        if line.startswith("[tfprune]"):
            logged.setdefault(line.split()[1], line)  # a stage's first line: its figure
    return logged


@pytest.mark.slow
def test_end_to_end(mnist_dir, tmp_path, capsys):
    report = pipeline.run(tiny(mnist_dir, tmp_path))
    ran = [stage for stage in pipeline.STAGES if stage.applies(tiny(mnist_dir, tmp_path))]
    assert "search" not in [stage.name for stage in ran]  # no target, no search
    for stage in ran:  # every file the declarations promise
        for name in stage.files_written(tiny(mnist_dir, tmp_path)):
            assert (tmp_path / name).is_file(), name
    assert (tmp_path / pipeline.RECORD).is_file()
    logged = _logged(capsys)
    assert list(logged) == [stage.name for stage in ran]  # one line per stage
    s = report["summary"]
    assert s["baseline"]["params"] == 431080
    assert s["compressed"]["params"] < s["baseline"]["params"] / 2  # half the units went
    assert s["size_ratio"] > 4  # int8 alone gives about 4x
    assert 0.0 <= s["compressed"]["accuracy"] <= 1.0
    assert s["baseline"]["accuracy"] > 0.3  # 256 images, one epoch: well above chance (0.1)
    assert s["speedup"] > 0 and s["compressed"]["latency_us"] > 0
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk == report
    assert [row["model"] for row in report["stages"]] == [
        "baseline.keras", "pruned.keras", "merged.keras", "retrained.keras", "compressed.keras"]
    units = {row["name"]: row for row in on_disk["layers"]}
    assert units["conv1"]["units"] == 20 and units["conv1"]["units_kept"] == 10
    assert units["conv1"]["kernel_zeros"]["retrain"] == 0.5  # half the filters, zeroed
    assert units["conv1"]["kernel_zeros"]["shrink"] == 0.0  # ... and removed
    assert units["ip2"]["units_kept"] == 10  # the classes stay
    # Every accuracy difference is paired on the same images, with its 95% interval.
    verified = on_disk["files"]["compressed.tflite"]
    lost, gained = verified["discordant"]
    assert verified["images"] == 200 and verified["drop_vs"] == "baseline.tflite"
    assert verified["drop_pp"] == pytest.approx(100 * (lost - gained) / 200)
    assert verified["drop_pp"] == pytest.approx(-100 * s["accuracy_delta"])
    low, high = s["accuracy_drop_ci_pp"]
    assert low <= verified["drop_pp"] <= high
    results = on_disk["results"]
    assert "val_drop_pp" not in results["baseline"]
    for stage in ("prune", "merge", "retrain", "shrink"):
        drop, (low, high) = results[stage]["val_drop_pp"], results[stage]["val_drop_ci_pp"]
        base, acc = results["baseline"]["val_accuracy"], results[stage]["val_accuracy"]
        assert drop == pytest.approx(100 * (base - acc)) and low <= drop <= high
    assert "95% CI" in logged["verify"] and "95% CI" in logged["shrink"]
    md = (tmp_path / "report.md").read_text()
    assert "| .tflite size (bytes) |" in md and "| Latency median, µs" in md
    assert "zeros after retrain" in md
    records = json.loads((tmp_path / pipeline.RECORD).read_text())
    assert list(records) == [stage.name for stage in ran]
    assert set(records["export"]["outputs"]) == {"baseline.tflite", "compressed.tflite"}

    # Resumed with one more export mode: the stages before export are skipped, their
    # recorded results feed the report as their fresh ones did.
    config = tiny(mnist_dir, tmp_path, resume=True, quantize=("int8", "float16"))
    resumed = pipeline.run(config)
    logged = _logged(capsys)
    assert {n for n, line in logged.items() if "skipped" in line} == {
        "baseline", "prune", "merge", "retrain", "shrink"}
    assert resumed["stages"] == report["stages"]
    assert resumed["summary"]["compressed"]["params"] == s["compressed"]["params"]
    float16 = resumed["files"]["compressed_float16.tflite"]["accuracy"]
    context = pipeline.Context(config)
    keras_test = tfprune.stats.accuracy(context.model("compressed"), context.test)
    assert abs(float16 - keras_test) < 0.02  # float16 ~ the Keras model, on the same test set
    # every file is timed (interleaved with the baseline) and judged for shipping
    assert resumed["files"]["compressed_float16.tflite"]["latency_us"] > 0
    assert resumed["files"]["compressed_float16.tflite"]["speedup_over"] == "baseline.tflite"
    ship = resumed["ship"]
    assert set(ship["front"]) <= set(ship["within"]) <= {"compressed.tflite",
                                                         "compressed_float16.tflite"}
    assert "| ship |" in (tmp_path / "report.md").read_text()


def test_validation_is_carved_from_training_and_test_stays_apart(mnist_dir, tmp_path):
    context = pipeline.Context(tiny(mnist_dir, tmp_path, train_limit=1000, validation_split=0.2))
    (x, y), (xv, yv), (_, yt) = context.train, context.validation, context.test
    assert (len(y), len(yv), len(yt)) == (800, 200, 200)
    seen = {row.tobytes() for row in x}
    assert not any(row.tobytes() in seen for row in xv)  # no image in both
    again = pipeline.Context(tiny(mnist_dir, tmp_path, train_limit=1000, validation_split=0.2))
    np.testing.assert_array_equal(again.validation[1], yv)  # seeded: the same split
    none = pipeline.Context(tiny(mnist_dir, tmp_path, validation_split=0.0))
    assert len(none.validation[1]) == 0 and len(none.train[1]) == 256


@pytest.mark.slow
def test_stop_after_returns_no_report(mnist_dir, tmp_path, capsys):
    assert pipeline.run(tiny(mnist_dir, tmp_path, stop_after="baseline")) is None
    assert list(_logged(capsys)) == ["baseline"]
    assert (tmp_path / "baseline.keras").is_file() and not (tmp_path / "pruned.keras").exists()


@pytest.mark.slow
def test_hold_zeros_keeps_zeros_through_training():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    kernel = model.layers[0].kernel
    kernel.assign(np.where(np.arange(32).reshape(8, 4) % 2 == 0, 0.0, 1.0).astype("float32"))
    zeros = kernel.numpy() == 0
    x, y = np.random.rand(64, 8).astype("float32"), np.random.rand(64, 4).astype("float32")
    with pipeline.hold_zeros(model):
        model.compile("adam", "mse")
        model.fit(x, y, epochs=2, verbose=0)
    assert np.all(kernel.numpy()[zeros] == 0)
    assert np.any(kernel.numpy()[~zeros] != 1.0)  # the others did train
    assert kernel.constraint is None  # nothing left behind to be saved


def test_hold_zeros_restores_constraints_after_an_error():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(RuntimeError), pipeline.hold_zeros(model):
        assert model.layers[0].kernel.constraint is not None
        raise RuntimeError
    assert model.layers[0].kernel.constraint is None


def _head(*layers):
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), *layers])


@pytest.mark.parametrize("model, probabilities", [
    (_head(), False),
    (_head(keras.layers.Dense(3, activation="softmax")), True),
    (_head(keras.layers.Softmax()), True),
    (_head(keras.layers.Activation("softmax")), True),
    (_head(keras.layers.Activation("log_softmax")), False),  # log-probabilities: logits do
    (_head(keras.layers.Dense(3, activation="relu")), False),
], ids=["linear", "dense-softmax", "Softmax", "Activation-softmax", "log_softmax", "relu"])
def test_ends_in_softmax(model, probabilities):
    assert tfprune.distill.ends_in_softmax(model) is probabilities


def test_ends_in_softmax_sees_through_wrappers_and_functional_models():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, name="hidden")(inputs)
    outputs = keras.layers.Softmax()(keras.layers.Dense(3, name="logits")(x))
    functional = keras.Model(inputs, outputs)
    assert tfprune.distill.ends_in_softmax(functional)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
    pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, 0))
    assert isinstance(pruned.layers[-1], tfprune.PruneLowMagnitude)
    assert tfprune.distill.ends_in_softmax(pruned)


def test_softmax_layer_model_trains_on_probabilities():
    """A model ending in a Softmax layer gets from_logits=False: its loss is the true one."""
    model = _head(keras.layers.Dense(3), keras.layers.Softmax())
    training.compile_model(model, pipeline.PipelineConfig(), 1e-3, 10)
    assert model.loss.get_config()["from_logits"] is False


@pytest.mark.parametrize("spec, expected", [
    ("filter", "filter"),
    ("n:m", "n:m"),
    ("Conv2D:filter,Dense:weight", {"Conv2D": "filter", "Dense": "weight"}),
    ("Conv2D:n:m, ip2:weight", {"Conv2D": "n:m", "ip2": "weight"}),
    ("Conv2D:filter,ip2:none", {"Conv2D": "filter", "ip2": None}),
])
def test_parse_granularity(spec, expected):
    assert pipeline.parse_granularity(spec) == expected


@pytest.mark.parametrize("spec", ["", "none", "columns", "Conv2D", "Conv2D:rows"])
def test_parse_granularity_rejects(spec):
    with pytest.raises(pipeline.TfpruneError, match="granularity"):
        pipeline.parse_granularity(spec)


@pytest.mark.parametrize("field, value", [
    ("merge", "sideways"), ("quantize", ("int3",)), ("final_sparsity", 1.0),
    ("prune_epochs", -1), ("end_step", 0), ("frequency", 0), ("optimizer", "lion"),
    ("dataset", "cifar10"), ("representative_size", 0),
    ("prune_learning_rate", 0.0), ("prune_epochs", 1.5), ("verbose", 3), ("power", "x")])
def test_config_rejects(field, value):
    with pytest.raises(pipeline.TfpruneError, match=field):
        PipelineConfig(**{field: value}).validate()


def test_run_rejects_a_stop_after_that_names_no_stage(tmp_path):
    """The settings know no stage; the runner's check names the stages, before any runs."""
    config = PipelineConfig(export_dir=str(tmp_path / "run"), stop_after="nap")
    with pytest.raises(pipeline.TfpruneError, match="stop_after.*Received: stop_after='nap'"):
        pipeline.run(config)
    assert not (tmp_path / "run").exists()


def test_config_rejects_an_end_step_before_the_first_mask_update():
    with pytest.raises(pipeline.TfpruneError, match="end_step"):
        PipelineConfig(end_step=50, frequency=100).validate()
    PipelineConfig(end_step=50).validate()  # the automatic frequency fits the end


def test_config_defaults_are_valid_and_name_the_folder_after_the_model():
    assert PipelineConfig().validate().export_dir == "export/lenet5"
    assert PipelineConfig(model="nets/my.keras").export_dir == "export/my"
    assert PipelineConfig(quantize="int8, float16").quantize == ("int8", "float16")


def test_parse_layer_sparsity():
    assert pipeline.parse_layer_sparsity("") == {}
    assert pipeline.parse_layer_sparsity("conv1:0.6, ip1:0.8") == {"conv1": 0.6, "ip1": 0.8}
    for bad in ("conv1", "conv1:1.0", "conv1:x", ":0.5"):
        with pytest.raises(pipeline.TfpruneError, match="layer_sparsity"):
            pipeline.parse_layer_sparsity(bad)


def test_fixed_export_batch_must_match_benchmark_batch():
    with pytest.raises(pipeline.TfpruneError, match="bench_batch_size"):
        PipelineConfig(export_batch_size=1, bench_batch_size=4).validate()
