"""No module of `tfprune/` grows past 500 lines: past that, a module holds more than one
concept, and is split along a seam (the settings' declarations and their checks, the
runner and its records, ...), not cut anywhere."""

from pathlib import Path

MAX_LINES = 500
PACKAGE = Path(__file__).resolve().parents[1] / "tfprune"


def test_no_module_is_over_500_lines():
    sizes = {path: len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert len(sizes) > 50  # the package was found
    over = sorted(f"{path.relative_to(PACKAGE.parent)}: {lines} lines"
                  for path, lines in sizes.items() if lines > MAX_LINES)
    assert not over, f"over {MAX_LINES} lines: split along a seam:\n" + "\n".join(over)
