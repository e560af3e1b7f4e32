"""The pipeline: a run is a list of declared stages, executed by one runner.

    config.py    PipelineConfig: every setting, its default, its allowed values, its help
    validation.py  validate(): each setting against its declaration, then together; the
                 parsers of granularity, layer sparsities and targets
    stage.py     Stage: what a stage declares (settings, files, model, report part)
    runner.py    execute(): checks, resume, the folder's lock, backups, logs, verdicts
    records.py   stages.json: the hash chain, intact records, SHA-256 of outputs
    context.py   Context: config, run folder, models and data loaded on first use
    training.py  optimizer, compile, fit (with per-epoch backups), accuracy, hold_zeros
    distributed.py  a run over several devices or machines: who runs what, who writes
    stages/      the stages of a run, one module each, in order (STAGES)

`run(config)` checks the settings, then every stage's inputs (model, data, folder) before
any long work, then runs the stages in order. Each stage writes its outputs atomically
into the run folder and records itself in `stages.json` with a hash of the settings that
shaped it (chained with the hash of the stage before) and the SHA-256 of each output. With
`resume=True`, a stage whose record matches and whose outputs are intact is skipped, so an
interrupted run loses nothing it had finished.

Importing this package loads neither Keras nor TensorFlow; the stages load them when they
run.
"""

from tfprune.errors import TfpruneError  # noqa: F401 (for callers catching it from here)
from tfprune.pipeline.config import PipelineConfig
from tfprune.pipeline.context import Context
from tfprune.pipeline.records import RECORD
from tfprune.pipeline.runner import check_stages, execute
from tfprune.pipeline.stage import Stage
from tfprune.pipeline.stages import STAGES
from tfprune.pipeline.training import hold_zeros
from tfprune.pipeline.validation import parse_granularity, parse_layer_sparsity


def run(config):
    """Runs the pipeline (`STAGES`) and returns its report.

    To run another list of stages, call `execute(stages, Context(config))`.

    Args:
        config: A `PipelineConfig`.

    With `config.distribute="multi_worker"`, run it on every machine of the cluster
    (`TF_CONFIG`), before anything else in the process uses TensorFlow; the chief writes
    the run folder and returns the report, the other workers train with it and return
    `None` (see `tfprune.pipeline.distributed`).

    Returns:
        The report (the dict written to `report.json`, see `tfprune.report.build`): the
        result of the last stage; `None` when `config.stop_after` stopped the run before,
        or on a worker that is not the chief.

    Raises:
        TfpruneError: bad settings, model, data or export folder, or a Keras backend
            other than TensorFlow — raised before any stage runs.

    Example:

    >>> import tfprune
    >>> config = tfprune.pipeline.PipelineConfig(export_dir="/tmp/never", final_sparsity=2.0)
    >>> tfprune.pipeline.run(config)
    Traceback (most recent call last):
    ...
    tfprune.errors.TfpruneError: Expected final_sparsity in [0.0, 1.0). Received: final_sparsity=2.0
    """
    config, stages, distribution = config.validate(), STAGES, None
    if config.distribute != "none":  # its settings are checked before TensorFlow loads
        from tfprune.pipeline import distributed

        config, stages, distribution = distributed.setup(config, stages)
    check_stages(stages, config)  # a stop_after naming no stage fails before Keras loads
    from tfprune.backend import require_tensorflow  # imports Keras

    require_tensorflow("The tfprune pipeline")  # it converts and measures .tflite files
    context = Context(config)
    context.distribution = distribution
    results = execute(stages, context)
    return results.get(STAGES[-1].name)


__all__ = ["RECORD", "STAGES", "Context", "PipelineConfig", "Stage", "execute", "hold_zeros",
           "parse_granularity", "parse_layer_sparsity", "run"]
