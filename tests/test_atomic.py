import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfprune import atomic
from tfprune.atomic import atomic_path, check_writable, write_text
from tfprune.errors import TfpruneError

ROOT = Path(__file__).resolve().parent.parent


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


def test_a_full_disk_is_one_line_naming_the_file_and_the_free_space(tmp_path, monkeypatch):
    target = write_text(tmp_path / "model.keras", "previous version")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(target), "write_bytes", full)
    with pytest.raises(atomic.DiskFullError) as e:
        write_text(target, "new version")
    message = str(e.value)
    assert "\n" not in message and str(target) in message
    assert "No space left on device" in message and "free there" in message
    assert "--resume" in message
    monkeypatch.undo()
    assert target.read_text() == "previous version"  # the old file stays whole
    assert os.listdir(tmp_path) == ["model.keras"]  # and no temporary is left


def test_a_writer_that_says_it_in_its_own_words(tmp_path):
    """TensorFlow's savers raise their own errors whose text says the file was too large."""
    target = tmp_path / "model.tflite"
    with pytest.raises(atomic.DiskFullError) as e, atomic_path(target):
        try:
            raise OSError(errno.EFBIG, "File too large", "/tmp/tmpabc/variables.data")
        except OSError as cause:  # wrapped, as the converter's caller wraps it
            raise TfpruneError("TFLite conversion failed") from cause
    message = str(e.value)
    assert "File too large" in message and "file-size limit (ulimit -f)" in message
    assert "/tmp/tmpabc/variables.data" in message  # the file that failed, with its space
    assert not target.exists()
    assert not atomic.is_disk_full(TfpruneError("TFLite conversion failed"))


def test_a_real_file_size_limit(tmp_path):
    """RLIMIT_FSIZE in a child: the write gets EFBIG, the previous version survives."""
    target = write_text(tmp_path / "big.bin", "previous")
    code = ("import resource, sys; from tfprune import atomic; "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY)); "
            "atomic.write_bytes(sys.argv[1], bytes(5000))")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1
    assert "DiskFullError" in proc.stderr and "File too large" in proc.stderr
    assert "ulimit -f) 1.0 KB" in proc.stderr.splitlines()[-1]  # the limit, named
    assert target.read_text() == "previous" and os.listdir(tmp_path) == ["big.bin"]


def test_a_temporary_is_marked_partial_and_can_be_swept(tmp_path):
    with atomic_path(tmp_path / "m.keras") as tmp:
        assert tmp.name.startswith(".m.keras" + atomic.PARTIAL) and tmp.suffix == ".keras"
        tmp.write_text("x")
        (tmp_path / "left.txt").write_text("a user's file")
        (tmp_path / f".old.tflite{atomic.PARTIAL}abc.tflite").write_text("killed mid-write")
    assert atomic.remove_partials(tmp_path) == [f".old.tflite{atomic.PARTIAL}abc.tflite"]
    assert sorted(os.listdir(tmp_path)) == ["left.txt", "m.keras"]
