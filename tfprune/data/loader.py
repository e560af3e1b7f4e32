"""`load` (NumPy splits, what the pipeline uses) and `datasets` (`tf.data`, for your own fit).

Both read a dataset spec, make its images fit the model (size, channels, scaling: see
`tfprune.data.images`), and split it the same way: the test split as the dataset gives it
(a one-folder dataset holds it out), the first `train_limit` / `test_limit` images, then a
seeded `validation_split` carved from the training images.
"""

import dataclasses

import numpy as np

from tfprune.data import folder, images, sources
from tfprune.data.spec import parse
from tfprune.data.splits import Splits, carve_validation, held_out
from tfprune.errors import DataError


def load(spec, model=None, *, input_shape=None, rescale="auto", data_dir=None,
         train_split="train", test_split="test", validation_split=0.1, seed=0,
         train_limit=None, test_limit=None):
    """A dataset as `Splits` of `(x, y)` NumPy arrays, made to fit `model`.

    Args:
        spec: String, `"mnist"`, `"tfds:NAME[/CONFIG]"`, `"folder:PATH"` or `"npz:PATH"`.
        model: The Keras model the images are for: its input shape sets their size and
            channels, and `rescale="auto"` looks for its own scaling layer. Defaults to
            `None` (images as the dataset has them, scaled to [0, 1]).
        input_shape: The input shape without the batch axis, when there is no `model`.
        rescale: `"auto"`, `"unit"`, `"symmetric"` or `"none"` (see `images`).
        data_dir: The MNIST IDX folder, or the TFDS data folder.
        train_split, test_split: TFDS splits (`"train[:90%]"`), for `tfds:` only.
        validation_split: Float in [0, 0.5]: the share of the training images held out
            (seeded) as the validation split; for a one-folder dataset, also the share
            held out first as the test set.
        seed: Integer, seeds the splits (and a folder's shuffle).
        train_limit, test_limit: Integers or `None`: keep the first images of a split.

    Returns:
        `Splits`: float32 images shaped as the model's input, int32 labels, class names,
        where each split came from, and the scaling applied.

    Raises:
        DataError: a dataset that is missing, malformed, empty, or does not fit the model;
            one line that names the fix.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> np.savez("digits.npz", x_train=rng.integers(0, 256, (100, 8, 8), np.uint8),
    ...          y_train=rng.integers(0, 3, 100), class_names=["a", "b", "c"],
    ...          x_test=rng.integers(0, 256, (20, 8, 8), np.uint8), y_test=np.arange(20) % 3)
    >>> splits = tfprune.data.load("npz:digits.npz", input_shape=(16, 16, 3),
    ...                            validation_split=0.2)
    >>> splits.train[0].shape, splits.validation[0].shape, splits.test[0].shape
    ((80, 16, 16, 3), (20, 16, 16, 3), (20, 16, 16, 3))
    >>> splits.class_names, splits.scaling
    (('a', 'b', 'c'), 'unit: pixel values / 255, in [0, 1]')
    >>> splits.notes[0]
    'all 120 images resized to 16x16 (bilinear)'
    """
    prepared = _prepare(spec, model, input_shape=input_shape, rescale=rescale,
                        data_dir=data_dir, train_split=train_split, test_split=test_split,
                        validation_split=validation_split, seed=seed,
                        train_limit=train_limit, test_limit=test_limit)
    raw, to, scale = prepared.raw, prepared.to, prepared.scale
    x, shapes, counts = _arrays(raw.train, to, scale)
    xt, test_shapes, test_counts = _arrays(raw.test, to, scale)
    train, validation = carve_validation(x, raw.train.labels, validation_split, seed)
    notes = raw.notes + tuple(images.changes(np.concatenate([shapes, test_shapes]), to,
                                             np.concatenate([counts, test_counts])))
    return dataclasses.replace(prepared.splits, train=train, validation=validation,
                               test=(xt, raw.test.labels), notes=notes)


