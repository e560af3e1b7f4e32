"""Atomic file writes: a file is either complete or not there, never half-written."""

import contextlib
import os
import tempfile
from pathlib import Path

from tfprune.errors import TfpruneError


def check_writable(folder):
    """Raises `TfpruneError` unless `folder` exists (or can be made) and can be written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise TfpruneError(
            f"Cannot write to folder {str(folder)!r} ({e.strerror or e}): choose a folder you "
            "can write to."
        ) from e


@contextlib.contextmanager
def atomic_path(path, suffix=None, make_parents=False):
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds.

    Args:
        path: The final file path.
        suffix: String, the temporary file's suffix (some writers, like `model.save`, check
            it), defaults to `path`'s own suffix.
        make_parents: Boolean, create missing parent folders, defaults to `False`.

    Raises:
        TfpruneError: the parent folder is missing (and not to be made) or not writable.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        if not make_parents:
            raise TfpruneError(
                f"Folder {str(parent)!r} does not exist: create it or choose another path for "
                f"{path.name!r}."
            )
        check_writable(parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix,
                                   dir=parent)
    except OSError as e:
        raise TfpruneError(
            f"Cannot write {str(path)!r} ({e.strerror or e}): choose a folder you can write to."
        ) from e
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal modes
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path, data, **kwargs):
    """Writes `data` to `path` atomically."""
    with atomic_path(path, **kwargs) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)


def write_text(path, text, **kwargs):
    """Writes `text` (UTF-8) to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"), **kwargs)
