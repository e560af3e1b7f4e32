"""Never slower by default: sparse encoding only where it pays, a slower file called slower."""

import dataclasses

import keras
import numpy as np
import pytest

import tfprune
from tfprune import bench, export, report
from tfprune.pipeline import Context, PipelineConfig, stages

pytestmark = pytest.mark.slow  # see pyproject.toml's markers

L = keras.layers


@pytest.fixture(scope="module")
def sparse_model():
    """A conv and a hidden Dense with 85% of their weights zero: what weight pruning leaves."""
    model = keras.Sequential([keras.Input((12, 12, 2)), L.Conv2D(16, 3, name="conv"),
                              L.Flatten(), L.Dense(64, name="fc"), L.Dense(10, name="out")])
    rng = np.random.default_rng(0)
    for name in ("conv", "fc"):
        kernel = model.get_layer(name).kernel
        kernel.assign(kernel.numpy() * (rng.random(kernel.shape) > 0.85))
    return model


def test_sparse_encoding_is_kept_only_where_it_pays(sparse_model, tmp_path):
    # Float: XNNPACK takes the DENSIFY ops of float weights; the file is much smaller.
    kept = export.to_tflite_where_sparse_pays(sparse_model, tmp_path / "float.tflite")
    assert kept.sparse and kept.sparse_bytes < kept.dense_bytes / 2
    assert export.inspect(kept.path).densify and kept.reason.startswith("sparse: ")
    # Dynamic-range int8: XNNPACK refuses the sparse FULLY_CONNECTED: the dense file.
    refused = export.to_tflite_where_sparse_pays(sparse_model, tmp_path / "dynamic.tflite",
                                                 quantize="dynamic")
    assert not refused.sparse and refused.sparse_delegate == "builtin"
    assert "FULLY_CONNECTED" in refused.reason and not export.inspect(refused.path).densify
    assert tfprune.tflite.interpreter.load_interpreter(refused.path)[1] == "xnnpack"
    # Nothing sparse to encode: the sparse file is no smaller.
    dense = keras.Sequential([keras.Input((8,)), L.Dense(4, name="fc")])
    plain = export.to_tflite_where_sparse_pays(dense, tmp_path / "plain.tflite")
    assert not plain.sparse and "not smaller" in plain.reason
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dynamic.tflite", "float.tflite", "plain.tflite"]  # no trial file left behind
    with pytest.raises(tfprune.TfpruneError, match="chooses the encoding itself"):
        export.to_tflite_where_sparse_pays(dense, tmp_path / "x.tflite", sparse=True)


def test_a_slower_compressed_file_is_reported_as_slower_with_the_reason(
        sparse_model, tmp_path, monkeypatch):
    export.to_tflite(sparse_model, tmp_path / "baseline.tflite")
    export.to_tflite(sparse_model, tmp_path / "compressed.tflite", quantize="dynamic",
                     sparse=True)  # what --sparse used to write: the builtin kernels run it
    measured = bench.compare(tmp_path / "baseline.tflite", tmp_path / "compressed.tflite",
                             runs=5, warmup=1, delegates=("xnnpack",))
    base, comp = measured.timing(0), measured.timing(1)
    # The timing itself is the machine's: make it slower, as it was for the user.
    slow = dataclasses.replace(comp, median_us=base.median_us * 2.2, speedup=1 / 2.2)
    monkeypatch.setattr(bench, "compare", lambda *a, **k: dataclasses.replace(
        measured, timings=[base, slow]))
    config = PipelineConfig(export_dir=str(tmp_path), sparse=False)
    context = Context(config)
    context.results = {"baseline": {"macs": 1000}, "shrink": {"macs": 1000}}
    outputs, result, figure = stages.BENCHMARK.run(context)
    facts = result["files"]["compressed.tflite"]
    assert facts["slower"] is True and facts["speedup"] == pytest.approx(1 / 2.2)
    assert "XNNPACK refused it (failed to delegate FULLY_CONNECTED" in facts["slower_reason"]
    assert "sparse encoding adds 2 DENSIFY ops" in facts["slower_reason"]
    assert "no fewer MACs" in facts["slower_reason"]
    assert "2.2x SLOWER: XNNPACK refused it" in figure and "faster" not in figure
    made = {"files": {"baseline.tflite": {"model": "baseline", "bytes": 4000},
                      "compressed.tflite": {"model": "compressed", "bytes": 1000}}}
    data = report.build(config, stages.STAGES, {**context.results, "export": made,
                                                 "benchmark": result}, {})
    line = report.headline(data)
    assert line.startswith("NOT EARNED (slower: 0.45x the baseline's speed (XNNPACK refused it")
    assert line.endswith("4.0x smaller, 2.2x SLOWER, accuracy —")
    assert "**The compressed file is slower than the baseline**" in report.markdown(data)
