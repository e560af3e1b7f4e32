"""The pipeline end to end on a tiny configuration, `resume`, and holding zeros in retraining."""

import json

import keras
import numpy as np
import pytest

from tfprune import pipeline
from tfprune.pipeline import PipelineConfig


def tiny(mnist_dir, folder, **overrides):
    """A configuration that runs every stage in seconds: a few hundred images, one epoch."""
    settings = dict(
        data_dir=mnist_dir, train_limit=256, test_limit=200, baseline_epochs=1, prune_epochs=1,
        retrain_epochs=1, baseline_batch_size=64, prune_batch_size=64, retrain_batch_size=64,
        final_sparsity=0.5, frequency=1, granularity="Conv2D:filter,Dense:filter,ip2:none",
        merge="approximate", quantize=("int8",), representative_size=32, bench_runs=10,
        bench_warmup=2, export_dir=str(folder), verbose=0)
    settings.update(overrides)
    return PipelineConfig(**settings)


def _logged(capsys):
    out = capsys.readouterr().out
    return {line.split()[1]: line for line in out.splitlines() if line.startswith("[tfprune]")}


def test_end_to_end(mnist_dir, tmp_path, capsys):
    report = pipeline.run(tiny(mnist_dir, tmp_path))
    for name in ("baseline.keras", "pruned.keras", "merged.keras", "retrained.keras",
                 "compressed.keras", "baseline.tflite", "compressed.tflite", "report.json",
                 "report.md", "stages.json", "stages.png", "tflite.png", "layers.png"):
        assert (tmp_path / name).is_file(), name
    logged = _logged(capsys)
    assert list(logged) == list(pipeline.STAGES)  # one line per stage
    s = report["summary"]
    assert s["baseline"]["params"] == 431080
    assert s["compressed"]["params"] < s["baseline"]["params"] / 2  # half the units went
    assert s["size_ratio"] > 4  # int8 alone gives about 4x
    assert 0.0 <= s["compressed"]["accuracy"] <= 1.0
    assert s["baseline"]["accuracy"] > 0.3  # 256 images, one epoch: well above chance (0.1)
    assert s["speedup"] > 0
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["summary"] == json.loads(json.dumps(s))
    units = {row["name"]: row for row in on_disk["layers"]}
    assert units["conv1"]["units"] == 20 and units["conv1"]["units_kept"] == 10
    assert units["ip2"]["units_kept"] == 10  # the classes stay
    md = (tmp_path / "report.md").read_text()
    assert "| .tflite size (bytes) |" in md and "| Latency median" in md
    records = json.loads((tmp_path / "stages.json").read_text())
    assert set(records) == set(pipeline.STAGES)
    assert set(records["export"]["outputs"]) == {"baseline.tflite", "compressed.tflite"}


def test_resume_after_interruption(mnist_dir, tmp_path, capsys, monkeypatch):
    config = tiny(mnist_dir, tmp_path, stop_after="retrain")

    def interrupted(self):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(pipeline._Run, "_merge", interrupted)
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(config)
    assert (tmp_path / "pruned.keras").is_file()
    assert not (tmp_path / "merged.keras").exists()
    capsys.readouterr()
    baseline_mtime = (tmp_path / "baseline.keras").stat().st_mtime_ns

    config.resume = True
    pipeline.run(config)
    logged = _logged(capsys)
    assert "skipped" in logged["baseline"] and "skipped" in logged["prune"]
    assert "skipped" not in logged["merge"] and "skipped" not in logged["retrain"]
    assert (tmp_path / "baseline.keras").stat().st_mtime_ns == baseline_mtime
    assert (tmp_path / "retrained.keras").is_file()

    # A flag of a later stage reruns that stage and the ones after it, not those before.
    config.retrain_learning_rate = 1e-4
    pipeline.run(config)
    logged = _logged(capsys)
    assert all("skipped" in logged[s] for s in ("baseline", "prune", "merge"))
    assert "skipped" not in logged["retrain"]

    # A damaged output does not count as finished.
    (tmp_path / "merged.keras").write_bytes(b"damaged")
    pipeline.run(config)
    logged = _logged(capsys)
    assert "skipped" in logged["prune"] and "skipped" not in logged["merge"]

    # Without --resume everything runs again.
    config.resume = False
    config.stop_after = "baseline"
    pipeline.run(config)
    assert "skipped" not in _logged(capsys)["baseline"]


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
    ("merge", "sideways"), ("quantize", ("int4",)), ("final_sparsity", 1.0),
    ("prune_epochs", -1), ("end_step", 0), ("optimizer", "lion"), ("stop_after", "nap")])
def test_config_rejects(field, value):
    with pytest.raises(pipeline.TfpruneError, match=field):
        PipelineConfig(**{field: value}).validate()


def test_parse_layer_sparsity():
    assert pipeline.parse_layer_sparsity("") == {}
    assert pipeline.parse_layer_sparsity("conv1:0.6, ip1:0.8") == {"conv1": 0.6, "ip1": 0.8}
    for bad in ("conv1", "conv1:1.0", "conv1:x", ":0.5"):
        with pytest.raises(pipeline.TfpruneError, match="layer_sparsity"):
            pipeline.parse_layer_sparsity(bad)


def test_fixed_export_batch_must_match_benchmark_batch():
    with pytest.raises(pipeline.TfpruneError, match="bench_batch_size"):
        PipelineConfig(export_batch_size=1, bench_batch_size=4).validate()