def datasets(spec, model=None, *, batch_size=32, shuffle=True, cache=None, input_shape=None,
             rescale="auto", data_dir=None, train_split="train", test_split="test",
             validation_split=0.1, seed=0, train_limit=None, test_limit=None):
    """A dataset as `Splits` of `tf.data.Dataset`s of `(images, labels)` batches, for `fit`.

    The splits are those of `load` (same arguments, same seed, same images). An image
    folder streams from its files: decoded in parallel (`AUTOTUNE`), cached in memory
    after the first epoch when the decoded images fit in half the memory available,
    shuffled each epoch (training split), batched and prefetched. Other kinds are read into
    memory first (`load`) and batched from there.

    Args:
        spec, model: As for `load`.
        batch_size: Integer, defaults to `32`.
        shuffle: Boolean, reshuffle the training split each epoch, defaults to `True`.
        cache: Boolean or `None` (decide by size, the default): cache decoded folder images.
        **kwargs: The other arguments of `load`.

    Returns:
        `Splits` whose `train`, `validation` and `test` are `tf.data.Dataset`s.

    Raises:
        DataError: as `load`.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> np.savez("digits.npz", x_train=rng.integers(0, 256, (64, 8, 8), np.uint8),
    ...          y_train=rng.integers(0, 3, 64), x_test=rng.integers(0, 256, (8, 8, 8), np.uint8),
    ...          y_test=np.arange(8) % 3)
    >>> splits = tfprune.data.datasets("npz:digits.npz", batch_size=16, validation_split=0)
    >>> images, labels = next(iter(splits.train))
    >>> images.shape, labels.dtype.name, splits.num_classes
    (TensorShape([16, 8, 8, 1]), 'int32', 3)
    """
    import tensorflow as tf

    settings = dict(input_shape=input_shape, rescale=rescale, data_dir=data_dir,
                    train_split=train_split, test_split=test_split,
                    validation_split=validation_split, seed=seed, train_limit=train_limit,
                    test_limit=test_limit)
    if parse(spec).kind != "folder":
        arrays = load(spec, model, **settings)

        def batches(split, mix):
            ds = tf.data.Dataset.from_tensor_slices(split)
            if mix:
                ds = ds.shuffle(len(split[1]), seed=seed, reshuffle_each_iteration=True)
            return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

        return dataclasses.replace(arrays, train=batches(arrays.train, shuffle),
                                   validation=batches(arrays.validation, False),
                                   test=batches(arrays.test, False))
    prepared = _prepare(spec, model, **settings)
    raw, to, scale = prepared.raw, prepared.to, prepared.scale
    held = held_out(len(raw.train), validation_split, seed)

    def stream(part, mix):
        return folder.stream(part.paths, part.labels, to, scale, batch_size, shuffle=mix,
                             seed=seed, cache=cache)

    return dataclasses.replace(prepared.splits,
                               train=stream(raw.train.take(~held, ""), shuffle),
                               validation=stream(raw.train.take(held, ""), False),
                               test=stream(raw.test, False))


@dataclasses.dataclass
class _Prepared:
    raw: sources.Raw
    to: images.Target
    scale: str
    splits: Splits  # metadata only


def _prepare(spec, model, input_shape, rescale, data_dir, train_split, test_split,
             validation_split, seed, train_limit, test_limit):
    """Reads the dataset's parts and decides the target shape, scaling and metadata."""
    spec = parse(spec)
    check_splits(spec, train_split, test_split)
    if not 0 <= validation_split < 1:
        raise DataError(f"Expected validation_split in [0, 1). Received: "
                        f"validation_split={validation_split}")
    if model is not None:
        input_shape = model_input(model)
    fixed = input_shape is not None and len(input_shape) >= 2 and None not in input_shape[:2]
    raw = sources.read(spec, data_dir, train_split, test_split, validation_split, seed,
                       train_limit, test_limit, size=tuple(input_shape[:2]) if fixed else None)
    for name, part in (("training", raw.train), ("test", raw.test)):
        if not len(part):
            raise DataError(f"The {name} split of {spec} selects no images: widen it. "
                            f"Received: dataset={str(spec)!r}")
        low, high = int(part.labels.min()), int(part.labels.max())
        if low < 0 or high >= len(raw.class_names):
            raise DataError(f"The {name} labels of {spec} run from {low} to {high}, outside the "
                            f"{len(raw.class_names)} classes 0..{len(raw.class_names) - 1}: "
                            "labels must be class ids.")
    to = images.target(input_shape, _sample_shape(raw.train))
    float_images = raw.train.pixels is not None and raw.train.pixels.dtype != np.uint8
    scale, scaling = images.scaling(rescale, model, stored_as_float=float_images)
    train_source = raw.train.source
    validation = "none (validation_split=0)"
    if validation_split:
        train_source += ", less the validation split"
        validation = (f"{validation_split:.0%} of the training images ({raw.train.source}), "
                      f"held out at random (seed {seed})")
    splits = Splits((), (), (), class_names=raw.class_names, scaling=scaling, spec=str(spec),
                    sources={"train": train_source, "validation": validation,
                             "test": raw.test.source}, notes=raw.notes)
    return _Prepared(raw, to, scale, splits)


