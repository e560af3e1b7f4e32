import gzip
import shutil

import numpy as np
import pytest

from tfprune import data, models
from tfprune.errors import DataError


def test_lenet5_has_the_caffe_parameter_count():
    assert models.lenet5().count_params() == 431_080
    assert models.lenet5_classic().count_params() == 61_706


@pytest.mark.slow
def test_mnist_reads_and_verifies_the_idx_files(mnist_dir):
    ds = data.mnist("test", data_dir=mnist_dir, batch_size=32, limit=100)
    images, labels = next(iter(ds))
    assert images.shape == (32, 28, 28, 1) and labels.shape == (32,)
    assert 0.0 <= float(images.numpy().min()) and float(images.numpy().max()) <= 1.0
    train_images, train_labels = data.mnist_arrays("train", mnist_dir)
    assert train_images.shape == (60000, 28, 28, 1)
    assert sorted(np.unique(train_labels)) == list(range(10))


def _copy(mnist_dir, tmp_path):
    target = tmp_path / "mnist"
    shutil.copytree(mnist_dir, target)
    return target


def test_truncated_file_is_named(mnist_dir, tmp_path):
    folder = _copy(mnist_dir, tmp_path)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match="t10k-labels.*corrupt or truncated"):
        data.mnist_arrays("test", str(folder))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DataError, match="Cannot read"):
        data.mnist_arrays("test", str(folder))


def test_missing_folder_and_files_say_how_to_provide_them(tmp_path):
    with pytest.raises(DataError, match="does not exist.*--data_dir"):
        data.mnist_arrays("test", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="lacks train-images"):
        data.mnist_arrays("test", str(tmp_path))
    with pytest.raises(DataError, match="Unknown MNIST split"):
        data.mnist_arrays("validation", str(tmp_path))


def test_without_files_or_network_tfds_fails_fast(monkeypatch, tmp_path):
    monkeypatch.delenv("TFPRUNE_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    with pytest.raises(DataError, match="cannot reach"):
        data.idx._tfds_pixels("test", host="127.0.0.1", timeout=0.5)
