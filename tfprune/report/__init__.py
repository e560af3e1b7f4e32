"""The run's report: `report.json`, `report.md` (a table like the paper's) and PNG plots.

`build` joins the stage results of a run (`tfprune.pipeline`) into one JSON-ready dict;
`write` renders it into the run folder (every file atomically). Its `verdict`
(`tfprune.verdict.judge`) says which claims the compressed model earned; one that did not
is said first, in the headline and at the top of `report.md`, and a model that is not
finite gets no ratio at all. Its tables name no stage: the table of Keras models lists
the stages that declare a `model`, in order (the first is the baseline, the last the
compressed model), and the table of files joins, by file name, the facts that stages report
under `result["files"]` (export: size; verify: accuracy; benchmark: latency). Two parts
still read a stage's result by its name: the search's section and plot (`search`) and the
TFLite Micro section and memory plot (`tflm`). Plots use matplotlib's Agg backend, so no
display is needed.

    tables.py   `build`: the report as a JSON-ready dict; `targets`, `ship`
    render.py   `headline`, `markdown`, `write` (report.json, report.md, the plots)
    plots.py    `draw`: the PNG plots
"""

from tfprune.report.render import headline, markdown, write
from tfprune.report.tables import (
    FILES,
    MEMORY_PLOT,
    PLOTS,
    RATIOS,
    SEARCH_PLOT,
    build,
    ship,
    targets,
)

__all__ = ["FILES", "MEMORY_PLOT", "PLOTS", "RATIOS", "SEARCH_PLOT", "build", "headline",
           "markdown", "ship", "targets", "write"]
