"""Pruning inside training: schedules, masks, the wrapper that holds them, and whole models.

    masks.py      pure mask math: thresholds, block, N:M, filter norms (NumPy, no Keras)
    schedules.py  `PruningSchedule`, `ConstantSparsity`, `PolynomialDecay`: when, how sparse
    wrapper.py    `PruneLowMagnitude` and the table of what each layer type prunes
    groups.py     filter pruning by coupled channel group (`FilterGroups`)
    batchnorm.py  BatchNorm statistics recomputed for the weights a model has now
    callbacks.py  `UpdatePruningStep`, `PruningSummaries`, `AdaptiveBatchNorm`
    model.py      `prune` (with per-layer `sparsities`), `strip`, `sparsity`, `plan` on
                  whole models

The modules kept their old names too (`tfprune.masks` is `tfprune.pruning.masks`, see
`tfprune.PUBLIC`). `prune`, `strip`, `sparsity` and `plan` load `model` on first use, so
that importing `tfprune.pruning.masks` (pure NumPy) or `schedules` loads nothing else: the
model graph stands on them, and `model` stands on the graph.
"""

import importlib

_LAZY = ("plan", "prune", "sparsity", "strip")


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module("tfprune.pruning.model"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
