"""`tfprune.data`: every kind of dataset, made to fit a model, and every bad input refused.

The image folders are real PNG files written from MNIST by `export_folder` (the command
users run), not made-up arrays; the TFDS dataset is prepared locally in TFDS's own format.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfprune import data, pipeline
from tfprune.data import folder, images
from tfprune.errors import DataError, TfpruneError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist_folder(mnist_dir, tmp_path_factory):
    """300 training and 300 test MNIST images as PNG files: PATH/train/<digit>/, PATH/test/."""
    path = tmp_path_factory.mktemp("png") / "mnist"
    assert data.export_folder("mnist", path, limit=300, data_dir=mnist_dir) == {
        "train": 300, "test": 300}
    return path


def _by_content(x, y):
    """Image bytes -> label, to compare two splits whatever their order."""
    return {image.tobytes(): int(label) for image, label in zip(x, y, strict=True)}


# ----------------------------------------------------------------------------- export-folder


@pytest.mark.slow
def test_export_folder_writes_pngs_that_read_back_exactly(mnist_dir, mnist_folder):
    assert sorted(p.name for p in (mnist_folder / "train").iterdir()) == [str(d) for d in range(10)]
    splits = data.load(f"folder:{mnist_folder}", input_shape=(28, 28, 1), validation_split=0)
    x, y = data.mnist_arrays("train", mnist_dir)
    assert _by_content(*splits.train) == _by_content(x[:300], y[:300])  # lossless, same labels
    xt, yt = data.mnist_arrays("test", mnist_dir)
    assert _by_content(*splits.test) == _by_content(xt[:300], yt[:300])
    assert splits.class_names == tuple(str(d) for d in range(10))
    assert splits.notes == ()  # 28x28 grayscale PNGs fit a (28, 28, 1) model as they are


@pytest.mark.slow
def test_export_folder_command(mnist_dir, tmp_path, capsys):
    from tfprune.data.__main__ import main

    target = tmp_path / "out"
    command = [sys.executable, "-m", "tfprune.data", "export-folder", "mnist", str(target),
               "--limit", "20", "--data_dir", mnist_dir]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "Wrote 20 training and 20 test images" in done.stdout
    assert len(list(target.rglob("*.png"))) == 40
    assert main(command[3:]) == 1  # the same again: refused, one line
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfprune-data: error: ") and "exists" in err and "\n" not in err
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary folder left
    assert main(["export-folder", "mnist", str(tmp_path / "x"), "--limit", "0"]) == 1


def test_a_failed_export_leaves_nothing(tmp_path):
    pixels = np.zeros((4, 8, 8), np.uint8)
    with pytest.raises(IndexError):  # label 5 has no class folder: fails half-way
        folder.write(tmp_path / "out", {"train": (pixels, np.array([0, 1, 0, 5]))}, ["a", "b"])
    assert os.listdir(tmp_path) == []


def test_folder_names_keep_the_label_order():
    assert folder.folder_names([str(i) for i in range(12)])[10:] == ["10_10", "11_11"]
    assert folder.folder_names(["cat", "dog"]) == ["cat", "dog"]


# ----------------------------------------------------------------------------- loading


@pytest.mark.slow
def test_mnist_splits_are_the_arrays_they_always_were(mnist_dir):
    splits = data.load("mnist", data_dir=mnist_dir, train_limit=1000, test_limit=50, seed=3)
    x, y = data.mnist_arrays("train", mnist_dir)
    (xt, yt), (xv, yv) = data.carve_validation(x[:1000], y[:1000], 0.1, seed=3)
    np.testing.assert_array_equal(splits.train[0], xt)  # bit for bit
    np.testing.assert_array_equal(splits.validation[1], yv)
    assert splits.train[0].dtype == np.float32 and splits.train[1].dtype == np.int32
    assert splits.num_classes == 10 and "the first 1,000 of 60,000" in splits.sources["train"]


@pytest.mark.slow
def test_folder_images_match_keras_image_dataset_from_directory(mnist_folder):
    ours = data.load(f"folder:{mnist_folder / 'test'}", input_shape=(32, 32, 3),
                     rescale="none", validation_split=0.5)
    theirs = keras.utils.image_dataset_from_directory(
        mnist_folder / "test", image_size=(32, 32), color_mode="rgb", shuffle=False,
        batch_size=None, verbose=False)
    x = np.stack([image for image, _ in theirs])
    y = np.array([int(label) for _, label in theirs])
    mine = {**_by_content(*ours.train), **_by_content(*ours.validation),
            **_by_content(*ours.test)}
    assert mine == _by_content(x, y)  # same pixels and labels, resized and RGB the same way
    assert "all 300 images resized to 32x32 (bilinear)" in ours.notes
    assert "all 300 images grayscale, repeated into RGB" in ours.notes


@pytest.mark.slow
def test_one_folder_holds_out_its_test_set(mnist_folder):
    root = mnist_folder / "train"
    splits = data.load(f"folder:{root}", validation_split=0.2, seed=1)
    sizes = [len(split[1]) for split in (splits.train, splits.validation, splits.test)]
    assert sizes == [192, 48, 60]  # 20% of 300 held out as test, 20% of the rest validation
    seen = set(_by_content(*splits.train)) | set(_by_content(*splits.validation))
    assert not seen & set(_by_content(*splits.test))
    assert "held out at random as the test set" in splits.sources["test"]
    again = data.load(f"folder:{root}", validation_split=0.2, seed=1)
    np.testing.assert_array_equal(again.test[0], splits.test[0])  # seeded
    with pytest.raises(DataError, match="leaves no test set"):
        data.load(f"folder:{root}", validation_split=0)


def test_npz_round_trip_into_a_channelless_model(mnist_dir, tmp_path):
    x, y = data.mnist_pixels("train", mnist_dir)
    xt, yt = data.mnist_pixels("test", mnist_dir)
    np.savez(tmp_path / "d.npz", x_train=x[:200, ..., 0], y_train=y[:200, None],
             x_test=xt[:50, ..., 0], y_test=yt[:50])
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    splits = data.load(f"npz:{tmp_path / 'd.npz'}", model, validation_split=0)
    assert splits.train[0].shape == (200, 28, 28) and splits.train[1].shape == (200,)
    np.testing.assert_array_equal(splits.test[0], xt[:50, ..., 0] / np.float32(255))
    assert "channel axis dropped (the model's input has none)" in splits.notes


def test_npz_float_images_are_left_as_stored(tmp_path):
    x = np.random.rand(10, 4, 4, 3).astype(np.float32)
    np.savez(tmp_path / "f.npz", x_train=x, y_train=np.arange(10) % 2, x_test=x[:2],
             y_test=np.array([0, 1]))
    splits = data.load(f"npz:{tmp_path / 'f.npz'}", validation_split=0)
    np.testing.assert_array_equal(splits.train[0], x)
    assert splits.scaling.startswith("as stored")


@pytest.mark.parametrize("rescale, low, high", [("unit", 0, 1), ("symmetric", -1, 1),
                                                 ("none", 0, 255)])
def test_rescale(mnist_dir, rescale, low, high):
    x = data.load("mnist", data_dir=mnist_dir, rescale=rescale, train_limit=100).train[0]
    assert x.min() == low and x.max() == high


def _scaled_model(layer):
    inputs = keras.Input((28, 28, 1))
    augmented = keras.Sequential([keras.layers.RandomFlip()], name="augment")(inputs)
    x = keras.layers.Conv2D(2, 3)(layer(augmented))
    return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))


def test_a_model_that_scales_its_own_input_gets_pixel_values(mnist_dir):
    for layer in (keras.layers.Rescaling(1 / 255),
                  keras.layers.Normalization(mean=33.0, variance=6000.0)):
        splits = data.load("mnist", _scaled_model(layer), data_dir=mnist_dir, train_limit=50)
        assert splits.train[0].max() == 255, layer
        assert type(layer).__name__ in splits.scaling
    explicit = data.load("mnist", _scaled_model(keras.layers.Rescaling(1 / 255)),
                         data_dir=mnist_dir, train_limit=50, rescale="unit")
    assert explicit.train[0].max() == 1  # an explicit --rescale is done as asked


def test_scaling_is_not_detected_behind_computation_or_branches():
    inputs = keras.Input((8, 8, 1))
    branch = keras.layers.Add()([keras.layers.Rescaling(2.0)(inputs), inputs])
    assert images.input_scaling(keras.Model(inputs, branch)) is None
    late = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3),
                             keras.layers.Rescaling(2.0)])
    assert images.input_scaling(late) is None


def test_images_of_every_format_and_channel_count(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (10, 12, 4), np.uint8)
    gray = rng.integers(0, 256, (10, 12, 1), np.uint8)
    files = {"a/rgba.png": tf.io.encode_png(rgba).numpy(),
             "a/gray.jpg": tf.io.encode_jpeg(gray).numpy(),
             "b/deep/nested.jpeg": tf.io.encode_jpeg(rgba[..., :3]).numpy(),
             "b/notes.txt": b"hi"}
    for name, content in files.items():
        (tmp_path / "d" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / name).write_bytes(content)
    from PIL import Image

    Image.fromarray(rgba[..., :3]).save(tmp_path / "d" / "b" / "rgb.bmp")
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(tmp_path / "d" / "b" / "small.gif")
    splits = data.load(f"folder:{tmp_path / 'd'}", input_shape=(10, 12, 1),
                       validation_split=0.2)
    assert splits.class_names == ("a", "b")
    assert sum(len(s[1]) for s in (splits.train, splits.validation, splits.test)) == 5
    notes = "; ".join(splits.notes)
    assert "1 files skipped" in notes and "notes.txt" in notes  # not an image by name
    assert "had an alpha channel, dropped" in notes and "converted to grayscale" in notes
    assert "resized" in notes  # the GIF is 4x4


@pytest.mark.slow
def test_datasets_stream_the_same_splits_as_load(mnist_folder):
    spec = f"folder:{mnist_folder}"
    arrays = data.load(spec, input_shape=(28, 28, 1), seed=4)
    streams = data.datasets(spec, input_shape=(28, 28, 1), seed=4, batch_size=64)
    for name in ("train", "validation", "test"):
        batches = list(getattr(streams, name))
        x = np.concatenate([b[0].numpy() for b in batches])
        y = np.concatenate([b[1].numpy() for b in batches])
        assert _by_content(x, y) == _by_content(*getattr(arrays, name)), name
    assert streams.class_names == arrays.class_names and streams.sources == arrays.sources
    uncached = data.datasets(spec, input_shape=(28, 28, 1), batch_size=64, cache=False)
    assert sum(int(b[1].shape[0]) for b in uncached.test) == len(arrays.test[1])


@pytest.mark.slow
def test_datasets_for_your_own_fit(mnist_dir):
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    splits = data.datasets("mnist", model, data_dir=mnist_dir, batch_size=64, train_limit=512)
    history = model.fit(splits.train, validation_data=splits.validation, epochs=2, verbose=0,
                        shuffle=False)  # the dataset reshuffles itself
    assert history.history["val_accuracy"][-1] > 0.5


# ----------------------------------------------------------------------------- TFDS


@pytest.fixture(scope="module")
def tfds_dir(mnist_dir, tmp_path_factory):
    """A TFDS data folder holding `tiny_digits`: 300 + 100 MNIST images in TFDS's format."""
    import tensorflow_datasets as tfds

    root = tmp_path_factory.mktemp("tfds")
    x, y = data.mnist_pixels("train", mnist_dir)
    xt, yt = data.mnist_pixels("test", mnist_dir)
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(28, 28, 1)),
        "label": tfds.features.ClassLabel(names=[f"digit {d}" for d in range(10)])})
    splits = {"train": {"image": x[:300], "label": y[:300]},
              "test": {"image": xt[:100], "label": yt[:100]}}
    tfds.dataset_builders.store_as_tfds_dataset(
        name="tiny_digits", version="1.0.0", features=features, data_dir=root,
        split_datasets={k: tf.data.Dataset.from_tensor_slices(v) for k, v in splits.items()})
    return root


