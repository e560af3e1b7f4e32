"""Pruning and the whole pipeline under tf.distribute: two logical CPUs of one process
(MirroredStrategy), and two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy).

Devices and collective ops must be set up before TensorFlow starts, which the other tests
of this process have done: each run is a fresh subprocess that reports back as JSON. Meanwhile
this process runs the same pipeline on one device, to compare.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tfprune import pipeline

pytestmark = pytest.mark.slow  # see pyproject.toml's markers

ROOT = Path(__file__).resolve().parent.parent
# Seconds before the subprocesses are killed: a run takes under a minute on two idle cores,
# a few on a crowded machine.
TIMEOUT = 600

# The pipeline on a few hundred MNIST images: one epoch per stage, half the filters pruned.
SETTINGS = dict(
    train_limit=320, test_limit=300, baseline_epochs=2, prune_epochs=1, retrain_epochs=1,
    baseline_batch_size=32, prune_batch_size=32, retrain_batch_size=32, final_sparsity=0.5,
    frequency=1, granularity="Conv2D:filter,Dense:filter,ip2:none", merge="exact",
    quantize=["int8"], representative_size=32, bench_runs=10, bench_warmup=2, plots=False,
    verbose=0, keep_going=True)  # 320 images: the distribution is under test, not accuracy

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys, time
    kind, folder, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    import tensorflow as tf
    if kind == "mirrored":  # two logical CPUs: two replicas in this process
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tfprune
    strategy = tfprune.distribute.strategy(kind)  # before TensorFlow runs anything
    import keras
    import numpy as np
    from tfprune import stats
    from tfprune.pipeline import Context, PipelineConfig, hold_zeros

    def replicas(variable):
        return [np.asarray(v) for v in variable._value.values]

    # Pruning as a user does it in their own strategy.scope(), with a model made before:
    # prune clones it inside the scope.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 12)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(32, name="a"),
                              keras.layers.Dense(2, name="b")])
    with strategy.scope():
        pruned = tfprune.prune(model, tfprune.PolynomialDecay(0.0, 0.75, 0, 8, frequency=2))
        pruned.compile("adam", "sparse_categorical_crossentropy")
        history = tfprune.distribute.fit(pruned, x, y, batch_size=16, epochs=2, verbose=0,
                                         callbacks=[tfprune.UpdatePruningStep()])
    wrapper = pruned.layers[0]
    masks = replicas(wrapper.masks[0])
    small = tfprune.strip(pruned)
    state = b"".join(np.asarray(v).tobytes() for v in pruned.weights)
    facts = {
        "replicas": strategy.num_replicas_in_sync,
        "mirrored": type(wrapper.masks[0]._value).__name__,
        "masks_agree": all(np.array_equal(masks[0], m) for m in masks[1:]),
        "step": int(wrapper.pruning_step.numpy()),
        "sparsity": tfprune.sparsity(pruned),
        "strip_matches": bool(np.allclose(small(x[:8]), pruned(x[:8]), atol=1e-5)),
        "loss_finite": bool(np.isfinite(history.history["loss"]).all()),
        "weights_sha256": hashlib.sha256(state).hexdigest(),
    }

    # hold_zeros: its constraints run on every replica.
    with strategy.scope():
        dense = keras.Sequential([keras.Input((12,)), keras.layers.Dense(4)])
        kernel = dense.layers[0].kernel
        kernel.assign(np.where(np.arange(48).reshape(12, 4) % 2 == 0, 0.0, 1.0))
        with hold_zeros(dense):
            dense.compile("adam", "mse")
            tfprune.distribute.fit(dense, x, np.ones((128, 4)), batch_size=16, epochs=2,
                                   verbose=0)
    values = replicas(kernel)
    zeros = np.arange(48).reshape(12, 4) % 2 == 0
    facts["zeros_held"] = all(bool(np.all(v[zeros] == 0)) for v in values)
    facts["others_trained"] = all(bool(np.any(v[~zeros] != 1.0)) for v in values)

    # The pipeline.
    start = time.perf_counter()
    config = PipelineConfig(**settings, export_dir=folder, distribute=kind)
    report = tfprune.pipeline.run(config)
    facts["pipeline_seconds"] = round(time.perf_counter() - start, 1)
    facts["report"] = report
    if report is not None:
        compressed = keras.models.load_model(os.path.join(folder, "compressed.keras"))
        facts["keras_test_accuracy"] = stats.accuracy(compressed, Context(config).test)
    print(json.dumps(facts))
    """
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind, folder, mnist_dir, tf_config=None):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT),
               TF_CPP_MIN_LOG_LEVEL="3", TFPRUNE_DATA_DIR=mnist_dir)
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, kind, str(folder), json.dumps(SETTINGS)], cwd=ROOT,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(processes):
    """Each process's facts; all are killed if one fails or the deadline passes."""
    deadline = time.monotonic() + TIMEOUT
    try:
        outputs = [p.communicate(timeout=max(1, deadline - time.monotonic()))
                   for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (_, err) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


def single_device(mnist_dir, folder):
    """The same pipeline without tf.distribute, in this process."""
    config = pipeline.PipelineConfig(**SETTINGS, data_dir=mnist_dir, export_dir=str(folder))
    return pipeline.run(config)


def check_pruning(facts):
    """The pruning run: two replicas, masks mirrored and equal, the global step counted."""
    assert facts["replicas"] == 2
    assert facts["mirrored"] == "MirroredVariable" and facts["masks_agree"]
    assert facts["step"] == 15  # 128 images / batch 16 (global) x 2 epochs: steps 0..15
    assert facts["sparsity"] == {"a": 0.75, "b": 0.75}
    assert facts["strip_matches"] and facts["loss_finite"]
    assert facts["zeros_held"] and facts["others_trained"]


def check_like_single_device(report, alone, keras_test_accuracy):
    """The same sparsity, stage by stage, as one device; a .tflite that verifies."""
    zeros = {row["name"]: row["kernel_zeros"] for row in report["layers"]}
    assert zeros == {row["name"]: row["kernel_zeros"] for row in alone["layers"]}
    assert zeros["conv1"]["prune"] == zeros["conv1"]["retrain"] == 0.5
    for key in ("params", "nonzeros", "macs"):
        assert report["summary"]["compressed"][key] == alone["summary"]["compressed"][key]
    tflite = report["files"]["compressed.tflite"]["accuracy"]
    assert tflite > 0.3  # ten classes: chance is 0.1
    assert abs(tflite - keras_test_accuracy) <= 0.02  # the int8 file is the Keras model


def show(kind, facts, alone):
    """The figures, for `pytest -s`."""
    report, file = facts["report"], "compressed.tflite"
    zeros = {row["name"]: row["kernel_zeros"]["prune"] for row in report["layers"]}
    print(f"\n{kind}: pipeline {facts['pipeline_seconds']} s, kernel zeros after prune "
          f"{zeros}, {file} test accuracy {report['files'][file]['accuracy']:.2%} (its Keras "
          f"model {facts['keras_test_accuracy']:.2%}; one device: "
          f"{alone['files'][file]['accuracy']:.2%})")


def test_mirrored_on_two_cpus(mnist_dir, tmp_path):
    process = start("mirrored", tmp_path / "mirrored", mnist_dir)
    alone = single_device(mnist_dir, tmp_path / "alone")
    (facts,) = finish([process])
    check_pruning(facts)
    check_like_single_device(facts["report"], alone, facts["keras_test_accuracy"])
    assert facts["report"]["config"]["distribute"] == "mirrored"
    show("mirrored", facts, alone)


def test_multi_worker_on_two_processes(mnist_dir, tmp_path):
    folder = tmp_path / "run"
    cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(2)]}
    processes = [start("multi_worker", folder, mnist_dir,
                       {"cluster": cluster, "task": {"type": "worker", "index": i}})
                 for i in range(2)]
    alone = single_device(mnist_dir, tmp_path / "alone")
    chief, worker = finish(processes)
    for facts in chief, worker:
        check_pruning(facts)
    assert chief["weights_sha256"] == worker["weights_sha256"]  # in step, bit for bit
    assert worker["report"] is None  # the chief reports
    check_like_single_device(chief["report"], alone, chief["keras_test_accuracy"])
    # Only the chief wrote the run folder; the worker its own scratch folder inside it.
    records = json.loads((folder / pipeline.RECORD).read_text())
    config = pipeline.PipelineConfig(**SETTINGS, data_dir=mnist_dir, export_dir=str(folder))
    assert list(records) == [stage.name for stage in pipeline.STAGES if stage.applies(config)]
    scratch = folder / "workertemp_1"
    assert sorted(p.name for p in scratch.iterdir()) == [
        ".tfprune.lock", "baseline.keras", "pruned.keras", "retrained.keras", "stages.json"]
    assert not (folder / "backup").exists() and not (scratch / "backup").exists()
    show("multi-worker", chief, alone)


@pytest.fixture(autouse=True)
def _no_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
