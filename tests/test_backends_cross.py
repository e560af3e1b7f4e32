"""Across Keras backends: the same sparsity step by step, and a `.keras` file written
under JAX that loads and exports under TensorFlow.

Each backend runs in a process of its own (`tests/backends_run.py`): Keras fixes its
backend at import. This process is the TensorFlow side.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import tfprune

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "backends_run.py"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                 reason="the TensorFlow side of the cross-backend checks")]


def _installed(backend):
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    return importlib.util.find_spec(module) is not None


def _start(backend, *args):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _result(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _backends():
    return [pytest.param(b, marks=pytest.mark.skipif(
        not _installed(b), reason=f"{b} is not installed (pip install 'tfprune[{b}]')"))
        for b in ("jax", "torch")]


@pytest.mark.parametrize("other", _backends())
def test_the_masks_sparsity_is_the_same_step_by_step(other):
    runs = [_start(b, "trajectory", "weight,filter") for b in ("tensorflow", other)]
    tf_run, other_run = (_result(p) for p in runs)
    assert other_run["backend"] == other
    final = {"weight": dict.fromkeys(("conv1", "conv2", "fc1", "fc2"), 0.75),
             "filter": {"conv1": 0.75, "conv2": 0.75, "fc1": 0.75, "fc2": 0.0}}
    for granularity, expected in final.items():
        ours, theirs = tf_run[granularity], other_run[granularity]
        assert len(ours["steps"]) == 12   # 2 epochs of 6 batches
        assert theirs["steps"] == ours["steps"], granularity
        # Step 0's masks come from the same starting weights: the very same masks.
        assert theirs["first_masks"] == ours["first_masks"], granularity
        assert ours["sparsity"] == theirs["sparsity"] == pytest.approx(expected)


@pytest.mark.skipif(not _installed("jax"), reason="jax is not installed "
                                                   "(pip install 'tfprune[dev]')")
def test_a_keras_file_written_under_jax_exports_under_tensorflow(tmp_path):
    made = _result(_start("jax", "export", str(tmp_path)))
    from tfprune.pruning import wrapper  # noqa: F401  (registers PruneLowMagnitude for loading)

    assert made["backend"] == "jax" and made["filters"] == [2, 3]
    saved = np.load(tmp_path / "outputs.npz")
    pruned = keras.saving.load_model(tmp_path / "pruned.keras")
    small = keras.saving.load_model(tmp_path / "small.keras")
    assert tfprune.sparsity(pruned) == made["sparsity"]
    np.testing.assert_allclose(pruned.predict(saved["x"], verbose=0), saved["pruned"],
                               atol=1e-5)
    np.testing.assert_allclose(small.predict(saved["x"], verbose=0), saved["small"], atol=1e-5)
    path = tfprune.export.to_tflite(tmp_path / "small.keras", tmp_path / "small.tflite")
    np.testing.assert_allclose(tfprune.export.predict(path, saved["x"]), saved["small"],
                               atol=1e-4)
