"""The runner: what a stage declares, and `execute`, which runs declared stages in order.

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
"""

import contextlib
import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tfprune import atomic
from tfprune.errors import TfpruneError

RECORD = "stages.json"
BACKUP = "backup"  # the running stages' own backups, one folder each
# Starts the hash chain; bump it when the shape of a recorded result changes, so that
# records written by an older tfprune are not resumed.
RECORD_FORMAT = "tfprune-stages-2"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the pipeline, declared: what decides it, what it reads, what it writes.

    Args:
        name: String, the stage's name (in logs, records, `stop_after`).
        run: Function `run(context) -> (outputs, result, figure)`: the file names it wrote in
            the run folder, a JSON-ready dict of its numbers, and a one-line summary.
        keys: Tuple of `PipelineConfig` field names whose values decide the stage's output.
        derived: Function `derived(config) -> dict` of further values that decide it (e.g.
            the SHA-256 of an input file), or `None`.
        reads: Tuple of run-folder file names it reads, or a function `reads(config)`.
        writes: Tuple of run-folder file names it may write besides its model, or a
            function `writes(config)`.
        model: String or `None`: the Keras model it makes, saved as `<model>.keras`.
        always: Boolean, run even when resuming (the report), defaults to `False`.
        enabled: Function `enabled(config) -> bool`, or `None` (always part of the run).
            A disabled stage neither runs nor enters the hash chain.
        check: Function `check(context)` raising `TfpruneError` on bad input, or `None`;
            called for every stage before the first one runs.
        trains: Boolean, the stage trains a model: it runs in `context.training_scope()`
            (under the run's `tf.distribute` strategy), and in a multi-worker run every
            worker runs it; defaults to `False`.

    Example:

    >>> from tfprune.pipeline.runner import Stage
    >>> def hello(context):
    ...     (context.folder / "hello.txt").write_text("hello")
    ...     return ["hello.txt"], {"letters": 5}, "5 letters"
    >>> stage = Stage("hello", hello, keys=("seed",), writes=("hello.txt",))
    >>> stage.files_written(None)
    ('hello.txt',)
    """

    name: str
    run: Callable
    keys: tuple = ()
    derived: Callable = None
    reads: tuple | Callable = ()
    writes: tuple | Callable = ()
    model: str = None
    always: bool = False
    enabled: Callable = None
    check: Callable = None
    trains: bool = False

    @property
    def model_file(self):
        """`<model>.keras`, or `None` for a stage that makes no Keras model."""
        return f"{self.model}.keras" if self.model else None

    def files_read(self, config):
        """The run-folder files this stage reads with `config`."""
        return tuple(self.reads(config) if callable(self.reads) else self.reads)

    def files_written(self, config):
        """The run-folder files this stage may write with `config` (its model file first)."""
        writes = tuple(self.writes(config) if callable(self.writes) else self.writes)
        return ((self.model_file,) if self.model else ()) + writes

    def applies(self, config):
        """Whether the stage is part of a run with `config`."""
        return self.enabled is None or bool(self.enabled(config))

    def settings(self, config):
        """The values that decide the stage's output: its keys' values and derived values."""
        values = {key: getattr(config, key) for key in self.keys}
        values.update(self.derived(config) if self.derived else {})
        return values


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
    """
    config, folder = context.config, Path(context.folder)
    stages = [stage for stage in stages if stage.applies(config)]
    _check_declarations(stages, config)
    context.stages = tuple(stages)
    with _removed_if_failing(folder):
        atomic.check_writable(folder)
        for stage in stages:
            if stage.check is not None:
                stage.check(context)
    context.records = read_records(folder) if config.resume else {}
    digests = _chain(stages, config)
    # The workers of a distributed run agree on the first stage to run, to train in step.
    first = context.first_to_run(_first_to_run(stages, digests, context), digests)
    for i, (stage, digest) in enumerate(zip(stages, digests, strict=True)):
        if i < first and not stage.always:
            record = context.records[stage.name]
            context.results[stage.name] = record["result"]
            _log(stage.name, record["seconds"], "skipped (resumed): " + record["figure"])
        else:
            _run(stage, context, digest)
        if stage.name == config.stop_after:
            break
    return context.results


def _first_to_run(stages, digests, context):
    """The first stage (index) not always run that must run: not resuming, or its record
    does not match. Every stage after it runs too: it would read new inputs."""
    for i, (stage, digest) in enumerate(zip(stages, digests, strict=True)):
        record = context.records.get(stage.name)
        if not stage.always and not (context.config.resume
                                     and _intact(context.folder, record, digest)):
            return i
    return len(stages)


def _chain(stages, config):
    """Each stage's hash, chained from `RECORD_FORMAT`."""
    digests, previous = [], RECORD_FORMAT
    for stage in stages:
        previous = stage_hash(stage, config, previous)
        digests.append(previous)
    return digests


def stage_hash(stage, config, previous):
    """The stage's hash: its settings chained with `previous`, the hash of the stage before."""
    text = json.dumps([previous, stage.name, stage.settings(config)], sort_keys=True,
                      default=jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(stage, context, digest):
    folder = Path(context.folder)
    missing = [name for name in stage.files_read(context.config)
               if not (folder / name).is_file()]
    if missing:
        raise TfpruneError(f"Stage {stage.name!r} needs {missing} in {str(folder)!r}, which an "
                           "earlier stage should have written: rerun without --resume.")
    context.backup_dir = _backup_dir(folder, stage.name, digest, context.config.resume)
    start = time.perf_counter()
    with context.training_scope() if stage.trains else contextlib.nullcontext():
        outputs, result, figure = stage.run(context)
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


def _check_declarations(stages, config):
    """Every file a stage reads is written by an earlier stage; names are unique."""
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
    except BaseException:
        for made in created:  # deepest first; rmdir only removes an empty folder
            try:
                made.rmdir()
            except OSError:
                break
        raise


def _intact(folder, record, digest):
    if not record or record.get("hash") != digest or "result" not in record:
        return False
    for name, sha in record.get("outputs", {}).items():
        path = Path(folder) / name
        if not path.is_file() or file_sha256(path) != sha:
            return False
    return True


def read_records(folder):
    """The stage records in `folder/stages.json`, or `{}` when missing or unreadable."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return {}
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # an unreadable record means nothing can be trusted: run everything
    return records if isinstance(records, dict) else {}


def file_sha256(path):
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def jsonable(value):
    """`value` as JSON can hold it: NumPy scalars and arrays, tuples, paths made plain."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _log(stage, seconds, figure):
    print(f"[tfprune] {stage:<9} {seconds:7.1f}s  {figure}", flush=True)
