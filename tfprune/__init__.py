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
import importlib.abc
import importlib.util
import os
import sys

# TensorFlow's C++ start-up chatter would bury our one-line errors; a user's own setting wins,
# and a process that imported TensorFlow first keeps the level it had.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfprune.errors import DataError, TfpruneError, UnsupportedModelError  # noqa: E402, F401

__version__ = "0.1.0"

# Every public name, in one table: a class or function as "module:attribute", a module or
# subpackage as "module". `__all__`, `dir(tfprune)` and the attributes that load on first
# use all come from it. A module that moved keeps its old name (`tfprune.export` is
# `tfprune.tflite`): `import tfprune.export`, `from tfprune.interpreter import parse` and
# `tfprune.export.to_tflite` work as they did.
PUBLIC = {
    # Errors.
    "TfpruneError": "tfprune.errors:TfpruneError",
    "DataError": "tfprune.errors:DataError",
    "UnsupportedModelError": "tfprune.errors:UnsupportedModelError",
    # Pruning.
    "ConstantSparsity": "tfprune.pruning.schedules:ConstantSparsity",
    "PolynomialDecay": "tfprune.pruning.schedules:PolynomialDecay",
    "PruningSchedule": "tfprune.pruning.schedules:PruningSchedule",
    "PrunableWeight": "tfprune.pruning.wrapper:PrunableWeight",
    "PruneLowMagnitude": "tfprune.pruning.wrapper:PruneLowMagnitude",
    "register_prunable": "tfprune.pruning.wrapper:register_prunable",
    "AdaptiveBatchNorm": "tfprune.pruning.callbacks:AdaptiveBatchNorm",
    "PruningSummaries": "tfprune.pruning.callbacks:PruningSummaries",
    "UpdatePruningStep": "tfprune.pruning.callbacks:UpdatePruningStep",
    "prune": "tfprune.pruning.model:prune",
    "sparsity": "tfprune.pruning.model:sparsity",
    "strip": "tfprune.pruning.model:strip",
    # Merging and shrinking.
    "fuse": "tfprune.fusion:fuse",
    "shrink": "tfprune.shrinking:shrink",
    "shrink_plan": "tfprune.shrinking:shrink_plan",
    "register_layer": "tfprune.handlers:register_layer",
    # Modules and subpackages.
    **{name: f"tfprune.{name}" for name in (
        "atomic", "backend", "backup", "bench", "cli", "compat", "data", "distill",
        "distribute", "errors", "faults", "fusion", "graph", "handlers", "micro", "models",
        "operations", "options", "pipeline", "pruning", "report", "search", "shrinking",
        "stats", "tflite", "tools", "verdict")},
    # Modules that moved, by their old names.
    "export": "tfprune.tflite",
    "interpreter": "tfprune.tflite.interpreter",
    "int4": "tfprune.tflite.int4",
    "selective": "tfprune.tflite.selective",
    "tflm": "tfprune.micro",
    "csource": "tfprune.micro.csource",
    **{name: f"tfprune.pruning.{name}" for name in (
        "masks", "schedules", "wrapper", "groups", "callbacks", "batchnorm")},
}
_MOVED = {f"{__name__}.{name}": target for name, target in PUBLIC.items()
          if ":" not in target and target != f"{__name__}.{name}"}

__all__ = ["__version__", *PUBLIC]


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a moved module by its old name: the same module object, under both names."""

    _OWN = ("__name__", "__spec__", "__loader__", "__package__", "__file__", "__path__")

    def __init__(self):
        self.identity = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(_MOVED[spec.name])
        self.identity[spec.name] = {k: getattr(module, k) for k in self._OWN if hasattr(module, k)}
        return module

    def exec_module(self, module):
        # The import system stamped the old name on the module: give it back its own.
        for key, value in self.identity.pop(module.__spec__.name, {}).items():
            setattr(module, key, value)


sys.meta_path.insert(0, _MovedModules())


def __getattr__(name):
    if name not in PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attribute = PUBLIC[name].partition(":")
    value = importlib.import_module(module)
    value = getattr(value, attribute) if attribute else value
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
