"""The README's Python API example runs as written, on slices of MNIST, in a temp folder."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # see pyproject.toml's markers

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


def _backend_example():
    """The "Other Keras backends" section's script, and its export command's Python."""
    text = README.read_text()
    section = text[text.index("## Other Keras backends"):text.index("## The Python API")]
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    export = re.search(r'KERAS_BACKEND=tensorflow python -c "(.*?)"', section).group(1)
    return script, export


def _run_script(script, backend, folder):
    import os
    import subprocess
    import sys

    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(README.parent), os.environ.get("PYTHONPATH", "")])}
    folder.mkdir()
    (folder / "prune_jax.py").write_text(script)
    return subprocess.Popen([sys.executable, "prune_jax.py"], cwd=folder, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_the_other_backends_example_runs_under_jax_and_exports_under_tensorflow(
        mnist_dir, tmp_path, monkeypatch):
    pytest.importorskip("jax", reason="jax is not installed (pip install -e '.[dev]')")
    import ast

    import keras

    import tfprune

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the export half needs this process on the TensorFlow backend")
    script, export = _backend_example()
    monkeypatch.setenv("TFPRUNE_DATA_DIR", mnist_dir)
    # The same script under JAX and under TensorFlow, side by side.
    runs = {b: _run_script(script, b, tmp_path / b) for b in ("jax", "tensorflow")}
    printed, accuracy = {}, {}
    test_x, test_y = tfprune.data.mnist_arrays("test")
    for backend, process in runs.items():
        out, err = process.communicate(timeout=900)
        assert process.returncode == 0, err[-3000:]
        line = next(ln for ln in out.splitlines() if ln.startswith(f"{backend} {{"))
        printed[backend] = ast.literal_eval(line.split(" ", 1)[1])
        monkeypatch.chdir(tmp_path / backend)
        exec(export, {})   # the README's export command, in this TensorFlow process
        accuracy[backend] = tfprune.export.evaluate("small.tflite", test_x, test_y)
    # 5 of 20 filters, 12 of 50, 125 of 500 units; the classifier whole: the same on both.
    assert printed["jax"] == printed["tensorflow"] == {
        "conv1": 0.75, "conv2": 0.76, "ip1": 0.75, "ip2": 0.0}
    small = keras.saving.load_model(tmp_path / "jax" / "small.keras")
    assert small.get_layer("conv1").filters == 5 and small.get_layer("ip1").units == 125
    # Two seeded runs, but each backend draws its own initial weights: close, not equal
    # (trained on a slice, they differed by 0.7 and 1.09 pp in two runs of this test).
    assert min(accuracy.values()) > 0.9, accuracy
    assert abs(accuracy["jax"] - accuracy["tensorflow"]) <= 0.02, accuracy
    print(f"README backends example, .tflite test accuracy: {accuracy}")
