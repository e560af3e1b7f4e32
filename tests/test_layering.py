"""The layer table of docs/architecture.md, checked whole: every module of `tfprune/` is in
exactly one row, and no import (at any depth of the code) goes to a row below its own.
Within the files row, `bench` may import `tflite`, never the reverse, and
`tflite.interpreter` stands under `micro`, `tflite.int4` and `tflite.selective`. The report
knows no stage: each stage brings its own part of it."""

import ast
import dataclasses
import re
from pathlib import Path

import pytest
from test_imports import import_graph

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"


def layer_table(text):
    """The rows of the doc's layer table, top first: `[(layer, [module names])]`."""
    section = text.split("## Modules and their layers", 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in ("layer", "") or set(cells[0]) <= {"-"}:
            continue
        rows.append((cells[0], [name.rstrip("/") for name in re.findall(r"`([^`]+)`",
                                                                      cells[1])]))
    return rows


ROWS = layer_table(DOC.read_text())
GRAPH = import_graph()


def _row_of(module):
    """The index of the row that names `module` (`tfprune.` left off) or the longest
    package above it; `None` for the package itself."""
    name = module.partition(".")[2]
    if name in ("", "__main__"):
        return None
    while name:
        for index, (_, names) in enumerate(ROWS):
            if name in names:
                return index
        name = name.rpartition(".")[0]
    raise AssertionError(f"{module} is in no row of the layer table in {DOC.name}")


def test_the_table_names_every_module_once():
    named = [name for _, names in ROWS for name in names]
    assert len(named) == len(set(named)), f"named twice: {named}"
    unplaced = [m for m in GRAPH if m.count(".") and not m.endswith("__main__")
                and not any(f"{m}.".startswith(f"tfprune.{n}.") for n in named)]
    assert not unplaced, f"in tfprune/ but not in the table: {unplaced}"
    stale = [n for n in named if not any(f"{m}.".startswith(f"tfprune.{n}.") for m in GRAPH)]
    assert not stale, f"in the table but not in tfprune/: {stale}"


def test_no_import_goes_down_the_table():
    bad = []
    for module, imported in sorted(GRAPH.items()):
        row = _row_of(module)
        for other in sorted(imported):
            below = _row_of(other)
            if row is not None and below is not None and below > row:
                bad.append(f"{module} ({ROWS[row][0]}) imports {other} ({ROWS[below][0]})")
    assert not bad, "imports back up the layer table:\n" + "\n".join(bad)


@pytest.mark.parametrize("prefix,forbidden", [
    ("tfprune.tflite", ("tfprune.bench",)),
    ("tfprune.tflite.interpreter", ("tfprune.tflite.", "tfprune.micro", "tfprune.bench")),
    ("tfprune.tflite.int4", ("tfprune.tflite.convert", "tfprune.micro", "tfprune.bench")),
    ("tfprune.tflite.selective", ("tfprune.tflite.convert", "tfprune.micro", "tfprune.bench")),
    ("tfprune.micro", ("tfprune.tflite.convert", "tfprune.tflite.run", "tfprune.bench")),
])
def test_within_the_files_row(prefix, forbidden):
    modules = [m for m in GRAPH if m == prefix or m.startswith(prefix + ".")]
    assert modules
    bad = {m: sorted(o for o in GRAPH[m] if o.startswith(forbidden) and o != m)
           for m in modules}
    bad = {m: found for m, found in bad.items() if found}
    assert not bad, f"{prefix} imports {bad}"


def test_the_checks_can_fail():
    """The walker sees the imports (bench imports the interpreter), and the table is read."""
    assert "tfprune.tflite.interpreter" in GRAPH["tfprune.bench.latency"]
    assert [layer for layer, _ in ROWS][:2] == ["base", "mask math"]
    assert _row_of("tfprune.pipeline.runner") > _row_of("tfprune.search.searcher")
    assert _row_of("tfprune.pruning.masks") < _row_of("tfprune.handlers") < _row_of(
        "tfprune.pruning.wrapper")
    with pytest.raises(AssertionError, match="in no row"):
        _row_of("tfprune.nowhere")


def test_the_report_names_no_stage():
    """`tfprune/report/` renders generic tables; what one stage alone can say (a search's
    candidates, the figures on TFLite Micro) is that stage's `Stage.report`. So no string in
    its code is a stage's name, but for the words it shares with them: a setting (`merge`,
    the --merge flag) and the summary's two sides (`baseline`, `compressed`). Nor does the
    report stage import another stage."""
    from tfprune.pipeline import STAGES, PipelineConfig

    shared = {field.name for field in dataclasses.fields(PipelineConfig)} | {
        "baseline", "compressed"}
    names = {stage.name for stage in STAGES} - shared
    assert {"search", "tflm"} <= names
    found = [f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}"
             for path in sorted((ROOT / "tfprune" / "report").rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and node.value in names]
    assert not found, "the report names stages:\n" + "\n".join(found)
    stage_modules = sorted(m for m in GRAPH["tfprune.pipeline.stages.report"]
                           if m.startswith("tfprune.pipeline.stages."))
    assert not stage_modules, f"the report stage imports {stage_modules}"
