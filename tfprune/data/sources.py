"""Each kind of dataset read into one shape: a training and a test `Part`, and class names.

A `Part` is one split before conversion: pixel arrays (MNIST, `.npz`, TFDS) or image
files (a folder, decoded later), with labels and a line saying where it came from. Limits
(`train_limit`, `test_limit`) keep the first images of a split; a folder's files are
shuffled first (seeded), so its first images are a random sample and not one class.
"""

import dataclasses
import os
import zipfile
from pathlib import Path

import numpy as np

from tfprune.data import catalog, folder, idx
from tfprune.data.splits import held_out
from tfprune.errors import DataError

NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_NPZ_HOW = "save it with np.savez(PATH, x_train=..., y_train=..., x_test=..., y_test=...)"


@dataclasses.dataclass
class Part:
    """One split before conversion.

    Attributes:
        labels: int32 array of class ids.
        source: One line: where the images came from.
        pixels: Array `(N, H, W[, C])` of uint8 pixel values (floats: already scaled), or
            `None` for files.
        paths: Array of image file paths, or `None` for pixel arrays.
    """

    labels: np.ndarray
    source: str
    pixels: np.ndarray = None
    paths: np.ndarray = None

    def __len__(self):
        return len(self.labels)

    def take(self, index, source):
        """The examples at `index` (a slice, mask or index array), described by `source`."""
        return Part(self.labels[index], source,
                    None if self.pixels is None else self.pixels[index],
                    None if self.paths is None else self.paths[index])

    def first(self, limit):
        """The first `limit` examples (all with `None`)."""
        if limit is None or limit >= len(self):
            return self
        return self.take(slice(0, limit), f"{self.source}: the first {limit:,} of {len(self):,}")


@dataclasses.dataclass
class Raw:
    """A dataset's parts before conversion.

    Attributes:
        train, test: `Part`s.
        class_names: Tuple of strings, label order.
        notes: Tuple of strings (files skipped, images resized while read).
    """

    train: Part
    test: Part
    class_names: tuple
    notes: tuple = ()


def read(spec, data_dir=None, train_split="train", test_split="test", holdout=0.1, seed=0,
         train_limit=None, test_limit=None, size=None):
    """Reads the dataset `spec` (a parsed `Spec`) into a `Raw`.

    Args:
        spec: The `tfprune.data.spec.Spec`.
        data_dir: The MNIST IDX folder or the TFDS data folder.
        train_split, test_split: TFDS splits.
        holdout: Float: the share of a one-folder dataset held out as its test set.
        seed: Integer, seeds a folder's shuffle and hold-out.
        train_limit, test_limit: Integers or `None`: keep the first images of a split.
        size: `(height, width)` for TFDS images of varying size, or `None`.

    Raises:
        DataError: the dataset is missing or malformed (the message names the fix).
    """
    if spec.kind == "mnist":
        raw = _mnist(data_dir)
    elif spec.kind == "npz":
        raw = _npz(spec.where)
    elif spec.kind == "tfds":
        return _tfds(spec.where, data_dir, train_split, test_split, train_limit, test_limit,
                     size)
    else:
        raw = _folder(spec.where, holdout, seed)
    return dataclasses.replace(raw, train=raw.train.first(train_limit),
                               test=raw.test.first(test_limit))


def _mnist(data_dir):
    where = idx.find_mnist_dir(data_dir)
    where = f"IDX files in {where}" if where else "TFDS"
    parts = [Part(labels, f"mnist {split} ({where})", pixels)
             for split in ("train", "test")
             for pixels, labels in [idx.mnist_pixels(split, data_dir)]]
    return Raw(*parts, idx.CLASS_NAMES)


def _tfds(name, data_dir, train_split, test_split, train_limit, test_limit, size):
    found = catalog.builder(name, data_dir)
    parts, notes = [], []
    for split, limit in ((train_split, train_limit), (test_split, test_limit)):
        pixels, labels, class_names, read_notes = catalog.read(found, split, limit, size)
        source = f"tfds:{name} split {split!r} ({found.data_dir})"
        if limit is not None and len(labels) == limit:
            source += f": the first {limit:,}"
        parts.append(Part(labels, source, pixels))
        notes += [f"{split}: {note}" for note in read_notes]
    return Raw(*parts, class_names, tuple(notes))


