"""The runner: `execute`, which runs declared stages (`tfprune.pipeline.stage.Stage`) in
order, resuming from and writing their records (`tfprune.pipeline.records`).

A `Stage` says what it needs and what it makes; the runner does the rest the same way for
every stage. Before any stage runs, `execute` checks that each file a stage reads is
written by an earlier stage and calls every stage's `check` (cheap checks of the model and
data, so a bad input fails before training). Then, in order, each stage's hash covers its
config keys (and derived values) chained with the hash of the stage before; with
`config.resume`, a stage whose record in `stages.json` has that hash and whose outputs still
have their recorded SHA-256 is skipped and its recorded result reused, unless a stage before
it ran (its inputs may have changed). Otherwise it runs,
its outputs are checked against its declaration, and it is recorded (atomically) and logged
as `[tfprune] <stage> <seconds>s <figure>`. The runner knows no stage by name.

A stage that `trains` runs in the context's training scope (the run's `tf.distribute`
strategy, if any). Every stage gets a backup folder for its state while it runs
(`context.backup_dir`, `backup/<stage>-<hash>/`): a training stage keeps one file per epoch
there, so that a `--resume` after a kill goes on from its last epoch. The folder is kept when
the stage fails, ignored and replaced when its settings change or the run does not resume,
and removed once the stage is recorded.

A run holds an OS lock on its folder (`flock` on `.tfprune.lock`, released by the OS when
the process dies, so `--resume` after a kill is never blocked): a second run into the same
folder fails at once, naming the holder's pid. With the lock held, temporary files a killed
write left behind are removed. Each stage starts from a random state set by the seed and
its name, so a resumed run gives the figures an uninterrupted one does. After each stage
that makes a model, `tfprune.verdict.stage_checks` judges it (finite weights, a baseline
above chance, a `judged` stage within `max_stage_drop` of the baseline) and a failed check
stops the run with one line, unless `keep_going` (never for a model that is not finite).
"""

import contextlib
import errno
import fcntl
import json
import os
import random
import shutil
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from tfprune import atomic, faults, verdict
from tfprune.errors import TfpruneError
from tfprune.pipeline.records import (
    RECORD,
    RECORD_FORMAT,
    chain,
    file_sha256,
    intact,
    jsonable,
    read_records,
    stage_hash,
)
from tfprune.pipeline.stage import Stage

# Defined in `stage` and `records`, and still importable from here, as before.
__all__ = ["BACKUP", "LOCK", "RECORD", "RECORD_FORMAT", "FolderInUseError", "Stage",
           "check_stages", "execute", "file_sha256", "folder_lock", "jsonable",
           "read_records", "run_in_scratch", "running", "stage_hash"]

BACKUP = "backup"  # the running stages' own backups, one folder each
LOCK = ".tfprune.lock"
_RUNNING = []  # the stages being run, innermost last (see `running`)


def execute(stages, context):
    """Runs `stages` in order in `context`, resuming and recording as the module describes.

    Args:
        stages: Sequence of `Stage`s; those whose `enabled(config)` is false are left out.
        context: A `tfprune.pipeline.context.Context` (its `config`, `folder`, `results`
            and `records` are used; the stages use the rest).

    Returns:
        Dict of stage name -> result, for the stages that ran or were resumed.

    Raises:
        TfpruneError: a stage reads a file no earlier stage writes, the run folder cannot
            be written, or a stage's `check` failed; all raised before any stage runs. A
            run that created its folder and fails here removes the folder again.
        FolderInUseError: another run holds the folder.
        tfprune.verdict.CheckFailed: a stage's model is not finite, the baseline is at
            chance level, or a judged stage fell too far (these two: unless `keep_going`).
    """
    config, folder = context.config, Path(context.folder)
    stages = check_stages(stages, config)
    context.stages = tuple(stages)
    with contextlib.ExitStack() as held:
        with _removed_if_failing(folder):
            atomic.check_writable(folder)
            held.enter_context(folder_lock(folder))
            atomic.remove_partials(folder)
            for stage in stages:
                if stage.check is not None:
                    stage.check(context)
        context.records = read_records(folder) if config.resume else {}
        digests = chain(stages, config)
        # The workers of a distributed run agree on the first stage to run, to train in step.
        first = context.first_to_run(_first_to_run(stages, digests, context), digests)
        for i, (stage, digest) in enumerate(zip(stages, digests, strict=True)):
            if i < first and not stage.always:
                record = context.records[stage.name]
                context.results[stage.name] = record["result"]
                _log(stage.name, record["seconds"], "skipped (resumed): " + record["figure"])
            else:
                _run(stage, context, digest)
            _judge(stage, context)
            if stage.name == config.stop_after:
                break
    for precomputed in context.precomputed.values():  # not taken: the run stopped before
        shutil.rmtree(precomputed.folder, ignore_errors=True)
    context.precomputed.clear()
    return context.results