@pytest.mark.slow
def test_tfds_reads_a_prepared_dataset_with_split_syntax(tfds_dir, mnist_dir):
    splits = data.load("tfds:tiny_digits", data_dir=str(tfds_dir), train_split="train[:50%]",
                       test_split="test[:40]", validation_split=0.1)
    assert (len(splits.train[1]), len(splits.validation[1]), len(splits.test[1])) == (135, 15, 40)
    assert splits.class_names[3] == "digit 3"
    xt, yt = data.mnist_arrays("test", mnist_dir)
    stored = _by_content(xt[:100], yt[:100])  # TFDS shuffled them when it prepared the set
    assert all(stored.get(image) == label for image, label in _by_content(*splits.test).items())
    assert "split 'test[:40]'" in splits.sources["test"]


@pytest.mark.parametrize("split, words", [
    ("train[:0]", "selects no images"), ("trian", "Unknown split")])
def test_tfds_bad_split(tfds_dir, split, words):
    with pytest.raises(DataError, match=words):
        data.load("tfds:tiny_digits", data_dir=str(tfds_dir), train_split=split)


def test_tfds_unknown_name_and_unprepared_dataset_fail_at_once(tmp_path):
    with pytest.raises(DataError, match="Unknown TFDS dataset 'no_such_set'.*tfds.list_builders"):
        data.load("tfds:no_such_set", data_dir=str(tmp_path))
    with pytest.raises(DataError) as error:  # no network here: one line, where and how
        data.load("tfds:cifar10", data_dir=str(tmp_path))
    message = str(error.value)
    assert "not prepared in" in message and str(tmp_path) in message
    assert "tfds build cifar10" in message and "\n" not in message


