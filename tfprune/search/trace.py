"""The search's trace: every measurement it made, in a JSON file rewritten atomically as it goes.

A search is a deterministic function of its measurements. The trace keeps each one (the
sensitivity of a layer at a width, a candidate's cost, a trained candidate's accuracy) as
it is made, so that a search stopped by Ctrl-C or a kill resumes from its last finished
measurement: run again with the same trace and `resume=True`, it reads what was measured
and replays the same decisions up to where it stopped. A trace whose `key` (the search's
settings) differs is not reused.
"""

import json
import time
from pathlib import Path

from tfprune import atomic

FORMAT = "tfprune-search-trace-1"


class _Section(dict):
    """A dict whose every new entry is saved at once."""

    def __init__(self, trace, items):
        super().__init__(items)
        self._trace = trace

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._trace.save()


class Trace:
    """The measurements of one search, kept in `path` (or in memory without one).

    Args:
        path: Path of the JSON file, or `None` to keep nothing on disk.
        key: String naming the search's settings; a file with another key is ignored.
        resume: Boolean, read `path` if it holds this search's trace, defaults to `False`
            (start afresh, overwriting it).

    Attributes:
        resumed: Boolean, whether measurements were read back from `path`.

    Example:

    >>> from tfprune.search.trace import Trace
    >>> trace = Trace("trace.json", key="abc")
    >>> trace.section("costs")["16-24-48"] = {"bytes": 35032}
    >>> Trace("trace.json", key="abc", resume=True).section("costs")
    {'16-24-48': {'bytes': 35032}}
    >>> Trace("trace.json", key="other", resume=True).resumed
    False
    """

    def __init__(self, path=None, key="", resume=False):
        self.path = Path(path) if path else None
        self.key = key
        self._start = time.monotonic()
        data = _read(self.path) if resume and self.path else None
        self.resumed = bool(data) and data.get("format") == FORMAT and data.get("key") == key
        data = data if self.resumed else {"format": FORMAT, "key": key, "elapsed": 0.0}
        self._before = float(data.get("elapsed", 0.0))
        self.data = {k: (_Section(self, v) if isinstance(v, dict) else v)
                     for k, v in data.items()}

    def section(self, name):
        """The dict of measurements `name` (saved on every new entry)."""
        if name not in self.data:
            self.data[name] = _Section(self, {})
        return self.data[name]

    def elapsed(self):
        """Seconds this search has run, over every run that added to this trace."""
        return self._before + time.monotonic() - self._start

    def set(self, name, value):
        """Sets the top-level entry `name` and saves."""
        self.data[name] = value
        self.save()

    def save(self):
        """Writes the trace atomically (nothing without a path)."""
        self.data["elapsed"] = round(self.elapsed(), 3)
        if self.path is not None:
            atomic.write_text(self.path, json.dumps(self.data, indent=1, default=_plain))


def _read(path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _plain(value):
    """NumPy numbers as plain ones."""
    return value.item() if hasattr(value, "item") else str(value)