def running():
    """The `Stage` being run now (for messages from deep inside it), or `None`."""
    return _RUNNING[-1] if _RUNNING else None


def _first_to_run(stages, digests, context):
    """The first stage (index) not always run that must run: not resuming, or its record
    does not match. Every stage after it runs too: it would read new inputs."""
    for i, (stage, digest) in enumerate(zip(stages, digests, strict=True)):
        record = context.records.get(stage.name)
        if not stage.always and not (context.config.resume
                                     and intact(context.folder, record, digest)):
            return i
    return len(stages)


def _run(stage, context, digest):
    folder = Path(context.folder)
    missing = [name for name in stage.files_read(context.config)
               if not (folder / name).is_file()]
    if missing:
        raise TfpruneError(f"Stage {stage.name!r} needs {missing} in {str(folder)!r}, which an "
                           "earlier stage should have written: rerun without --resume.")
    context.backup_dir = _backup_dir(folder, stage.name, digest, context.config.resume)
    _seed(context.config.seed, stage.name)
    start = time.perf_counter()
    _RUNNING.append(stage)
    try:
        precomputed = context.precomputed.pop(stage.name, None)
        if precomputed is not None:  # already run with these settings and inputs
            outputs, result, figure = precomputed.take(context)
        else:
            with context.training_scope() if stage.trains else contextlib.nullcontext():
                outputs, result, figure = stage.run(context)
    finally:
        _RUNNING.pop()
    seconds = time.perf_counter() - start
    undeclared = set(outputs) - set(stage.files_written(context.config))
    if undeclared:
        raise RuntimeError(f"Stage {stage.name!r} wrote {sorted(undeclared)}, which its "
                           "declaration does not list in `writes`.")
    # Through JSON, so a result is the same whether the stage ran or was resumed.
    result = json.loads(json.dumps(result, default=jsonable))
    context.results[stage.name] = result
    record = {"hash": digest, "seconds": round(seconds, 2), "figure": figure,
              "outputs": {name: file_sha256(folder / name) for name in outputs}}
    if not stage.always:  # only a resumable stage needs its result kept
        record["result"] = result
    context.records[stage.name] = record
    # The records of the stages after it describe outputs made from its old ones: drop them
    # in the same write, so that no later kill can leave them looking intact.
    names = [s.name for s in context.stages]
    if not stage.always and stage.name in names:
        for later in names[names.index(stage.name) + 1:]:
            context.records.pop(later, None)
    faults.point(f"record:{stage.name}")
    atomic.write_text(folder / RECORD, json.dumps(context.records, indent=1))
    _remove_backup(context.backup_dir)
    _log(stage.name, seconds, figure)


def _backup_dir(folder, name, digest, resume):
    """The stage's backup folder; others of this stage (other settings) are removed, and so is
    its own unless the run resumes."""
    path = Path(folder) / BACKUP / f"{name}-{digest}"
    for old in (Path(folder) / BACKUP).glob(f"{name}-*"):
        if old.name.rsplit("-", 1)[0] == name and (old != path or not resume):
            shutil.rmtree(old, ignore_errors=True)
    return path


def _remove_backup(path):
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):  # the parent goes with its last stage folder
        path.parent.rmdir()

def _seed(seed, name):
    """Seeds Python, NumPy and (if a stage loaded it) Keras from the run's seed and `name`.

    Each stage then draws the same random numbers whether the stages before it ran in this
    process or were resumed from their records.
    """
    value = zlib.crc32(f"{seed}:{name}".encode())
    random.seed(value)
    np.random.seed(value)
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.utils.set_random_seed(value)


def _judge(stage, context):
    """Runs the verdict's checks of a stage's model; stops the run on a failed one."""
    config, result = context.config, context.results.get(stage.name)
    if not stage.model or not isinstance(result, dict):
        return
    models = [s for s in context.stages if s.model]
    first = models[0] if models else stage
    chance = None
    if stage is first and result.get("val_accuracy") is not None:
        chance = verdict.chance_bound(context.train[1], len(context.validation[1]))
    claims = verdict.stage_checks(
        stage.name, result, config, baseline=None if stage is first else
        context.results.get(first.name), judged=stage.judged, chance=chance)
    context.results[stage.name] = {**result, "checks": [claim.to_dict() for claim in claims]}
    for claim in claims:
        if claim.met:
            continue
        if claim.fatal or not config.keep_going:
            raise verdict.CheckFailed(verdict.stop_message(stage.name, claim))
        print(f"[tfprune] {stage.name:<9} going on (--keep_going), but {claim.reason}",
              flush=True)


