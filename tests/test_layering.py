"""The layering runs one way: `bench` may import `export`, never the reverse, and both
stand on `interpreter`, which imports neither; `int4` (under `export`) imports none of them."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tfprune"


def _tfprune_imports(path):
    """The `tfprune...` modules a file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("tfprune")}


@pytest.mark.parametrize("module,forbidden", [
    ("export.py", ("tfprune.bench",)),
    ("interpreter.py", ("tfprune.bench", "tfprune.export")),
    ("int4.py", ("tfprune.bench", "tfprune.export")),  # it reads files with interpreter
    ("selective.py", ("tfprune.bench", "tfprune.export")),
])
def test_lower_layers_do_not_import_higher_ones(module, forbidden):
    imports = _tfprune_imports(PACKAGE / module)
    assert "tfprune.interpreter" in imports or module in ("interpreter.py", "selective.py")
    bad = sorted(name for name in imports if name.startswith(forbidden))
    assert not bad, f"tfprune/{module} imports {bad}"


def test_the_walker_sees_imports():
    """The check above can fail: bench/latency.py does import the interpreter module."""
    assert "tfprune.interpreter" in _tfprune_imports(PACKAGE / "bench" / "latency.py")
