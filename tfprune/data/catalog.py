"""TensorFlow Datasets (`tfds:NAME[/CONFIG]`): any image-classification dataset of the catalog.

A dataset is read from its prepared copy under the TFDS data folder (`--data_dir`, else
`$TFDS_DATA_DIR`, else `~/tensorflow_datasets`). One that is not prepared is downloaded only
when TFDS's server answers within seconds; otherwise the load fails at once and says where
TFDS looked and how to prepare the dataset elsewhere (TFDS itself would retry for minutes).
Splits use TFDS's syntax: `train`, `train[:90%]`, `train+validation`, `test[:1000]`.
"""

import contextlib
import socket

import numpy as np

from tfprune.errors import DataError

_HOST = "storage.googleapis.com"


def builder(name, data_dir=None, host=_HOST, timeout=3.0):
    """The prepared TFDS builder of `name` (`"cifar10"`, `"emnist/letters"`).

    Raises:
        DataError: an unknown name or config, or a dataset that is not prepared and cannot
            be downloaded; the message says where TFDS looked and how to prepare it.
    """
    import tensorflow_datasets as tfds

    try:
        with quiet():
            found = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"Unknown TFDS dataset {name!r}: it is neither in the TFDS catalog nor "
                        f"prepared in {_root(data_dir)!r}: check the name "
                        "(`tfds.list_builders()`; configs as NAME/CONFIG). Received: "
                        f"dataset='tfds:{name}'") from None
    except Exception as e:  # an unknown config or version, an unreadable folder
        raise DataError(f"TFDS cannot open {name!r}: {_first_line(e)}. Received: "
                        f"dataset='tfds:{name}'") from None
    with quiet():
        if _prepared(found):
            return found
    how = (f"prepare it on a machine with network (`tfds build {name} --data_dir=DIR`, or "
           f"tfds.builder({name!r}, data_dir=DIR).download_and_prepare()), copy DIR here and "
           "pass --data_dir=DIR")
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        raise DataError(f"TFDS dataset {name!r} is not prepared in {str(found.data_dir)!r} and "
                        f"TFDS's server cannot be reached to download it: {how}. Received: "
                        f"dataset='tfds:{name}'") from None
    try:
        found.download_and_prepare()
    except Exception as e:  # manual downloads, a dropped connection
        raise DataError(f"TFDS could not prepare {name!r} in {str(found.data_dir)!r} "
                        f"({_first_line(e)}): {how}.") from None
    return found


@contextlib.contextmanager
def quiet():
    """Silences TFDS's absl log lines below errors (a missing dataset is our one line)."""
    from absl import logging

    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _root(data_dir):
    if data_dir:
        return str(data_dir)
    import tensorflow_datasets as tfds

    return str(tfds.core.constants.DATA_DIR)


def _prepared(found):
    try:
        return found.is_prepared()
    except Exception:  # an unreadable folder counts as "not there"
        return False


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def image_and_label(found):
    """The names of the dataset's image and label features, and its class names.

    Returns:
        `(image_key, label_key, class_names)`.

    Raises:
        DataError: the dataset has not exactly one `Image` and one `ClassLabel` feature (and
            no supervised keys naming them).
    """
    import tensorflow_datasets as tfds

    features = {key: found.info.features[key] for key in found.info.features.keys()}
    keys = found.info.supervised_keys

    def kind(key, cls):
        return isinstance(features.get(key), cls)

    Image, ClassLabel = tfds.features.Image, tfds.features.ClassLabel
    if (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)
            and kind(keys[0], Image) and kind(keys[1], ClassLabel)):
        image_key, label_key = keys
    else:
        pictures = [k for k in features if kind(k, Image)]
        labels = [k for k in features if kind(k, ClassLabel)]
        if len(pictures) != 1 or len(labels) != 1:
            raise DataError(f"TFDS dataset {found.name!r} is not an image-classification "
                            f"dataset: tfprune needs one Image and one ClassLabel feature. "
                            f"Received: features={list(features)}")
        image_key, label_key = pictures[0], labels[0]
    return image_key, label_key, tuple(features[label_key].names)


def read(found, split, limit=None, size=None):
    """One split of a prepared dataset as pixel arrays.

    Args:
        found: The builder (`builder(...)`).
        split: A TFDS split (`"train[:90%]"`).
        limit: Integer or `None`: read only the first `limit` examples.
        size: `(height, width)` to resize to when the images vary in size (else the first
            image's size); unused when they all have one size.

    Returns:
        `(images uint8 (N, H, W, C), labels int32 (N,), class_names, notes)`.

    Raises:
        DataError: an unknown split, or one that selects no examples.
    """
    import tensorflow as tf

    image_key, label_key, class_names = image_and_label(found)
    try:
        count = found.info.splits[split].num_examples
    except (ValueError, KeyError, AssertionError) as e:
        raise DataError(f"{_first_line(e)} Received: split={split!r}") from None
    if count == 0:
        raise DataError(f"Split {split!r} of {found.name!r} selects no images: widen it "
                        f"(e.g. 'train[:90%]'). Received: split={split!r}")
    ds = found.as_dataset(split=split, shuffle_files=False)
    ds = ds.map(lambda ex: (ex[image_key], ex[label_key]))
    if limit is not None:
        ds = ds.take(limit)
    shape = tuple(found.info.features[image_key].shape)
    notes = []
    if None in shape[:2]:
        size = size or tuple(next(iter(ds))[0].shape[:2])
        notes.append(f"images resized to {size[0]}x{size[1]} when read (bilinear; their "
                     "sizes vary)")
        ds = ds.map(lambda image, label: (_resized(image, size), label),
                    num_parallel_calls=tf.data.AUTOTUNE)
    batches = list(ds.batch(1024).prefetch(tf.data.AUTOTUNE).as_numpy_iterator())
    images = np.concatenate([b[0] for b in batches]).astype(np.uint8)
    labels = np.concatenate([b[1] for b in batches]).astype(np.int32)
    return images, labels, class_names, notes


def _resized(image, size):
    import tensorflow as tf

    resized = tf.image.resize(image, size, method="bilinear")
    return tf.cast(tf.round(tf.clip_by_value(resized, 0, 255)), tf.uint8)
