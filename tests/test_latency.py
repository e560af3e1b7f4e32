"""tfprune.bench.compare / file_sizes: well-formed interleaved results in µs with speedups,
XNNPACK fallback (loading lives in tfprune.interpreter)."""

import functools
import gzip
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfprune import TfpruneError, bench, export
from tfprune.tflite import interpreter


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two tiny classifiers: a float one and a full-int8 one with int8 I/O."""
    folder = tmp_path_factory.mktemp("bench")
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.Flatten(), keras.layers.Dense(5, "softmax")])
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
    a = export.to_tflite(model, folder / "a.tflite")
    b = export.to_tflite(model, folder / "b.tflite", quantize="int8", int8_io=True,
                         representative_data=tf.data.Dataset.from_tensor_slices(x).batch(4))
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    return str(a), str(b), (x, y)


@pytest.mark.slow
def test_compare_two_models_well_formed(files):
    a, b, _ = files
    result = bench.compare(a, b, runs=7, warmup=2)
    assert [(t.path, t.delegate) for t in result.timings] == [
        (a, "xnnpack"), (b, "xnnpack"), (a, "builtin"), (b, "builtin")]
    for t in result.timings:
        assert 0 < t.p10_us <= t.median_us <= t.p90_us
        assert 0 < t.speedup_p10 <= t.speedup <= t.speedup_p90
        assert (t.size_raw, t.size_gzip) == bench.file_sizes(t.path)
    for delegate in ("xnnpack", "builtin"):
        first = result.timing(a, delegate)
        assert first.speedup == first.speedup_p10 == first.speedup_p90 == 1.0
    assert result.timing(0, "builtin").delegate_used == "builtin"
    assert result.timing(1, "xnnpack").delegate_used in ("xnnpack", "builtin")
    text = str(result)
    assert "a.tflite" in text and "b.tflite" in text and "runs=7" in text
    assert "median µs" in text and "speedup [p10, p90]" in text and " ms" not in text
    assert len(text.splitlines()) >= 6
    d = json.loads(json.dumps(result.to_dict()))
    assert d["runs"] == 7 and len(d["timings"]) == 4
    assert {"median_us", "speedup"} <= set(d["timings"][0])
    with pytest.raises(KeyError, match="gpu"):
        result.timing(a, "gpu")


def test_speedup_is_the_first_files_time_over_each_files(files, monkeypatch):
    """On a fake clock a takes 8 µs a round and b 2 µs: b's speedup is 4."""
    a, b, _ = files
    now = [0]
    cost_ns = {a: 8000, b: 2000}

    def ready(path, threads, delegate, batch_size):
        def call():
            now[0] += cost_ns[path]
        return call, delegate, ""

    monkeypatch.setattr(bench.latency, "_ready", ready)
    monkeypatch.setattr(bench.latency, "_interleaved", functools.partial(
        bench.latency._interleaved, clock=lambda: now[0]))
    result = bench.compare(a, b, runs=5, warmup=1, delegates=("builtin",))
    ta, tb = result.timing(a, "builtin"), result.timing(b, "builtin")
    assert (ta.median_us, tb.median_us) == (8.0, 2.0)
    assert (tb.speedup, tb.speedup_p10, tb.speedup_p90) == (4.0, 4.0, 4.0)
    assert "4.00x [4.00, 4.00]" in str(result) and "8.0" in str(result)


def test_compare_batch_threads_one_delegate(files):
    a, b, _ = files
    result = bench.compare(a, b, threads=2, batch_size=4, runs=3, warmup=0,
                           delegates=("builtin",))
    assert len(result.timings) == 2 and result.batch_size == 4 and result.threads == 2


def _failing_xnnpack(monkeypatch):
    real = interpreter._make_interpreter

    def make(litert, data, threads, resolver):
        if resolver == litert.OpResolverType.AUTO:
            raise RuntimeError("Failed to apply XNNPACK delegate.\nmore detail")
        return real(litert, data, threads, resolver)

    monkeypatch.setattr(interpreter, "_make_interpreter", make)


def test_xnnpack_failure_falls_back_and_says_so(files, monkeypatch):
    a, b, (x, y) = files
    _failing_xnnpack(monkeypatch)
    result = bench.compare(a, b, runs=3, warmup=1)
    for t in result.timings:
        assert t.delegate_used == "builtin"
    note = result.timing(b, "xnnpack").note
    assert "XNNPACK failed to prepare" in note and "Failed to apply" in note
    assert "\n" not in note
    assert "XNNPACK failed to prepare" in str(result)
    # Accuracy checks go through the same fallback.
    assert export.evaluate(b, [(x, y)]) == pytest.approx(1.0, abs=0.2)


def test_xnnpack_is_reported_when_it_runs(files):
    _, used, note = interpreter.load_interpreter(files[0])
    assert (used, note) == ("xnnpack", "")


def test_file_sizes(tmp_path):
    path = tmp_path / "zeros.bin"
    path.write_bytes(bytes(10_000))
    raw, gz = bench.file_sizes(path)
    assert raw == 10_000 and gz == len(gzip.compress(bytes(10_000), 9, mtime=0)) and gz < 100


@pytest.mark.parametrize("kwargs,word", [
    ({"runs": 0}, "runs"), ({"warmup": -1}, "warmup"), ({"threads": 0}, "threads"),
    ({"delegates": ("gpu",)}, "delegates"), ({"batch_size": 1.5}, "batch_size")])
def test_bad_arguments(files, kwargs, word):
    with pytest.raises(TfpruneError, match=word):
        bench.compare(files[0], **kwargs)


def test_bad_paths(tmp_path):
    with pytest.raises(TfpruneError, match="pass one or more"):
        bench.compare()
    with pytest.raises(TfpruneError, match="does not exist"):
        bench.compare(tmp_path / "missing.tflite")
    (tmp_path / "x.tflite").write_text("hello")
    with pytest.raises(TfpruneError, match="not a TFLite model"):
        bench.compare(tmp_path / "x.tflite")


def test_fixed_batch_model_refuses_other_batch(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = export.to_tflite(model, tmp_path / "fixed.tflite", batch_size=1)
    assert bench.compare(path, runs=2, warmup=0).timings[0].median_us > 0
    with pytest.raises(TfpruneError, match="fixed batch of 1"):
        bench.compare(path, batch_size=8, runs=2)


def test_real_xnnpack_rejection_of_sparse_int8_dense(tmp_path):
    """XNNPACK fails to prepare a sparse-encoded int8 fully-connected layer at its first
    invoke: compare and evaluate fall back to the builtin kernels and say so."""
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, name="fc"),
                              keras.layers.Dense(3)])
    w = model.get_layer("fc").kernel.numpy()
    w[np.abs(w) < np.quantile(np.abs(w), 0.9)] = 0.0
    model.get_layer("fc").kernel.assign(w)
    x = np.random.default_rng(0).random((32, 64)).astype("float32")
    path = export.to_tflite(model, tmp_path / "s.tflite", quantize="int8", sparse=True,
                            representative_data=x)
    assert export.inspect(path).tensor("fc").sparse
    result = bench.compare(path, runs=3, warmup=1, batch_size=4)
    t = result.timing(0, "xnnpack")
    assert t.delegate_used == "builtin" and "XNNPACK failed" in t.note and t.median_us > 0
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    assert export.evaluate(path, [(x[:16], y[:16]), (x[16:], y[16:])]) >= 0.8
