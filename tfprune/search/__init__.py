"""Compress to a budget: per-layer widths found automatically (`widths`), from targets.

    plan = tfprune.search.widths(model, train, validation,
                                 target={"size": "50x", "speedup": "10x",
                                         "max_accuracy_drop": 0.1})
    pruned = plan.prune(model, tfprune.PolynomialDecay(0.0, 0.5, 0, 1000))  # each its own end

    targets.py      Target and Goal: targets parsed from text, checked against figures
    candidates.py   a model cut to widths, compressed; its .tflite bytes, latency, MACs
    latency_table.py  a model's latency from its layers timed alone, kept on disk
    sensitivity.py  each layer cut alone: validation accuracy, predicted loss of candidates
    searcher.py     widths(), check_target(), shortfall(): the search, set up and run
    greedy.py       the greedy steps, fill, check by training and back-off (`Greedy`)
    plan.py         the Plan it returns, and `Plan.prune`
    allocate.py     for more than 8 layers: every channel group priced at once, no greedy
    trace.py        every measurement in a JSON file, so a stopped search resumes

Importing this package loads no TensorFlow (the command line checks targets with it);
the search loads it when it runs.
"""

import importlib

from tfprune.search.targets import Goal, Target

_LAZY = {"widths": "searcher", "check_target": "searcher", "shortfall": "searcher",
         "Plan": "plan", "Trace": "trace"}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"tfprune.search.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Goal", "Plan", "Target", "Trace", "check_target", "shortfall", "widths"]
