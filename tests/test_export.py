"""tfprune.export: every export mode round-trips, evaluate agrees with Keras, inspect sees
zeros and sparse storage, bad input fails in one line and leaves no file."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfprune import TfpruneError, UnsupportedModelError, export
from tfprune.errors import DataError


def tiny_model():
    """Conv 4x3x3 -> ReLU -> Flatten -> Dense 10 softmax on 8x8x1.

    The dense kernel (1,440 weights) is big enough for dynamic-range quantization, which
    leaves tensors under 1,024 elements (the conv) in float.
    """
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax", name="dense"),
    ])
    return model


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    m = tiny_model()
    kernel = m.get_layer("conv").kernel.numpy()
    kernel.reshape(-1)[:30] = 0.0  # 30 of 36 weights zero
    m.get_layer("conv").kernel.assign(kernel)
    dense = m.get_layer("dense")
    dense.kernel.assign(dense.kernel * 20.0)  # confident predictions: clear margins
    return m


@pytest.fixture(scope="module")
def data(model):
    """Inputs labelled by the model itself, keeping examples it predicts with a clear margin
    so that quantization noise does not flip them."""
    x = np.random.default_rng(0).random((512, 8, 8, 1)).astype("float32")
    p = model.predict(x, verbose=0)
    top2 = np.sort(p, axis=1)[:, -2:]
    keep = (top2[:, 1] - top2[:, 0]) > 0.05
    x, y = x[keep][:96], np.argmax(p[keep][:96], axis=1)
    assert len(x) == 96 and len(set(y)) > 1
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


MODES = [("none", False, False), ("none", True, False), ("float16", False, False),
         ("dynamic", True, False), ("int8", False, False), ("int8", True, True)]


@pytest.mark.slow
@pytest.mark.parametrize("quantize,sparse,int8_io", MODES)
def test_round_trip_each_mode(model, data, out, quantize, sparse, int8_io):
    path = out / f"{quantize}_{sparse}_{int8_io}.tflite"
    written = export.to_tflite(model, path, quantize=quantize, sparse=sparse,
                               representative_data=data if quantize == "int8" else None,
                               int8_io=int8_io)
    assert written == path and path.is_file()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp files
    accuracy = export.evaluate(path, data)
    # Labels are the Keras model's own predictions: Keras scores 1.0.
    assert accuracy >= (0.9995 if quantize in ("none", "float16") else 0.9)
    info = export.inspect(path)
    expected = {"none": "float32", "float16": "float16", "dynamic": "int8", "int8": "int8"}
    assert info.tensor("dense").dtype == expected[quantize]
    assert info.inputs[0].endswith("int8" if int8_io else "float32")
    assert info.tensor("conv").sparse == sparse
    assert "CONV_2D" in info.ops
    # float16 weights are dequantized at load; int8 with float I/O quantizes its input.
    assert ("DEQUANTIZE" in info.ops) == (quantize in ("float16", "int8") and not int8_io)
    assert ("QUANTIZE" in info.ops) == (quantize == "int8" and not int8_io)


@pytest.mark.slow
def test_evaluate_matches_keras_on_mnist(mnist_dir, tmp_path):
    from tfprune import data as tfdata

    train = tfdata.mnist("train", data_dir=mnist_dir, batch_size=64, limit=2048)
    test = tfdata.mnist("test", data_dir=mnist_dir, batch_size=100, limit=1000)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 5, strides=2),
                              keras.layers.Flatten(), keras.layers.Dense(10, "softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train, epochs=1, verbose=0, shuffle=False)  # tf.data: shuffling is its own
    keras_acc = model.evaluate(test, verbose=0)[1]
    path = export.to_tflite(model, tmp_path / "m.tflite")
    tflite_acc = export.evaluate(path, test)
    assert 0.5 < keras_acc
    assert abs(tflite_acc - keras_acc) <= 0.0005  # 0.05 percentage point
    # The builtin kernels give the same answer.
    assert abs(export.evaluate(path, test, delegate="builtin") - keras_acc) <= 0.0005


@pytest.mark.slow
def test_evaluate_fixed_batch_and_unbatched_data(model, tmp_path):
    x = np.random.default_rng(1).random((10, 8, 8, 1)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    path = export.to_tflite(model, tmp_path / "fixed.tflite", batch_size=1)
    info = export.inspect(path)
    assert "SHAPE" not in info.ops and info.inputs[0].endswith("1x8x8x1 float32")
    assert export.evaluate(path, tf.data.Dataset.from_tensor_slices((x, y)).batch(4)) == 1.0
    assert export.evaluate(path, tf.data.Dataset.from_tensor_slices((x, y))) == 1.0
    one_hot = np.eye(10)[y]
    assert export.evaluate(path, [(x, one_hot)]) == 1.0
    # A fixed batch of 4 on batches of 10: the last chunk of each is padded.
    path4 = export.to_tflite(model, tmp_path / "fixed4.tflite", batch_size=4, quantize="int8",
                             representative_data=x)
    assert export.inspect(path4).inputs[0].endswith("4x8x8x1 float32")
    assert export.evaluate(path4, [(x, y), (x[:3], y[:3])]) >= 0.9


@pytest.mark.slow
def test_inspect_finds_zeros_and_sparse_storage(model, out):
    dense = export.to_tflite(model, out / "dense.tflite")
    sparse = export.to_tflite(model, out / "sparse.tflite", sparse=True)
    d, s = export.inspect(dense), export.inspect(sparse)
    for info in (d, s):
        assert info.tensor("conv").zero_fraction == pytest.approx(30 / 36)
        assert info.tensor("conv").shape == [4, 3, 3, 1]
        assert info.tensor("dense").zero_fraction < 0.05
    assert not d.tensor("conv").sparse and not d.densify
    assert d.tensor("conv").bytes == 36 * 4
    assert s.tensor("conv").sparse and s.tensor("conv").bytes < 36 * 4
    assert s.tensor("conv").index_bytes > 0 and d.tensor("conv").index_bytes == 0
    assert s.densify and s.tensor("conv").densified and s.ops["DENSIFY"] == 1
    assert s.size_raw == os.path.getsize(sparse) and 0 < s.size_gzip < s.size_raw
    text = str(s)
    assert "DENSIFY" in text and "sparse+densify" in text and "83.3%" in text
    as_json = json.loads(json.dumps(s.to_dict()))
    assert as_json["densify"] is True and as_json["ops"]["CONV_2D"] == 1
    with pytest.raises(KeyError, match="No weight tensor.*'nope'.*conv"):
        s.tensor("nope")


def test_accepts_keras_file(model, tmp_path):
    model.save(tmp_path / "m.keras")
    path = export.to_tflite(tmp_path / "m.keras", tmp_path / "m.tflite")
    assert export.inspect(path).ops["FULLY_CONNECTED"] == 1


# --- bad input -------------------------------------------------------------------------------


def _one_line(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message
    for word in words:
        assert word in message
    return message


def _no_files(folder):
    return [p.name for p in folder.iterdir()] == []


def test_int8_without_representative_data(model, tmp_path):
    with pytest.raises(TfpruneError) as e:
        export.to_tflite(model, tmp_path / "m.tflite", quantize="int8")
    _one_line(e, "representative_data")
    assert _no_files(tmp_path)


def test_representative_data_of_wrong_shape(model, tmp_path):
    bad = tf.data.Dataset.from_tensor_slices(np.zeros((8, 28, 28, 1), "float32")).batch(4)
    with pytest.raises(DataError) as e:
        export.to_tflite(model, tmp_path / "m.tflite", quantize="int8", representative_data=bad)
    _one_line(e, "(4, 28, 28, 1)", "representative_data")
    assert _no_files(tmp_path)


def test_bad_arguments(model, tmp_path):
    with pytest.raises(TfpruneError) as e:
        export.to_tflite(model, tmp_path / "m.tflite", quantize="int3")
    _one_line(e, "quantize='int3'")
    with pytest.raises(TfpruneError) as e:
        export.to_tflite(model, tmp_path / "m.tflite", int8_io=True)
    _one_line(e, "int8_io")
    with pytest.raises(TfpruneError) as e:
        export.to_tflite(tmp_path / "missing.keras", tmp_path / "m.tflite")
    _one_line(e, "missing.keras")
    assert _no_files(tmp_path)


def test_export_folder_missing(model, tmp_path):
    with pytest.raises(TfpruneError) as e:
        export.to_tflite(model, tmp_path / "nope" / "m.tflite")
    _one_line(e, "does not exist")
    assert _no_files(tmp_path)


def test_export_folder_unwritable_simulated(model, tmp_path, monkeypatch):
    """As root a chmod does not stop writes: simulate the OS refusing the temporary file."""
    from tfprune import atomic

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    with pytest.raises(TfpruneError) as e:
        export.to_tflite(model, tmp_path / "m.tflite")
    _one_line(e, "Permission denied", "write")
    assert _no_files(tmp_path)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_export_folder_unwritable(model, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(TfpruneError) as e:
            export.to_tflite(model, folder / "m.tflite")
        _one_line(e, "write")
        assert _no_files(folder)
    finally:
        folder.chmod(0o755)


def test_select_ops_refused_with_op_name(tmp_path):
    class Igamma(keras.layers.Layer):
        def call(self, x):
            return tf.math.igamma(x + 1.0, x + 2.0)

    m = keras.Sequential([keras.Input((4,)), Igamma(), keras.layers.Dense(2)])
    with pytest.raises(UnsupportedModelError) as e:
        export.to_tflite(m, tmp_path / "m.tflite")
    _one_line(e, "Igamma")
    assert _no_files(tmp_path)


@pytest.fixture(scope="module")
def bad_files(model, out, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    good = export.to_tflite(model, out / "good.tflite").read_bytes()
    (folder / "empty.tflite").write_bytes(b"")
    (folder / "truncated.tflite").write_bytes(good[: len(good) // 2])
    (folder / "text.tflite").write_text("not a model at all\n")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("name,words", [("missing.tflite", ["does not exist"]),
                                        ("empty.tflite", ["empty"]),
                                        ("truncated.tflite", ["truncated"]),
                                        ("text.tflite", ["not a TFLite model"])])
def test_bad_files(bad_files, data, name, words):
    path = bad_files / name
    for call in (export.inspect, lambda p: export.evaluate(p, data)):
        with pytest.raises(TfpruneError) as e:
            call(path)
        _one_line(e, name, *words)


@pytest.mark.slow
def test_evaluate_takes_arrays_as_keras_does(model, tmp_path):
    x = np.random.default_rng(2).random((70, 8, 8, 1)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    wrong = (y + 1) % 10
    wrong[:7] = y[:7]   # 7 of 70 right
    path = export.to_tflite(model, tmp_path / "m.tflite")
    assert export.evaluate(path, x, y) == 1.0
    assert export.evaluate(path, x, wrong, batch_size=16) == pytest.approx(0.1)
    assert export.evaluate(path, tf.constant(x), list(wrong)) == pytest.approx(0.1)
    fixed = export.to_tflite(model, tmp_path / "fixed.tflite", batch_size=1)
    assert export.evaluate(fixed, x, np.eye(10)[wrong], batch_size=64) == pytest.approx(0.1)


@pytest.fixture(scope="module")
def plain(model, out):
    return export.to_tflite(model, out / "plain.tflite")


@pytest.mark.parametrize("args,kwargs,error,words", [
    (lambda x, y, ds: (x,), {}, DataError, ["without labels", "pass y"]),
    (lambda x, y, ds: (x, y[:5]), {}, DataError, ["10 inputs and 5 labels"]),
    (lambda x, y, ds: (ds, y), {}, DataError, ["x must be an array", "BatchDataset"]),
    (lambda x, y, ds: (ds,), {"batch_size": 4}, TfpruneError, ["batched already"]),
    (lambda x, y, ds: (x, y), {"batch_size": 0}, TfpruneError, ["batch_size=0"]),
])
def test_evaluate_bad_data(plain, args, kwargs, error, words):
    x = np.zeros((10, 8, 8, 1), "float32")
    y = np.zeros(10, "int64")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    with pytest.raises(error) as e:
        export.evaluate(plain, *args(x, y, ds), **kwargs)
    _one_line(e, *words)