class FolderInUseError(TfpruneError):
    """Another run holds the run folder."""


@contextlib.contextmanager
def folder_lock(folder):
    """Holds an exclusive OS lock on `folder` for the block (one run per folder).

    The lock is `flock` on `folder/.tfprune.lock`, which holds the owner's pid. The OS
    releases it when the process ends, however it ends, so a killed run never blocks the
    next one; the file itself stays.

    Raises:
        FolderInUseError: another process holds the lock.
    """
    path = Path(folder) / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if atomic.is_disk_full(e):
                raise atomic.disk_full_error(path, e) from e
            raise TfpruneError(f"Cannot lock the run folder {str(folder)!r} ({e.strerror}): "
                               "choose a folder you can write to.") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise TfpruneError(f"Cannot lock the run folder {str(folder)!r} "
                                   f"({e.strerror}): use a local folder.") from e
            raise FolderInUseError(
                f"Folder {str(folder)!r} is in use by another tfprune run (pid {holder}): wait "
                f"for it to finish or stop it (kill {holder}), or choose another --export_dir. "
                f"Received: export_dir={str(folder)!r}") from None
        try:  # the lock is on this file: if another run replaced it meanwhile, lock anew
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        with contextlib.suppress(OSError):  # the pid only makes the message helpful
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)


def _holder(fd):
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


def run_in_scratch(stages, context, folder, results, models):
    """Runs a sub-list of a run's stages in a scratch folder, as the run would run them.

    The stages that apply run in order on `context.scratch(folder, results, models)`, each
    in its training scope if it trains, with no records, resume or backups; each result is
    kept as the runner keeps it (through JSON). Anything that runs stages outside the run
    (the search's check) goes through here, not through a copied `Context`.

    Args:
        stages: Sequence of `Stage`s.
        context: The run's `Context`.
        folder: The scratch folder (existing); the caller removes it.
        results: Dict of stage name -> result, the stages before these.
        models: Dict of model name -> Keras model, the models of the stages before these.

    Returns:
        `(scratch context, {stage name: Precomputed})`: the run can later take a stage's
        files and result from its `Precomputed` instead of running it
        (`context.precomputed`).
    """
    from tfprune.pipeline.context import Precomputed

    scratch = context.scratch(folder, results, models)
    done = {}
    for stage in (s for s in stages if s.applies(scratch.config)):
        with scratch.training_scope() if stage.trains else contextlib.nullcontext():
            outputs, result, figure = stage.run(scratch)
        result = json.loads(json.dumps(result, default=jsonable))
        scratch.results[stage.name] = result
        done[stage.name] = Precomputed(folder, outputs, result, figure)
    return scratch, done


def check_stages(stages, config):
    """The stages of `stages` that apply to `config`, checked without loading anything.

    Every file a stage reads is written by an earlier stage, names are unique, and
    `config.stop_after` names one of them.

    Returns:
        List of the `Stage`s whose `applies(config)` is true, in order.

    Raises:
        TfpruneError: a check failed.
    """
    stages = [stage for stage in stages if stage.applies(config)]
    written, names = set(), set()
    for stage in stages:
        if stage.name in names:
            raise TfpruneError(f"Two stages are named {stage.name!r}: give each its own name.")
        names.add(stage.name)
        unmade = [name for name in stage.files_read(config) if name not in written]
        if unmade:
            raise TfpruneError(f"Stage {stage.name!r} reads {unmade}, which no earlier stage "
                               f"of this run writes. Received: stages={sorted(names)}")
        written.update(stage.files_written(config))
    if config.stop_after is not None and config.stop_after not in names:
        raise TfpruneError(f"stop_after names a stage this run does not have. Expected one of "
                           f"{[s.name for s in stages]}. Received: stop_after="
                           f"{config.stop_after!r}")
    return stages


@contextlib.contextmanager
def _removed_if_failing(folder):
    """Removes the folders the block created if it raises (never a folder that existed)."""
    created = []
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    try:
        yield
    except BaseException as e:
        if created and not isinstance(e, FolderInUseError):  # its lock file is this run's
            with contextlib.suppress(OSError):
                (created[0] / LOCK).unlink()
        for made in created:  # deepest first; rmdir only removes an empty folder
            try:
                made.rmdir()
            except OSError:
                break
        raise


def _log(stage, seconds, figure):
    print(f"[tfprune] {stage:<9} {seconds:7.1f}s  {figure}", flush=True)
