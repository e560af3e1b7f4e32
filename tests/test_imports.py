"""No import cycles in `tfprune/`: the package's import graph, read with `ast`, is acyclic.

Every import counts, at module level and inside functions alike: an import put inside a
function to dodge a cycle at load time is still a cycle in the design (`pipeline.config`
once imported `pipeline.stages` that way, for the `--stop_after` choices).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tfprune"


def module_name(path, root=ROOT):
    """`tfprune/a/b.py` -> `tfprune.a.b`; `tfprune/a/__init__.py` -> `tfprune.a`."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package=PACKAGE, root=ROOT):
    """Module name -> the set of the package's modules it imports (itself left out).

    `from a import b` is an edge to `a.b` when that is a module, else to `a`; an import of
    a name inside a module is an edge to the module that holds it. A package whose names
    load on first use has a `PUBLIC` table: `tfprune.name` (or `tflite.name`, `export.name`,
    by the package's name or an alias the top-level table gives it) is an edge to where the
    table says `name` lives, so the lazy names hide nothing.
    """
    modules = {module_name(path, root): path for path in package.rglob("*.py")}
    tables = _public_tables(package, root, modules)

    def owner(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package `level - 1` steps up
                    anchor = here
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else base)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                table = tables.get(node.value.id, {})
                if node.attr in table:
                    targets.add(table[node.attr].partition(":")[0])
        graph[name] = {owner(t) for t in targets} - {None, name}
    # Importing `p.q.m` runs `p/__init__` and `p/q/__init__` first: edges to those packages
    # too, except the importer's own (already loading when it runs) and those whose
    # `__init__` imports nothing of the package (a lazy table runs nothing).
    return {name: found | {parent for t in found for parent in _parents(t)
                           if graph.get(parent) and parent not in _parents(name) | {name}}
            for name, found in graph.items()}


def _parents(name):
    """`a.b.c` -> {`a`, `a.b`}: the packages Python imports before `a.b.c`."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _public_tables(package, root, modules):
    """Each lazy package's `PUBLIC` table (name -> "module[:attribute]"), read without
    importing, under the names a module refers to the package by: its last component, and
    the aliases the top-level table gives it (`export` for `tflite`)."""
    tables = {}
    for name, path in modules.items():
        if path.name == "__init__.py" and (table := _public_table(path, name)):
            tables[name.rpartition(".")[2]] = table
    top = tables.get(package.name, {})
    for alias, target in top.items():
        short = target.rpartition(".")[2]
        if ":" not in target and short in tables and alias not in tables:
            tables[alias] = tables[short]
    return tables


def _public_table(init, name):
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "PUBLIC":
            namespace = {"__name__": name}
            return eval(compile(ast.Expression(node.value), str(init), "eval"), namespace)
    return {}


def cycles(graph):
    """The strongly connected components of `graph` with more than one module (Tarjan's)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.add(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_tfprune_has_no_import_cycle():
    found = cycles(import_graph())
    described = ["; ".join(f"{m} -> {sorted(set(import_graph()[m]) & set(c))}" for m in c)
                 for c in found]
    assert not found, f"import cycles in tfprune/: {described}"


def test_the_cycle_check_can_fail(tmp_path):
    """A planted cycle, one import inside a function, is found; a one-way import is not."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from pkg.a import thing\n")
    (package / "c.py").write_text("from . import a\n")
    graph = import_graph(package, tmp_path)
    assert graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
    (package / "b.py").write_text("import os\n")
    assert cycles(import_graph(package, tmp_path)) == []
    # A cycle through a package's __init__: importing pkg.sub.x runs pkg/sub/__init__.
    (package / "sub").mkdir()
    (package / "sub" / "__init__.py").write_text("from pkg.sub.x import y\nfrom pkg import b\n")
    (package / "sub" / "x.py").write_text("y = 1\n")
    (package / "b.py").write_text("def f():\n    from pkg.sub.x import y\n")
    graph = import_graph(package, tmp_path)
    assert graph["pkg.b"] == {"pkg.sub.x", "pkg.sub"}
    assert cycles(graph) == [["pkg.b", "pkg.sub"]]
