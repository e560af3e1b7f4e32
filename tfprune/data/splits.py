"""`Splits`: a dataset's train, validation and test splits, with what the report says of them."""

import dataclasses

import numpy as np

# What each split is used for: the report says which split each figure comes from.
USES = {
    "train": "training; int8 calibration (representative images)",
    "validation": "Keras accuracy of each stage's model, and every decision the run makes",
    "test": "accuracy of the .tflite files only (verify)",
}


@dataclasses.dataclass
class Splits:
    """A dataset's training, validation and test splits, and where they came from.

    `tfprune.data.load` gives `(x, y)` NumPy arrays (float32 images shaped as the model's
    input, int32 labels); `tfprune.data.datasets` gives a `tf.data.Dataset` per split.

    Attributes:
        train: The images the model trains on.
        validation: Held out of the training data for decisions (may be empty).
        test: Measured once, for the report.
        class_names: Tuple of strings, the class of label `i` at index `i`.
        sources: Dict of split name -> where its images came from (one line each).
        scaling: String, how pixel values were scaled (or that the model scales them).
        spec: String, the `--dataset` value.
        notes: Tuple of strings: conversions made (resized, grayscale) and files skipped.

    Example:

    >>> import numpy as np
    >>> from tfprune.data import Splits
    >>> empty = (np.zeros((0, 2, 2, 1), np.float32), np.zeros(0, np.int32))
    >>> splits = Splits(empty, empty, empty, class_names=("cat", "dog"))
    >>> splits.num_classes, splits.describe()["classes"]
    (2, ['cat', 'dog'])
    """

    train: tuple
    validation: tuple
    test: tuple
    class_names: tuple = ()
    sources: dict = dataclasses.field(default_factory=dict)
    scaling: str = ""
    spec: str = ""
    notes: tuple = ()

    @property
    def num_classes(self):
        """The number of classes (`None` when the class names are unknown)."""
        return len(self.class_names) or None

    def describe(self):
        """The splits as a JSON-ready dict for `report.json`: classes in label order, and per
        split its size, source and what the run uses it for."""
        return {"dataset": self.spec, "classes": list(self.class_names),
                "num_classes": self.num_classes, "scaling": self.scaling,
                "notes": list(self.notes),
                "splits": {name: {"images": _count(getattr(self, name)),
                                  "source": self.sources.get(name, ""), "used_for": use}
                           for name, use in USES.items()}}


def _count(split):
    """The number of images of an `(x, y)` split; `None` for a batched `tf.data.Dataset`."""
    return int(len(split[1])) if isinstance(split, tuple) else None


def held_out(count, fraction, seed=0):
    """A boolean mask over `count` examples: a seeded random `fraction` of them is `True`."""
    held = np.zeros(count, bool)
    held[np.random.default_rng(seed).permutation(count)[:int(round(count * fraction))]] = True
    return held


def carve_validation(x, y, fraction, seed=0):
    """Splits `(x, y)` into `(train, validation)`: a seeded random `fraction` held out.

    Args:
        x, y: Arrays of the same length.
        fraction: Float in [0, 1), the share of examples held out.
        seed: Integer, seeds the choice.

    Returns:
        `((x_train, y_train), (x_validation, y_validation))`, each in the original order.

    Example:

    >>> import numpy as np
    >>> from tfprune.data import carve_validation
    >>> (xt, yt), (xv, yv) = carve_validation(np.arange(10), np.arange(10), 0.2, seed=0)
    >>> len(xt), len(xv), sorted(set(xt) | set(xv)) == list(range(10))
    (8, 2, True)
    """
    held = held_out(len(y), fraction, seed)
    return (x[~held], y[~held]), (x[held], y[held])
