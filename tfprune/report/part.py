"""What a stage adds to the report (`Part`), so that the report itself names no stage.

A stage declares its part (`Stage.report`); `build`, `markdown` and `draw` ask each stage
of the run for it, in stage order, and call each hook with the report dict and the stage's
name (its key in `report["results"]`, and in the report for what `facts` returns).
"""

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Part:
    """A stage's part of `report.json`, `report.md` and the plots; every hook is optional.

    Args:
        facts: Function `facts(models, files)` -> a JSON-ready value, put in the report
            under the stage's name: `models` are the model stages' declarations (the first
            is the baseline, the last the compressed model), `files` the facts per file.
        sparsity: Function `sparsity(report, name)` -> the per-layer sparsity the header
            of `report.md` states, when the stage decided it, else `None`.
        rows: Function `rows(report, name)` -> rows `(label, baseline, compressed, ratio)`
            of the main table, after the generic ones.
        section: Function `section(report, name)` -> Markdown lines after the table of
            files: figures the stage measured.
        appendix: Function `appendix(report, name)` -> Markdown lines after the notes and
            the targets: how the stage reached its result.
        plots: Tuple of `(file name, draw)` pairs; `draw(plt, report, name)` returns a
            matplotlib figure, or `None` when there is nothing to draw.
    """

    facts: Callable = None
    sparsity: Callable = None
    rows: Callable = None
    section: Callable = None
    appendix: Callable = None
    plots: tuple = ()

    def plot_files(self):
        """The names of the files its plots are saved as."""
        return tuple(name for name, _ in self.plots)


def contributions(stages, hook, report):
    """Each stage's `hook(report, name)`, in stage order, for the stages whose part has it."""
    return [getattr(stage.report, hook)(report, stage.name) for stage in stages
            if stage.report is not None and getattr(stage.report, hook) is not None]
