"""The stages of a run, one module each, declared, in order in `STAGES`.

A run is baseline, (search,) prune, merge, retrain, shrink, export, verify, benchmark,
(tflm,) report: the search runs when a target is set, tflm with `--target=tflm`. Each
`Stage` (see `tfprune.pipeline.runner`) names the settings that decide it, the files it
reads and writes, the Keras model it makes, and its `run(context)`. The runner and the
report take everything they need from these declarations: adding a stage (a search for
per-layer widths, a TFLite Micro measurement) is one module here, its declaration placed in
`STAGES`; a stage that only some runs need declares `enabled(config)`.

    baseline.py   load or train the model; `describe`, the figures every model stage reports
    search.py     per-layer widths to a budget, checked with the compress stages
    search_report.py  its part of the report: the candidates, search.png
    prune.py, merge.py, retrain.py, fold.py, shrink.py   the compress stages (`COMPRESS`)
    export.py, verify.py, benchmark.py   the `.tflite` files, their accuracy, their latency
    tflm.py       the files measured on TensorFlow Lite Micro (`--target=tflm`)
    tflm_report.py  its part of the report: rows, a section, memory.png
    report.py     report.json, report.md, the plots (`report_stage`: no stage named)

These modules stay light to import (`import tfprune.pipeline` loads it, and a bad
`--stop_after` is reported before Keras loads): Keras and TensorFlow load inside the stage
functions. The search's check runs the compress stages through the runner
(`runner.run_in_scratch`).
"""

from tfprune.pipeline.stages.baseline import BASELINE, describe
from tfprune.pipeline.stages.benchmark import BENCHMARK
from tfprune.pipeline.stages.export import EXPORT, mode_settings, tflite_files, tflm_files
from tfprune.pipeline.stages.fold import FOLD
from tfprune.pipeline.stages.merge import MERGE, folds_after_retrain
from tfprune.pipeline.stages.prune import PRUNE
from tfprune.pipeline.stages.report import report_stage
from tfprune.pipeline.stages.retrain import RETRAIN
from tfprune.pipeline.stages.search import COMPRESS, SEARCH, SEARCH_FILES
from tfprune.pipeline.stages.shrink import SHRINK
from tfprune.pipeline.stages.tflm import TFLM
from tfprune.pipeline.stages.verify import VERIFY

_BEFORE_REPORT = (BASELINE, SEARCH, *COMPRESS, EXPORT, VERIFY, BENCHMARK, TFLM)
REPORT = report_stage(_BEFORE_REPORT)  # last: it renders the parts of those before it
STAGES = (*_BEFORE_REPORT, REPORT)

__all__ = ["BASELINE", "BENCHMARK", "COMPRESS", "EXPORT", "FOLD", "MERGE", "PRUNE", "REPORT",
           "RETRAIN", "SEARCH", "SEARCH_FILES", "SHRINK", "STAGES", "TFLM", "VERIFY",
           "describe", "folds_after_retrain", "mode_settings", "report_stage", "tflite_files",
           "tflm_files"]
