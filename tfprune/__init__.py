"""tfprune: prune, merge and shrink Keras CNNs into small, fast TensorFlow Lite models.

Every public name and submodule loads on first use (PEP 562): `import tfprune` is quick,
and the command line reports a bad flag before TensorFlow starts. `tfprune.prune`,
`tfprune.models.lenet5()`, `tfprune.pipeline.run(...)` work after `import tfprune` alone.

Example:

>>> import tfprune
>>> model = tfprune.models.lenet5()
>>> schedule = tfprune.ConstantSparsity(0.5, begin_step=0, frequency=1)
>>> pruned = tfprune.prune(model, schedule)
>>> [type(layer).__name__ for layer in pruned.layers][:2]
['PruneLowMagnitude', 'MaxPooling2D']
"""

import importlib
import os

# TensorFlow's C++ start-up chatter would bury our one-line errors; a user's own setting wins,
# and a process that imported TensorFlow first keeps the level it had.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfprune.errors import DataError, TfpruneError, UnsupportedModelError  # noqa: E402

__version__ = "0.1.0"

# Public name -> the module that defines it.
_NAMES = {
    "ConstantSparsity": "tfprune.schedules",
    "PolynomialDecay": "tfprune.schedules",
    "PruningSchedule": "tfprune.schedules",
    "PrunableWeight": "tfprune.wrapper",
    "PruneLowMagnitude": "tfprune.wrapper",
    "register_prunable": "tfprune.wrapper",
    "AdaptiveBatchNorm": "tfprune.callbacks",
    "PruningSummaries": "tfprune.callbacks",
    "UpdatePruningStep": "tfprune.callbacks",
    "prune": "tfprune.pruning",
    "sparsity": "tfprune.pruning",
    "strip": "tfprune.pruning",
    "fuse": "tfprune.fusion",
    "shrink": "tfprune.shrinking",
    "shrink_plan": "tfprune.shrinking",
    "register_layer": "tfprune.handlers",
}
# Submodules reachable as attributes after `import tfprune`.
_SUBMODULES = ("atomic", "backend", "backup", "batchnorm", "bench", "callbacks", "cli", "csource",
               "data",
               "distill", "distribute", "errors", "export", "faults", "fusion", "graph", "groups",
               "handlers", "int4", "interpreter", "masks", "models", "options", "pipeline",
               "pruning", "report", "schedules", "search", "selective", "shrinking", "stats",
               "tflm", "tools",
               "verdict", "wrapper")

__all__ = ["DataError", "TfpruneError", "UnsupportedModelError", "__version__", *_NAMES,
           "bench", "data", "distill", "export", "fusion", "handlers", "models", "pipeline",
           "report", "search", "tflm", "csource"]


def __getattr__(name):
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))