# ----------------------------------------------------------------------------- bad input


def _folder(tmp_path, layout):
    for name, content in layout.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if content is not None:
            (tmp_path / name).write_bytes(content)
    return f"folder:{tmp_path}"


PNG = tf.io.encode_png(np.zeros((4, 4, 1), np.uint8)).numpy()


@pytest.mark.parametrize("layout, words", [
    ({}, "has no files and no class sub-folders"),
    ({"readme.txt": b"x"}, "1 files but no class sub-folders"),
    ({"cat/a.png": PNG, "dog/notes.txt": b"x"}, "dog' has no images"),
    ({"train/cat/a.png": PNG}, "has train/ but no test/"),
    ({"train/cat/a.png": PNG, "test/cow/a.png": PNG}, "class folders the training images lack"),
], ids=["empty", "no-classes", "empty-class", "no-test", "test-class"])
def test_bad_folders(tmp_path, layout, words):
    with pytest.raises(DataError, match=words):
        data.load(_folder(tmp_path, layout))


def test_a_file_that_is_not_an_image_is_named_and_the_run_refused(tmp_path):
    layout = {f"cat/{i}.png": PNG for i in range(5)} | {"dog/ok.png": PNG,
                                                         "dog/bad.png": b"<html>not found",
                                                         "dog/worse.jpg": PNG[:20]}
    with pytest.raises(DataError) as error:
        data.load(_folder(tmp_path, layout), validation_split=0.2, seed=0)
    message = str(error.value)
    assert "dog/bad.png" in message or "dog/worse.jpg" in message
    assert "and 1 other files" in message and "refused" in message and "\n" not in message


