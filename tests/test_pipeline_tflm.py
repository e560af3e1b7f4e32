"""`--target=tflm` in the pipeline: its settings, the op check before training, the tflm stage
and what the report shows."""

import importlib.util

import keras
import pytest

from tfprune import micro, pipeline
from tfprune.errors import TfpruneError, UnsupportedModelError
from tfprune.pipeline import PipelineConfig, Stage, execute, stages


@pytest.mark.parametrize("settings,match", [
    ({"emit_c": True}, "emit_c is for TFLite Micro files: add --target=tflm"),
    ({"max_arena": 4096}, "max_arena is for TFLite Micro files"),
    ({"target": "tflm", "quantize": "dynamic,int8"}, "put int8 first"),
    ({"target": "tflm", "export_batch_size": 4, "bench_batch_size": 4}, "batch of 1"),
    ({"target": "tflm", "bench_batch_size": 4}, "batch of 1"),
])
def test_settings_tflm_cannot_take_are_refused(settings, match):
    with pytest.raises(TfpruneError, match=match):
        PipelineConfig(**settings).validate()


def test_tflm_files_are_full_int8_without_sparse_encoding():
    litert = stages.tflite_files(PipelineConfig(quantize="int8,dynamic", sparse=True))
    on_tflm = stages.tflite_files(PipelineConfig(quantize="int8,dynamic", sparse=True,
                                                 target="tflm").validate())
    assert litert == {"baseline.tflite": ("baseline", "none", False),
                      "compressed.tflite": ("compressed", "int8", True),
                      "compressed_dynamic.tflite": ("compressed", "dynamic", True)}
    assert on_tflm == {"baseline.tflite": ("baseline", "none", False),
                     "compressed.tflite": ("compressed", "int8", False),
                     "compressed_dynamic.tflite": ("compressed", "dynamic", True),
                     "baseline_int8.tflite": ("baseline", "int8", False)}
    assert stages.tflm_files(PipelineConfig()) == ()


def test_run_folder_readme_lists_the_tflm_files():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "export" / "README.md").read_text()
    config = PipelineConfig(target="tflm", emit_c=True).validate()
    for stage in pipeline.STAGES:
        for name in stage.files_written(config):
            assert f"`{name}` | {stage.name} |" in text, name


def _small(filters, name):
    return keras.Sequential([keras.Input((28, 28, 1)),
                             keras.layers.Conv2D(filters, 5, strides=2, activation="relu",
                                                 name="conv"),
                             keras.layers.Flatten(name="flatten"),
                             keras.layers.Dense(10, activation="softmax", name="out")], name=name)


@pytest.mark.slow
def test_an_op_tflm_lacks_stops_the_run_before_training(mnist_dir, tmp_path):
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(name="flatten"),
                              keras.layers.Dense(16, name="fc"),
                              keras.layers.Activation("gelu", name="act"),
                              keras.layers.Dense(10, activation="softmax", name="out")])
    model.save(tmp_path / "gelu.keras")
    folder = tmp_path / "run"
    config = PipelineConfig(model=str(tmp_path / "gelu.keras"), data_dir=mnist_dir,
                            train_limit=64, target="tflm", export_dir=str(folder), verbose=0)
    with pytest.raises(UnsupportedModelError, match=r"--target=tflm, checked before training: "
                                                    r".*GELU \(op \d+, layer act\) is not an op "
                                                    r"TFLM has: replace the layer"):
        pipeline.run(config)
    assert not folder.exists()  # nothing ran: the folder the run made is gone again


def _made(name, filters):
    """A stage that makes a small Keras model as the stage `name` of a run would."""
    def run(context):
        model = _small(filters, name)
        params = model.count_params()
        return [context.save(name, model)], {"params": params, "nonzeros": params}, name

    return run


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tflite_micro") is None,
                    reason="the tflite-micro package (tfprune[tflm]) is not installed")
def test_tflm_stage_measures_the_files_and_the_report_shows_them(mnist_dir, tmp_path, capsys,
                                                                 monkeypatch):
    """The export, verify, tflm and report stages as declared, after two small models."""
    _small(4, "source").save(tmp_path / "source.keras")  # what the check converts
    run = [Stage("baseline", _made("baseline", 4), model="baseline"),
           Stage("shrink", _made("compressed", 2), model="compressed"),
           stages.EXPORT, stages.VERIFY, stages.TFLM, stages.REPORT]
    folder = tmp_path / "run"

    def config(**overrides):
        return PipelineConfig(**{
            "model": str(tmp_path / "source.keras"), "data_dir": mnist_dir, "train_limit": 200,
            "test_limit": 50, "representative_size": 16, "target": "tflm", "emit_c": True,
            "tflm_runs": 3, "export_dir": str(folder), "verbose": 0, **overrides}).validate()

    results = execute(run, pipeline.Context(config()))
    report = results["report"]
    files = report["files"]
    for name in ("baseline.tflite", "baseline_int8.tflite", "compressed.tflite",
                 "model_data.h", "model_data.cc", "memory.png"):
        assert (folder / name).is_file(), name
    assert files["compressed.tflite"]["sparse"] is False  # config.sparse is True
    assert files["compressed.tflite"]["arena_bytes"] == micro.measure_arena(
        folder / "compressed.tflite").total
    for name in ("baseline_int8.tflite", "compressed.tflite"):
        facts = files[name]
        assert facts["flash_bytes"] == facts["bytes"] == (folder / name).stat().st_size
        assert facts["tflm_test_images"] == 50 and facts["tflm_latency_us"] > 0
        # LiteRT's accuracy (verify: XNNPACK) and TFLM's differ by at most the images they
        # class apart.
        assert abs(facts["tflm_accuracy"] - facts["accuracy"]) <= (
            facts["tflm_xnnpack_class_mismatches"] / 50)
        assert facts["tflm_builtin_output_mismatches"] >= facts["tflm_builtin_class_mismatches"]
    section = report["tflm"]
    assert section["compressed"] == "compressed.tflite" and section["arena_ratio_int8"] > 1
    md = (folder / "report.md").read_text()
    assert "| Tensor arena on TFLite Micro (bytes, measured; baseline: full int8) |" in md
    assert "## TensorFlow Lite Micro" in md
    assert "Tensor arena: " in (folder / "model_data.h").read_text()
    assert "[tfprune] tflm" in capsys.readouterr().out

    # A compressed file over --max_arena stops the run, saying what fills the arena.
    with pytest.raises(TfpruneError, match=r"compressed.tflite needs a [\d,]+-byte tensor arena "
                                           r"on TFLite Micro, more than max_arena: its "
                                           r"activations peak at .*layer conv.*max_arena=100"):
        execute(run, pipeline.Context(config(resume=True, max_arena=100)))

    # Without the tflite-micro package: one line, no TFLM figures (the LiteRT ones stand),
    # and the C source still written, its header saying the arena was not measured.
    monkeypatch.setattr(micro, "available", lambda: "TFLite Micro is not available (test).")
    monkeypatch.setattr(micro, "measure_arena", _unavailable)
    outputs, result, figure = stages.TFLM.run(pipeline.Context(config()))
    assert figure == ("TFLite Micro is not available (test). TFLM figures not measured; the "
                      "LiteRT figures stand.")
    assert outputs == ["model_data.h", "model_data.cc"] and result["files"] == {}
    assert "not measured" in (folder / "model_data.h").read_text()


def _unavailable(path):
    raise micro.TflmUnavailable("TFLite Micro is not available (test).")
