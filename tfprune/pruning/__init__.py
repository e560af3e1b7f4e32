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
`tfprune.PUBLIC`).
"""

from tfprune.pruning.model import plan, prune, sparsity, strip

__all__ = ["plan", "prune", "sparsity", "strip"]