def test_missing_folder_and_file_as_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="it is a file"):
        data.load(f"folder:{tmp_path / 'f'}")


def _npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


X, Y = np.zeros((4, 6, 6), np.uint8), np.array([0, 1, 0, 1])


@pytest.mark.parametrize("arrays, words", [
    (dict(x_train=X, y_train=Y, x_test=X), "lacks y_test"),
    (dict(x_train=X, y_train=Y[:3], x_test=X, y_test=Y), "x_train has 4 images but y_train has 3"),
    (dict(x_train=X, y_train=np.eye(4), x_test=X, y_test=Y), "np.argmax"),
    (dict(x_train=X, y_train=Y * 0.5, x_test=X, y_test=Y), "expected integer class ids"),
    (dict(x_train=X.reshape(4, 36), y_train=Y, x_test=X, y_test=Y), "x.reshape"),
    (dict(x_train=X, y_train=Y, x_test=X[:0], y_test=Y[:0]), "test split.*selects no images"),
    (dict(x_train=X, y_train=Y - 1, x_test=X, y_test=Y), "labels must be class ids"),
    (dict(x_train=X.astype(np.int32) + 300, y_train=Y, x_test=X, y_test=Y), "outside 0-255"),
], ids=["missing", "lengths", "one-hot", "float-labels", "flat", "empty", "negative", "range"])
def test_bad_npz(tmp_path, arrays, words):
    with pytest.raises(DataError, match=words):
        data.load(_npz(tmp_path, **arrays))


def test_npz_that_is_not_an_archive(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="Cannot read .* as a NumPy .npz archive"):
        data.load(f"npz:{tmp_path / 'x.npz'}")
    with pytest.raises(DataError, match="not found"):
        data.load(f"npz:{tmp_path / 'missing.npz'}")


@pytest.mark.parametrize("spec, words", [
    ("cifar10", "tfds:cifar10"), ("data.npz", "npz:data.npz"), ("tfds:", "TFDS name"),
    ("folder:", "a path"), ("tfds:CIFAR10", "lower case")])
def test_bad_specs(spec, words):
    with pytest.raises(DataError, match=words):
        data.parse_spec(spec)


def test_split_settings_apply_to_tfds_only():
    with pytest.raises(TfpruneError, match="tfds: datasets only"):
        pipeline.PipelineConfig(dataset="mnist", train_split="train[:50%]").validate()
    pipeline.PipelineConfig(dataset="tfds:mnist", train_split="train[:50%]").validate()


def test_a_vector_model_is_told_its_image_input():
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)])
    with pytest.raises(DataError, match=r"keras.Input\(\(28, 28, 1\)\)"):
        images.target(data.model_input(model), (28, 28, 1))


def test_fingerprint_changes_with_the_files(tmp_path):
    spec = _folder(tmp_path, {"cat/a.png": PNG})
    before = data.fingerprint(spec)
    assert before == data.fingerprint(spec)
    (tmp_path / "cat" / "b.png").write_bytes(PNG)
    assert data.fingerprint(spec) != before
    assert data.fingerprint("mnist") is None


