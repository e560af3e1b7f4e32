"""The README's Python API example runs as written, on slices of MNIST, in a temp folder."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _api_example():
    """The first python code block after the "## The Python API" heading."""
    text = README.read_text()
    section = text[text.index("## The Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_python_api_example_runs(mnist_dir, tmp_path, monkeypatch, capsys):
    code = _api_example()
    assert "import keras, tfprune" in code and "tfprune.data.mnist(" in code
    monkeypatch.setenv("TFPRUNE_DATA_DIR", mnist_dir)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)

    # It made the baseline file it benchmarks against, and a smaller, faster-to-run model.
    sizes = {name: (tmp_path / f"{name}.tflite").stat().st_size for name in ("baseline", "small")}
    assert sizes["small"] < sizes["baseline"] / 4
    assert namespace["small"].count_params() < namespace["model"].count_params() / 4
    out = capsys.readouterr().out
    assert "MACs" in out and "median µs" in out and "speedup" in out
    accuracies = re.search(r"^(0\.\d+|1\.0) (0\.\d+|1\.0)$", out, re.M)
    assert accuracies, out[-2000:]
    assert min(map(float, accuracies.groups())) > 0.3   # trained, not guessing (0.1)


def test_the_microcontroller_example_runs(mnist_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("tflite_micro", reason="the tflite-micro package (tfprune[tflm]) is "
                                               "not installed")
    text = README.read_text()
    section = text[text.index("## Microcontrollers"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.setenv("TFPRUNE_DATA_DIR", mnist_dir)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {})
    out = capsys.readouterr().out
    assert "measured on TFLite Micro" in out
    accuracy = float(re.search(r"^(0\.\d+|1\.0)$", out, re.M).group(1))
    assert accuracy > 0.8
    assert (tmp_path / "model_data.h").is_file() and (tmp_path / "model_data.cc").is_file()
