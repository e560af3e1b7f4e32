"""The report: the summary ratios, the Markdown table and the plots, from stage results."""

import json

from tfprune import report
from tfprune.pipeline import PipelineConfig


def _results():
    layers = [{"name": "conv1", "class": "Conv2D", "units": 20, "weights": 500, "sparsity": 0.0}]
    small = [{"name": "conv1", "class": "Conv2D", "units": 8, "weights": 200, "sparsity": 0.1}]
    return {
        "baseline": {"params": 1000, "nonzeros": 1000, "macs": 8000, "keras_accuracy": 0.99,
                     "layers": layers},
        "retrain": {"params": 1000, "nonzeros": 300, "macs": 8000, "keras_accuracy": 0.985,
                    "layers": [dict(layers[0], sparsity=0.6)]},
        "shrink": {"params": 250, "nonzeros": 200, "macs": 1000, "keras_accuracy": 0.985,
                   "layers": small},
        "export": {"baseline.tflite": {"model": "baseline", "quantize": "none", "sparse": False,
                                       "bytes": 5000, "gzip_bytes": 4000},
                   "compressed.tflite": {"model": "compressed", "quantize": "int8",
                                         "sparse": True, "bytes": 500, "gzip_bytes": 250}},
        "verify": {"baseline.tflite": 0.99, "compressed.tflite": 0.9895},
        "benchmark": {"baseline_median_us": 100.0, "compressed_median_us": 10.0,
                      "speedup": 9.5},
    }


def test_summary_ratios():
    data = report.build(PipelineConfig(), _results(), {"baseline": {"seconds": 3.0}})
    s = data["summary"]
    assert s["params_ratio"] == 4.0 and s["nonzeros_ratio"] == 5.0 and s["macs_ratio"] == 8.0
    assert s["size_ratio"] == 10.0 and s["gzip_ratio"] == 16.0
    assert s["speedup"] == 9.5  # the per-round ratio, not the ratio of medians
    assert abs(s["accuracy_delta"] - (-0.0005)) < 1e-12
    assert [st["stage"] for st in data["stages"]] == ["baseline", "retrain", "shrink"]
    assert data["layers"][0]["units_kept"] == 8 and data["layers"][0]["sparsity"] == 0.6
    json.dumps(data)  # JSON-ready


def test_markdown_table():
    md = report.markdown(report.build(PipelineConfig(), _results(), {}))
    assert "| .tflite size (bytes) | 5,000 | 500 | 10.0x |" in md
    assert "| .tflite test accuracy | 99.00% | 98.95% | -0.05 pp |" in md
    assert "| Latency median (1 thread, batch 1) | 100.0 µs | 10.0 µs | 9.5x |" in md
    assert "| conv1 | Conv2D | 20 | 8 |" in md


def test_missing_stages_render_as_dashes():
    md = report.markdown(report.build(PipelineConfig(), {"baseline": _results()["baseline"]},
                                      {}))
    assert "| .tflite size (bytes) | — | — | — |" in md


def test_write_files(tmp_path):
    data = report.build(PipelineConfig(), _results(), {})
    written = report.write(tmp_path, data)
    assert set(written) == {"report.json", "report.md", "stages.png", "tflite.png",
                            "layers.png"}
    for name in written:
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "stages.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["size_ratio"] == 10.0