# ----------------------------------------------------------------------------- the pipeline


def _tiny_model(path, input_shape, classes=10, scale=False):
    layers = [keras.layers.Rescaling(1 / 255)] if scale else []
    model = keras.Sequential([keras.Input(input_shape), *layers,
                              keras.layers.Conv2D(4, 3, name="conv"),
                              keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
                              keras.layers.Dense(classes, activation="softmax", name="out")])
    model.save(path)
    return str(path)


def _run(tmp_path, dataset, model, **overrides):
    settings = dict(model=model, dataset=dataset, baseline_epochs=1, prune_epochs=1,
                    retrain_epochs=0, baseline_batch_size=32, prune_batch_size=32,
                    final_sparsity=0.5, frequency=1, granularity="Conv2D:filter,out:none",
                    merge="exact", quantize=("dynamic",), bench_runs=3, bench_warmup=1,
                    plots=False, export_dir=str(tmp_path / "run"), verbose=0,
                    keep_going=True)  # one epoch on a few images: the data are under test
    settings.update(overrides)
    return pipeline.run(pipeline.PipelineConfig(**settings))


@pytest.mark.slow
def test_pipeline_on_an_image_folder(mnist_folder, tmp_path):
    report = _run(tmp_path, f"folder:{mnist_folder}",
                  _tiny_model(tmp_path / "m.keras", (28, 28, 1)))
    section = report["data"]
    assert section["classes"] == [str(d) for d in range(10)]
    sizes = {name: split["images"] for name, split in section["splits"].items()}
    assert sizes == {"train": 270, "validation": 30, "test": 300}
    assert "accuracy of the .tflite files" in section["splits"]["test"]["used_for"]
    assert report["summary"]["compressed"]["accuracy"] is not None
    on_disk = json.loads((tmp_path / "run" / "report.json").read_text())
    assert on_disk["data"] == section
    assert "## Data" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.slow
def test_pipeline_on_one_folder_into_an_rgb_model_that_scales(mnist_folder, tmp_path):
    report = _run(tmp_path, f"folder:{mnist_folder / 'train'}",
                  _tiny_model(tmp_path / "rgb.keras", (32, 32, 3), scale=True))
    section = report["data"]
    assert "Rescaling" in section["scaling"]
    assert any("resized to 32x32" in note for note in section["notes"])
    assert section["splits"]["test"]["images"] == 30  # 10% of the one folder's 300
    assert report["files"]["compressed.tflite"]["accuracy"] is not None


@pytest.mark.slow
def test_pipeline_on_npz_into_a_model_without_a_channel_axis(mnist_dir, tmp_path):
    x, y = data.mnist_pixels("train", mnist_dir)
    np.savez(tmp_path / "d.npz", x_train=x[:300], y_train=y[:300], x_test=x[300:400],
             y_test=y[300:400])
    tutorial = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(),
                                 keras.layers.Dense(32, activation="relu", name="hidden"),
                                 keras.layers.Dense(10, name="out")])  # no channel axis
    tutorial.save(tmp_path / "tutorial.keras")
    report = _run(tmp_path, f"npz:{tmp_path / 'd.npz'}", str(tmp_path / "tutorial.keras"),
                  granularity="hidden:filter,out:none")
    assert report["data"]["splits"]["test"]["images"] == 100
    assert report["files"]["compressed.tflite"]["accuracy"] is not None
    assert report["layers"][0]["units_kept"] == 16  # half the hidden units went


@pytest.mark.slow
def test_pipeline_on_tfds(tfds_dir, tmp_path):
    model = _tiny_model(tmp_path / "m.keras", (28, 28, 1))
    report = _run(tmp_path, "tfds:tiny_digits", model, data_dir=str(tfds_dir),
                  test_split="test[:50]")
    assert report["data"]["classes"][0] == "digit 0"
    assert report["data"]["splits"]["test"]["images"] == 50


def test_pipeline_refuses_a_model_with_the_wrong_class_count(mnist_folder, tmp_path):
    model = _tiny_model(tmp_path / "m.keras", (28, 28, 1), classes=10)
    root = tmp_path / "three"
    for digit in "012":
        (root / digit).mkdir(parents=True)
        for png in list((mnist_folder / "train" / digit).iterdir())[:5]:
            (root / digit / png.name).write_bytes(png.read_bytes())
    with pytest.raises(TfpruneError, match="10 outputs but the dataset has 3 classes"):
        _run(tmp_path, f"folder:{root}", model)
    assert not (tmp_path / "run").exists()  # refused before any stage
