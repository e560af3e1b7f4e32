"""The run's report: `report.json`, `report.md` (a table like the paper's) and PNG plots.

`build` joins the stage results of a run (`tfprune.pipeline`) into one JSON-ready dict;
`write` renders it into the run folder (every file atomically). Its `verdict`
(`tfprune.verdict.judge`) says which claims the compressed model earned; one that did not
is said first, in the headline and at the top of `report.md`, and a model that is not
finite gets no ratio at all. The report names no stage: the table of Keras models lists
the stages that declare a `model`, in order (the first is the baseline, the last the
compressed model); the table of files joins, by file name, the facts that stages report
under `result["files"]` (export: size; verify: accuracy; benchmark: latency); and what
only one stage can say (a search's candidates, the figures measured on a microcontroller)
is that stage's `Part` (`Stage.report`): its facts, rows, sections and plots, asked for
in stage order. Plots use matplotlib's Agg backend, so no display is needed.

    tables.py   `build`: the report as a JSON-ready dict; `targets`, `ship`
    render.py   `headline`, `markdown`, `write` (report.json, report.md, the plots)
    plots.py    `draw`: the PNG plots; `save`, one figure as a PNG
    part.py     `Part`: what a stage adds to the report
    format.py   numbers as the tables write them (`num`, `ratio`, `pp`, `change`)
"""

from tfprune.report.part import Part
from tfprune.report.render import headline, markdown, write
from tfprune.report.tables import FILES, PLOTS, RATIOS, build, ship, targets

# Old names of two plots that their stages now declare (`Part.plots`), kept for callers.
MEMORY_PLOT = "memory.png"
SEARCH_PLOT = "search.png"

__all__ = ["FILES", "MEMORY_PLOT", "PLOTS", "RATIOS", "SEARCH_PLOT", "Part", "build",
           "headline", "markdown", "ship", "targets", "write"]
