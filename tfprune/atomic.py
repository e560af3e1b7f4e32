"""Atomic file writes: a file is either complete or not there, never half-written.

A write goes to a temporary file beside the target (`.<name>.partial-XXXXXXXX<suffix>`),
is flushed to disk, and only then renamed onto the target; if anything fails on the way,
the temporary file goes and the target keeps its previous version. A write that fails
because the disk is full (`ENOSPC`, `EDQUOT`) or a file-size limit is hit (`EFBIG`) — even
inside a writer that reports it in its own words, like `model.save` or the TFLite converter
— raises `DiskFullError`: one line naming the file and the free space.
"""

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

from tfprune import faults
from tfprune.errors import TfpruneError

PARTIAL = ".partial-"  # in every temporary file's name: what `remove_partials` removes
_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_FULL_WORDS = ("No space left on device", "File too large", "Disk quota exceeded")


class DiskFullError(TfpruneError):
    """A write failed for lack of room: a full disk, a quota, or a file-size limit."""


def check_writable(folder):
    """Raises `TfpruneError` unless `folder` exists (or can be made) and can be written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".check{PARTIAL}"):
            pass
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(folder, e) from e
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
        DiskFullError: the disk is full or a file-size limit was hit while writing; the
            previous version of `path`, if any, is left as it was.

    Example:

    >>> from tfprune import atomic
    >>> with atomic.atomic_path("numbers.txt") as tmp:
    ...     _ = tmp.write_text("1 2 3")
    >>> open("numbers.txt").read()
    '1 2 3'
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
    faults.point(f"write:{path.name}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{PARTIAL}", suffix=suffix or path.suffix,
                                   dir=parent)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(path, e) from e
        raise TfpruneError(
            f"Cannot write {str(path)!r} ({e.strerror or e}): choose a folder you can write to."
        ) from e
    os.close(fd)
    try:
        yield Path(tmp)
        _sync(tmp)  # on disk before the name points at it
        faults.point(f"written:{path.name}")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal modes
        os.replace(tmp, path)
        _sync_folder(parent)
    except Exception as e:
        if is_disk_full(e) and not isinstance(e, DiskFullError):
            raise disk_full_error(path, e) from e
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _sync(name):
    if os.path.isfile(name):
        fd = os.open(name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sync_folder(folder):
    with contextlib.suppress(OSError):  # not every file system syncs a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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


def remove_partials(folder):
    """Removes the temporary files that writes killed midway left in `folder`.

    Call it only while no other process writes there (the pipeline holds the folder's
    lock). Returns the names removed.
    """
    removed = []
    for entry in Path(folder).glob(f".*{PARTIAL}*"):
        with contextlib.suppress(OSError):
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry.name)
    return sorted(removed)


def is_disk_full(error):
    """Whether `error`, or an error it was raised from, says the disk or a size limit is full.

    Example:

    >>> import errno
    >>> from tfprune import atomic
    >>> atomic.is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    True
    >>> atomic.is_disk_full(RuntimeError("TFLite conversion failed"))
    False
    """
    return _full_cause(error) is not None


def _full_cause(error):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
            return error
        if any(words in str(error) for words in _FULL_WORDS):  # TensorFlow's own I/O errors
            return error
        error = error.__cause__ or error.__context__
    return None


def disk_full_error(path, error):
    """The one-line `DiskFullError` for a write of `path` that failed with `error`.

    It names the file, the reason, the free space on the file's file system and, when the
    failing write was another file (a converter's temporary SavedModel), that file and the
    free space where it is; with `EFBIG`, the process's file-size limit.
    """
    cause = _full_cause(error) or error
    reason = (os.strerror(cause.errno) if isinstance(cause, OSError) and cause.errno
              else next(words for words in _FULL_WORDS if words in str(cause)))
    where = [f"{_free(Path(path).parent)} free there"]
    other = _other_file(cause, path)
    if other is not None:
        where.append(f"while writing {str(other)!r}, {_free(other.parent)} free there")
    if reason == os.strerror(errno.EFBIG) or "File too large" in reason:
        where.append(f"file-size limit (ulimit -f) {_size_limit()}")
    return DiskFullError(
        f"Cannot write {str(path)!r}: {reason} ({'; '.join(where)}). Free some space (or raise "
        "the limit) and write it again; a tfprune run keeps its finished stages: rerun it "
        f"with --resume. Received: path={str(path)!r}")


def _other_file(cause, path):
    """The file the failing write was for, when it is not `path` itself, or `None`."""
    name = getattr(cause, "filename", None)
    if not name:
        found = re.search(r"(/[^\s;:'\"]+)", str(cause))
        name = found.group(1) if found else None
    if not name:
        return None
    other = Path(name)
    if other.name.startswith(f".{Path(path).name}{PARTIAL}") or other == Path(path):
        return None
    return other


def _free(folder):
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return _bytes(shutil.disk_usage(folder).free)
    except OSError:
        return "unknown space"


def _size_limit():
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return "unlimited" if limit == resource.RLIM_INFINITY else _bytes(limit)


def _bytes(count):
    if count < 1000:
        return f"{count:,} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        count /= 1000
        if count < 1000 or unit == "TB":
            return f"{count:,.1f} {unit}"
