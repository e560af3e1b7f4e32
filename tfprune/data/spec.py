"""The `--dataset` setting: which kind of dataset, and where it is.

    mnist                  MNIST from its IDX files (or TFDS)
    tfds:NAME[/CONFIG]     a TensorFlow Datasets image-classification dataset
    folder:PATH            images in one sub-folder per class
    npz:PATH               a NumPy archive with x_train, y_train, x_test, y_test

Parsing reads nothing: the command line checks a setting before TensorFlow loads.
"""

import dataclasses
import os
import re

from tfprune.errors import DataError

KINDS = ("mnist", "tfds", "folder", "npz")
FORMS = "'mnist', 'tfds:NAME[/CONFIG]', 'folder:PATH' or 'npz:PATH'"
# TFDS names: snake_case name, optional /config and :version (`mnist`, `emnist/letters:3.*`).
_TFDS_NAME = re.compile(r"^[a-z0-9_]+(/[A-Za-z0-9_.\-]+)?(:[0-9*.]+)?$")


@dataclasses.dataclass(frozen=True)
class Spec:
    """A parsed `--dataset` value.

    Attributes:
        kind: One of `KINDS`.
        where: The TFDS name (with its config) or the path; `""` for `mnist`.
    """

    kind: str
    where: str = ""

    def __str__(self):
        return f"{self.kind}:{self.where}" if self.where else self.kind


def parse(spec):
    """Parses a `--dataset` value, loading nothing.

    Args:
        spec: String: `"mnist"`, `"tfds:NAME[/CONFIG]"`, `"folder:PATH"` or `"npz:PATH"`
            (or a `Spec`).

    Returns:
        A `Spec`.

    Raises:
        DataError: a form not listed above, or an empty name or path.

    Example:

    >>> from tfprune.data import parse_spec
    >>> parse_spec("tfds:emnist/letters")
    Spec(kind='tfds', where='emnist/letters')
    >>> parse_spec("cifar10")
    Traceback (most recent call last):
    ...
    tfprune.errors.DataError: Unknown dataset. ... (a TFDS dataset: 'tfds:cifar10')...
    """
    if isinstance(spec, Spec):
        return spec
    text = str(spec).strip()
    if text == "mnist":
        return Spec("mnist")
    kind, sep, where = text.partition(":")
    if not sep or kind not in KINDS[1:]:
        raise DataError(f"Unknown dataset. Expected {FORMS}{_hint(text)}. "
                        f"Received: dataset={spec!r}")
    where = where.strip()
    if kind == "tfds":
        if not _TFDS_NAME.match(where):
            raise DataError("Expected a TFDS name like 'tfds:cifar10' or 'tfds:emnist/letters' "
                            f"(lower case, as `tfds build` takes it). Received: dataset={spec!r}")
        return Spec(kind, where)
    if not where:
        raise DataError(f"Expected a path after '{kind}:'. Received: dataset={spec!r}")
    return Spec(kind, os.path.expanduser(where))


def _hint(text):
    """What the user probably meant by a value without a known prefix."""
    if text.endswith(".npz"):
        return f" (an archive: 'npz:{text}')"
    if os.path.isdir(os.path.expanduser(text)):
        return f" (a folder of images: 'folder:{text}')"
    if _TFDS_NAME.match(text):
        return f" (a TFDS dataset: 'tfds:{text}')"
    return ""


def fingerprint(spec):
    """A short hash of a dataset's files, so that `--resume` notices they changed.

    A folder hashes every file's path, size and modification time (no reading); an
    archive, its bytes. MNIST's files are checked by their SHA-256 when read and TFDS
    datasets are versioned, so both give `None`, as does a path that does not exist (the
    run's checks report it).
    """
    import hashlib

    spec = parse(spec)
    digest = hashlib.sha256()
    if spec.kind == "npz" and os.path.isfile(spec.where):
        with open(spec.where, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    elif spec.kind == "folder" and os.path.isdir(spec.where):
        for where, dirs, files in os.walk(spec.where):
            dirs.sort()
            for name in sorted(files):
                stat = os.stat(os.path.join(where, name))
                digest.update(f"{os.path.relpath(os.path.join(where, name), spec.where)}\0"
                              f"{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    else:
        return None
    return digest.hexdigest()[:16]