def check_splits(spec, train_split, test_split):
    """TFDS split settings apply to `tfds:` datasets only.

    Raises:
        DataError: a non-default split for another kind of dataset.
    """
    spec = parse(spec)
    if spec.kind != "tfds" and (train_split, test_split) != ("train", "test"):
        raise DataError(f"train_split and test_split apply to tfds: datasets only (use "
                        f"train_limit and test_limit, or a folder's train/ and test/). "
                        f"Received: dataset={str(spec)!r}, train_split={train_split!r}, "
                        f"test_split={test_split!r}")


def model_input(model):
    """A Keras model's input shape without the batch axis.

    Raises:
        DataError: the model has several inputs.
    """
    shape = model.input_shape
    if isinstance(shape, list):
        if len(shape) != 1:
            raise DataError(f"Expected a model with one input (the image). Received: model "
                            f"inputs={shape}")
        shape = shape[0]
    return tuple(shape[1:])


def _sample_shape(part):
    if part.pixels is not None:
        return part.pixels.shape[1:]
    return folder.first_shape(part.paths)


def _arrays(part, to, scale):
    """`(images, shapes, counts)`: a part converted, and how many images had each shape."""
    if part.pixels is not None:
        pixels = part.pixels
        shape = (*pixels.shape[1:3], pixels.shape[3] if pixels.ndim == 4 else 1)
        return images.from_arrays(pixels, to, scale), np.array([shape]), np.array([len(pixels)])
    x, shapes = folder.read(part.paths, to, scale)
    return (x, *np.unique(shapes.reshape(-1, 3), axis=0, return_counts=True))


def export_folder(spec, path, limit=None, data_dir=None, train_split="train",
                  test_split="test"):
    """Writes a dataset out as an image folder: `path/train/<class>/*.png`, `path/test/...`.

    PNG keeps the pixel values exactly, so `folder:path` reads back the same images (in
    another order). The folder appears complete or not at all.

    Args:
        spec: The dataset (`"mnist"`, `"tfds:NAME"`, `"npz:PATH"` with uint8 images).
        path: The folder to make; it must not exist.
        limit: Integer or `None`: the first `limit` images of each split.
        data_dir, train_split, test_split: As for `load`.

    Returns:
        Dict of split name -> number of images written.

    Raises:
        DataError: the dataset cannot be read, holds float images, or `path` exists.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> np.savez("tiny.npz", x_train=rng.integers(0, 256, (6, 8, 8), np.uint8),
    ...          y_train=np.arange(6) % 2, x_test=rng.integers(0, 256, (2, 8, 8), np.uint8),
    ...          y_test=np.arange(2))
    >>> tfprune.data.export_folder("npz:tiny.npz", "tiny")
    {'train': 6, 'test': 2}
    >>> import os
    >>> sorted(os.listdir("tiny/train/1"))
    ['1.png', '3.png', '5.png']
    """
    spec = parse(spec)
    if spec.kind == "folder":
        raise DataError(f"{spec} is an image folder already: copy it instead.")
    check_splits(spec, train_split, test_split)
    folder.check_new(path)  # before reading anything
    raw = sources.read(spec, data_dir, train_split, test_split, train_limit=limit,
                       test_limit=limit)
    if raw.train.pixels.dtype != np.uint8:
        raise DataError(f"{spec} holds float images: export-folder writes pixel values, so "
                        "store the images as uint8 (0-255).")
    return folder.write(path, {"train": (raw.train.pixels, raw.train.labels),
                               "test": (raw.test.pixels, raw.test.labels)}, raw.class_names)