def _npz(path):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"NumPy archive {str(path)!r} not found: pass npz:PATH to a file "
                        f"written by np.savez ({_NPZ_HOW}). Received: dataset='npz:{path}'")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ValueError("a single array, not an archive")
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise DataError(f"Cannot read {str(path)!r} as a NumPy .npz archive ({first}): "
                        f"{_NPZ_HOW}.") from None
    missing = [name for name in NPZ_ARRAYS if name not in arrays]
    if missing:
        raise DataError(f"{str(path)!r} lacks {', '.join(missing)}: {_NPZ_HOW}. Received: "
                        f"arrays={sorted(arrays)}")
    parts = []
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], _labels(arrays[f"y_{split}"], f"y_{split}", path)
        if len(x) != len(y):
            raise DataError(f"In {str(path)!r}, x_{split} has {len(x):,} images but y_{split} "
                            f"has {len(y):,} labels: give each image one label.")
        parts.append(Part(y, f"npz:{path} x_{split}, y_{split}", _pixels(x, f"x_{split}", path)))
    if (parts[0].pixels.dtype == np.uint8) != (parts[1].pixels.dtype == np.uint8):
        raise DataError(f"In {str(path)!r}, one of x_train and x_test holds pixel values "
                        "(integers) and the other floats: store both the same way.")
    names = arrays.get("class_names")
    if names is None:
        count = max(int(p.labels.max(initial=-1)) for p in parts) + 1
        names = [str(i) for i in range(count)]
    return Raw(*parts, tuple(str(n) for n in np.asarray(names).ravel()))


def _pixels(x, name, path):
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 2, 3, 4)):
        raise DataError(f"In {str(path)!r}, {name} has shape {x.shape}: expected images "
                        "(N, height, width) or (N, height, width, channels) with 1 to 4 "
                        "channels (e.g. x.reshape(-1, 28, 28)).")
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32)
    if not np.issubdtype(x.dtype, np.integer) or (x.size and (x.min() < 0 or x.max() > 255)):
        raise DataError(f"In {str(path)!r}, {name} is {x.dtype} with values outside 0-255: "
                        "store pixel values as uint8, or scaled images as float32. Received: "
                        f"dtype={x.dtype}")
    return x.astype(np.uint8)


def _labels(y, name, path):
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # (N, 1), as keras.datasets gives them
    if y.ndim != 1:
        raise DataError(f"In {str(path)!r}, {name} has shape {y.shape}: expected one integer "
                        "class id per image (for one-hot labels: np.argmax(y, axis=1)).")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"In {str(path)!r}, {name} is {y.dtype}: expected integer class ids "
                        f"(y.astype(int)). Received: dtype={y.dtype}")
    return y.astype(np.int32)


def _folder(root, holdout, seed):
    root = Path(root)
    notes = []
    if folder.layout(root) == "split":
        class_names, paths, labels, skipped = folder.scan(root / "train")
        _, test_paths, test_labels, more = folder.scan(root / "test", class_names)
        skipped += more
        train = _shuffled(Part(labels, f"folder:{root / 'train'}", paths=paths), seed)
        test = _shuffled(Part(test_labels, f"folder:{root / 'test'}", paths=test_paths),
                         seed + 1)
    else:
        if not holdout:
            raise DataError(f"{str(root)!r} is one folder of classes and validation_split=0 "
                            "leaves no test set: set validation_split above 0 (that share is "
                            "held out as the test set), or split the images into "
                            f"{root}/train and {root}/test. Received: validation_split=0")
        class_names, paths, labels, skipped = folder.scan(root)
        everything = _shuffled(Part(labels, f"folder:{root}", paths=paths), seed)
        held = held_out(len(everything), holdout, seed + 1)
        test = everything.take(held, f"{holdout:.0%} of folder:{root} ({len(everything):,} "
                                     f"images), held out at random as the test set "
                                     f"(seed {seed})")
        train = everything.take(~held, f"the rest of folder:{root}")
    if skipped:
        shown = os.path.relpath(skipped[0], root)
        notes.append(f"{len(skipped):,} files skipped: not images by name, or not in a class "
                     f"folder (e.g. {shown!r})")
    return Raw(train, test, class_names, tuple(notes))


def _shuffled(part, seed):
    order = np.random.default_rng(seed).permutation(len(part))
    return part.take(order, f"{part.source} (shuffled, seed {seed})")
