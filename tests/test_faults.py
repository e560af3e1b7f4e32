"""Faults on real runs, in subprocesses: divergence, two runs in one folder, a full disk,
kills at named points, and hostile files.

Each test runs `python -m tfprune` on the tiny run of `benchmarks/faults.py` (a few hundred
MNIST images), or its pool of fuzzing workers, with a few cases; `python
benchmarks/faults.py` runs the same functions with many.
"""

import fcntl
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import faults as harness  # noqa: E402

pytestmark = pytest.mark.slow  # see pyproject.toml's markers

FUZZ_CASES = 12  # per reader, here; the benchmark runs 1,000
KILLS = ("kill@train:prune#3",               # inside training
         "xfsz=200000@write:retrained.keras",  # inside a model save: dies mid-write
         "kill@written:compressed.tflite",   # inside the export: written, not yet renamed
         "kill@record:export")               # between a stage's files and its record


@pytest.fixture(scope="session")
def reference(tmp_path_factory, mnist_dir):
    """An uninterrupted tiny run, made once per session (the xdist workers share it): its
    folder, which tests copy and never change, and its figures."""
    session = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        session = session.parent  # the session's folder, above each worker's
    folder = session / "faults-reference"
    with open(session / "faults-reference.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker runs it, the other waits
        if not (folder / "report.json").is_file():
            run = harness.tfprune(folder)
            assert run.code == 3, run  # it finishes; its barely trained model earns nothing
    return folder, harness.figures(folder)


def test_a_diverged_run_exits_1_and_exports_nothing(mnist_dir, tmp_path):
    folder = tmp_path / "run"
    run = harness.tfprune(folder, "--prune_learning_rate=1e9")
    assert run.code == 1 and not run.traceback, run.err[-2000:]
    assert len(run.errors) == 1, run.errors
    line = run.errors[0]
    assert "Stage 'prune' diverged" in line and "at learning rate 1e+09" in line
    assert "lower --prune_learning_rate" in line and "--resume" in line
    assert not list(folder.glob("*.tflite")) and not (folder / "report.json").exists()
    assert harness.recorded(folder) == {"baseline"}  # the finished stage is kept
    assert harness.audit(folder) == []


def test_a_second_run_into_a_held_folder_fails_at_once_naming_the_pid(tmp_path):
    row = harness.lock_case(tmp_path)
    assert row["second_code"] == 1, row
    assert "is in use by another tfprune run" in row["second_error"] and row["pid_named"]
    assert row["resume_after_kill_code"] == 0  # a killed holder's lock blocks nobody


def test_a_full_disk_loses_nothing_and_resume_finishes(reference, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(reference[0], folder)
    before = harness.snapshot(folder)
    # The export runs again (another mode) with a file-size limit: EFBIG at its first file.
    failed = harness.tfprune(folder, "--resume", "--quantize=float16", fsize=100_000)
    assert failed.code == 1 and not failed.traceback, failed.err[-2000:]
    assert len(failed.errors) == 1, failed.errors
    line = failed.errors[0]
    assert "baseline.tflite" in line and "File too large" in line and "free there" in line
    assert harness.snapshot(folder) == before  # every file and stages.json as they were
    assert not list(folder.glob(".*.partial-*"))
    done = harness.tfprune(folder, "--resume", "--quantize=float16")
    assert done.code == 3, done
    assert {"baseline", "prune", "merge", "retrain", "shrink"} <= done.skipped
    report = json.loads((folder / "report.json").read_text())
    assert report["files"]["compressed.tflite"]["quantize"] == "float16"


def test_kills_at_any_point_resume_to_the_same_figures(reference, tmp_path):
    folder = tmp_path / "run"
    for fault in KILLS:
        kept = harness.recorded(folder)
        run = harness.tfprune(folder, "--resume", fault=fault)
        assert run.code in (-signal.SIGKILL, -signal.SIGXFSZ), (fault, run)
        assert kept <= run.skipped, fault  # nothing it had finished was run again
        assert harness.audit(folder) == [], fault  # no partial file is taken as finished
        if fault.startswith("xfsz"):  # it died inside model.save, a partial file left
            assert list(folder.glob(".retrained.keras.partial-*")), fault
    assert "export" not in harness.recorded(folder)  # killed before its record
    kept = harness.recorded(folder)
    final = harness.tfprune(folder, "--resume")
    assert final.code == 3 and kept <= final.skipped, final
    assert harness.figures(folder) == reference[1]
    assert not list(folder.glob(".*.partial-*"))


def test_hostile_files_never_crash_a_reader(tmp_path):
    seed_files = harness.seeds(tmp_path)
    pool = harness.Pool(tmp_path, jobs=1, timeout=120)
    try:
        for reader in harness.READERS:
            counts = harness.fuzz(tmp_path, reader, FUZZ_CASES, pool, seed_files)
            assert counts["ok"] + counts["error"] == FUZZ_CASES, (reader, counts)
            assert counts["inputs_changed"] == 0, reader
        assert pool.written_outside() == []  # nor did the Lambda layer ever run
    finally:
        pool.close()


def _rewritten(source, change, target):
    """`source` (.tflite) with `change(model)` applied to its flatbuffer objects."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(source.read_bytes()), 0)
    change(model)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    target.write_bytes(bytes(builder.Output()))
    return target


def test_what_fuzzing_found_is_refused_before_the_interpreter_sees_it(tmp_path):
    """A sparse index past its dimension made DENSIFY write out of bounds (a crash of
    tfprune-bench, sometimes only at exit); a tensor name that is not UTF-8 made the
    interpreter's Python API raise UnicodeDecodeError."""
    import numpy as np

    from tfprune import bench, export
    from tfprune.errors import TfpruneError
    from tfprune.tflite.interpreter import load_interpreter

    sparse = harness.seeds(tmp_path)["tflite"][1]

    def bad_index(model):
        tensor = next(t for t in model.subgraphs[0].tensors if t.sparsity is not None)
        indices = tensor.sparsity.dimMetadata[-1].arrayIndices
        indices.values = np.full_like(indices.values, 255)

    def bad_name(model):
        model.subgraphs[0].tensors[0].name = b"\xff\xfe"

    readers = (load_interpreter,
               lambda path: export.evaluate(path, np.zeros((2, 8, 8, 1), "float32"),
                                            np.zeros(2)),
               lambda path: bench.compare(path, path, runs=1, warmup=0))
    for change, words in ((bad_index, "outside its dimension"), (bad_name, "not UTF-8")):
        path = _rewritten(sparse, change, tmp_path / f"{change.__name__}.tflite")
        for read in readers:
            with pytest.raises(TfpruneError, match=words):
                read(path)
    load_interpreter(sparse)  # the file as exported loads
