"""`Stage`: one step of the pipeline, declared: what decides it, what it reads and writes,
the model it makes, how it runs, and its part of the report. The runner (`runner.execute`)
and the report take everything they need from these declarations."""

import dataclasses
from collections.abc import Callable


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
        judged: Boolean, its model's validation accuracy may fall at most
            `config.max_stage_drop` points below the baseline's (the first model stage's),
            else the run stops; defaults to `False` (for stages that recover later, such as
            an approximate merge before retraining).
        report: A `tfprune.report.Part`, what the stage adds to the report (facts in
            `report.json`, rows and sections of `report.md`, plots), or `None`: the report
            asks each stage for its part and names none itself.

    Example:

    >>> from tfprune.pipeline.stage import Stage
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
    judged: bool = False
    report: object = None

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
