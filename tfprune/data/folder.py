"""Image folders (`folder:PATH`): one sub-folder per class, as
`keras.utils.image_dataset_from_directory` reads them; and writing a dataset out as one.

Layouts: `PATH/train/<class>/...` with `PATH/test/<class>/...`, or `PATH/<class>/...` alone
(then `tfprune.data.load` holds the test set out of it). Class names are the sub-folder
names, sorted: label `i` is the `i`-th. Images are `.png`, `.jpg`, `.jpeg`, `.bmp` and
`.gif` files (the first frame), anywhere under their class folder (as in Keras, links to
folders inside a class folder are not followed); other files and hidden ones are skipped,
as Keras skips them, and counted. A file named as an image that does not decode stops the
load: training on fewer images than the folder holds, without a word, would make results
that cannot be reproduced from it.

Decoding runs as a `tf.data` pipeline: parallel `map` (`AUTOTUNE`) into preallocated
memory for `load`, or, for your own `fit`, `stream` (decode in parallel, `cache` when the
decoded images fit in memory, `shuffle`, `batch`, `prefetch`).
"""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tfprune.data import images
from tfprune.errors import DataError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
_KINDS = "PNG, JPEG, BMP or GIF"


def layout(root):
    """`"split"` when `root` holds `train/` and `test/`, `"single"` when its sub-folders are
    the classes.

    Raises:
        DataError: `root` is missing or not a folder, or has only one of train/ and test/.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Image folder {str(root)!r} does not exist{_not_dir(root)}: pass "
                        f"folder:PATH with one sub-folder of images per class. "
                        f"Received: dataset='folder:{root}'")
    train, test = (root / "train").is_dir(), (root / "test").is_dir()
    if train and test:
        return "split"
    if train or test:
        have, lack = ("train", "test") if train else ("test", "train")
        raise DataError(f"{str(root)!r} has {have}/ but no {lack}/: add {root / lack} (one "
                        "sub-folder per class), or put the class folders directly in it (the "
                        f"test set is then held out of them). Received: dataset='folder:{root}'")
    return "single"


def _not_dir(path):
    return " (it is a file)" if path.exists() else ""


def scan(root, class_names=None):
    """The image files under `root`, one sub-folder per class.

    Args:
        root: The folder.
        class_names: Tuple of the classes to label by (a test folder uses the training
            folder's), or `None` to take `root`'s sorted sub-folder names.

    Returns:
        `(class_names, paths, labels, skipped)`: the class names; the image paths (a NumPy
        array of strings, sorted by class, then path); their int32 labels; the paths of
        the files skipped (not named as images, or not in a class folder).

    Raises:
        DataError: no class folders, a class folder without images, or a class that
            `class_names` lacks.
    """
    root = Path(root)
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    folders = [p.name for p in entries if p.is_dir()]
    skipped = [str(p) for p in entries if not p.is_dir()]
    if not folders:
        what = f"{len(skipped)} files but no" if skipped else "no files and no"
        raise DataError(f"Image folder {str(root)!r} has {what} class sub-folders: put each "
                        f"class's images in {root}/<class name>/ ({_KINDS} files).")
    if class_names is None:
        class_names = tuple(folders)
    unknown = sorted(set(folders) - set(class_names))
    if unknown:
        raise DataError(f"{str(root)!r} has class folders the training images lack: "
                        f"{unknown[:5]}: give train/ and test/ the same classes. Received: "
                        f"train classes={list(class_names)[:10]}")
    paths, labels = [], []
    for name in folders:
        found = []
        for where, dirs, files in os.walk(root / name):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in sorted(files):
                path = os.path.join(where, file)
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    found.append(path)
                elif not file.startswith("."):
                    skipped.append(path)
        if not found:
            raise DataError(f"Class folder {str(root / name)!r} has no images ({_KINDS} "
                            "files): add some, or remove the folder if it is not a class.")
        paths += found
        labels += [class_names.index(name)] * len(found)
    return tuple(class_names), np.array(paths), np.array(labels, np.int32), skipped


def decode_file(path):
    """One image file as a uint8 tensor `(height, width, channels)`; a TensorFlow function."""
    import tensorflow as tf

    return tf.io.decode_image(tf.io.read_file(path), channels=0, dtype=tf.uint8,
                              expand_animations=False)


def first_shape(paths):
    """The shape of the first image in `paths` (to size a model input that has none)."""
    try:
        return tuple(decode_file(paths[0]).shape)
    except Exception:  # any decoding error: name the bad files
        raise _unreadable(paths) from None


def read(paths, to, scale):
    """The images at `paths` converted to `to` (`images.Target`) and scaled, in order.

    Decoding and conversion run in parallel (`tf.data`, `AUTOTUNE`) straight into one
    preallocated float32 array.

    Returns:
        `(images, shapes)`: the float32 images, and each file's own `(height, width,
        channels)` (an int array), for the report to say what was converted.

    Raises:
        DataError: a file does not decode (named, with the count of others that fail).
    """
    import tensorflow as tf

    def load(path):
        image = decode_file(path)
        return images.convert(image, to, scale), tf.shape(image)

    out = np.empty((len(paths), *to.shape), np.float32)
    shapes = np.empty((len(paths), 3), np.int64)
    ds = (tf.data.Dataset.from_tensor_slices(paths)
          .map(load, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(256).prefetch(tf.data.AUTOTUNE))
    start = 0
    try:
        for batch, batch_shapes in ds:
            out[start:start + len(batch)] = batch.numpy()
            shapes[start:start + len(batch)] = batch_shapes.numpy()
            start += len(batch)
    except tf.errors.OpError:
        raise _unreadable(paths) from None
    return out, shapes


def stream(paths, labels, to, scale, batch_size, shuffle=True, seed=0, cache=None):
    """A `tf.data.Dataset` of `(images, labels)` batches decoded from files as it runs.

    Args:
        paths, labels: The files and their labels.
        to: The `images.Target`.
        scale: The scaling (`"unit"`, `"symmetric"`, `"none"`).
        batch_size: Integer.
        shuffle: Boolean, reshuffle each epoch (seeded), defaults to `True`.
        seed: Integer, defaults to `0`.
        cache: Boolean, keep the decoded images in memory after the first epoch; `None`
            (the default) caches when they take at most half the memory available now.

    Returns:
        The dataset: files read and decoded in parallel, cached, shuffled, batched and
        prefetched.
    """
    import tensorflow as tf

    if cache is None:
        cache = len(paths) * 4 * int(np.prod(to.shape)) <= _available_memory() // 2
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    if shuffle and not cache:  # shuffle names, cheaply, before decoding
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda path, label: (images.convert(decode_file(path), to, scale), label),
                num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
        if shuffle:
            ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _available_memory():
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def _unreadable(paths):
    """The error naming the files of `paths` that do not decode (found one by one)."""
    import tensorflow as tf

    bad = []
    for path in paths:
        try:
            decode_file(path)
        except (tf.errors.OpError, ValueError):
            bad.append(str(path))
    if not bad:  # not a decoding error after all
        return DataError(f"Cannot read the images under {os.path.dirname(paths[0])!r}: "
                         "check that the files can be read.")
    others = f" (and {len(bad) - 1} other files)" if len(bad) > 1 else ""
    return DataError(f"{bad[0]!r} is not a {_KINDS} image{others}: the run is refused rather "
                     f"than train on part of the folder; remove or replace "
                     f"{'them' if others else 'it'}.")


def write(path, splits, class_names, limit=None):
    """Writes images out as an image folder: `path/<split>/<class>/<index>.png`.

    The folder is written beside `path` under a temporary name and renamed into place, so
    it is complete or absent.

    Args:
        path: The folder to make; it must not exist.
        splits: Dict of split name -> `(images uint8 (N, H, W[, C]), labels)`.
        class_names: The class of label `i` at index `i`. Folders are named after them;
            when sorting the names would change their order (`"10"` before `"2"`), each
            name is prefixed with its zero-padded label, so the folder reads back with the
            same labels.
        limit: Integer or `None`: write only the first `limit` images of each split.

    Returns:
        Dict of split name -> number of images written.

    Raises:
        DataError: `path` exists, or its parent cannot be written.
    """
    import tensorflow as tf

    path = check_new(path)
    folders = folder_names(class_names)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as e:
        raise DataError(f"Cannot write {str(path)!r} ({e.strerror or e}): choose a folder you "
                        "can write to.") from e
    counts = {}
    try:
        for split, (pixels, labels) in splits.items():
            pixels, labels = pixels[:limit], labels[:limit]
            if pixels.ndim == 3:
                pixels = pixels[..., None]
            for name in folders:
                (tmp / split / name).mkdir(parents=True)
            width = len(str(max(len(labels) - 1, 0)))
            encoded = tf.data.Dataset.from_tensor_slices(pixels).map(
                tf.io.encode_png, num_parallel_calls=tf.data.AUTOTUNE)
            for i, (png, label) in enumerate(zip(encoded, labels, strict=True)):
                (tmp / split / folders[label] / f"{i:0{width}d}.png").write_bytes(png.numpy())
            counts[split] = len(labels)
        os.chmod(tmp, 0o777 & ~_umask())
        os.rename(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return counts


def check_new(path):
    """`path` as a `Path`, if nothing is there yet.

    Raises:
        DataError: `path` exists.
    """
    path = Path(path)
    if path.exists():
        raise DataError(f"{str(path)!r} exists: choose a new folder (export-folder writes a "
                        "complete folder or nothing).")
    return path


def folder_names(class_names):
    """Folder names that sort in label order: the class names, or `<label>_<name>`.

    Example:

    >>> from tfprune.data.folder import folder_names
    >>> folder_names(["0", "1", "2"]), folder_names(["dog", "cat"])
    (['0', '1', '2'], ['0_dog', '1_cat'])
    """
    names = [str(name).replace(os.sep, "_") or "_" for name in class_names]
    if names == sorted(names) and len(set(names)) == len(names) \
            and not any(n.startswith(".") for n in names):
        return names
    width = len(str(len(names) - 1))
    return [f"{i:0{width}d}_{name}" for i, name in enumerate(names)]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
