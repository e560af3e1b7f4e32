import os

import pytest

from tfprune.atomic import atomic_path, check_writable, write_text
from tfprune.errors import TfpruneError


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("stopped midway")
    assert os.listdir(tmp_path) == []


def test_write_replaces_whole_file(tmp_path):
    target = write_text(tmp_path / "a.txt", "one")
    write_text(target, "two")
    assert target.read_text() == "two" and os.listdir(tmp_path) == ["a.txt"]


def test_missing_or_unwritable_folder_is_named(tmp_path):
    with pytest.raises(TfpruneError, match="does not exist"):
        write_text(tmp_path / "nope" / "a.txt", "x")
    assert write_text(tmp_path / "made" / "a.txt", "x", make_parents=True).exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TfpruneError, match="Cannot write to folder"):
        check_writable(blocker / "sub")


def test_written_files_get_normal_permissions(tmp_path):
    mode = write_text(tmp_path / "a.txt", "x").stat().st_mode & 0o777
    assert mode == 0o666 & ~_current_umask()


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
