"""tfprune: prune, merge and shrink Keras CNNs into small, fast TensorFlow Lite models."""

import os

# TensorFlow's C++ start-up chatter would bury our one-line errors; a user's own setting wins,
# and a process that imported TensorFlow first keeps the level it had.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfprune import bench, export, fusion  # noqa: F401  (modules: tfprune.export.to_tflite, ...)
from tfprune.callbacks import PruningSummaries, UpdatePruningStep
from tfprune.errors import DataError, TfpruneError, UnsupportedModelError
from tfprune.fusion import fuse
from tfprune.pruning import prune, sparsity, strip
from tfprune.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from tfprune.shrinking import shrink, shrink_plan
from tfprune.wrapper import PrunableWeight, PruneLowMagnitude, register_prunable

__version__ = "0.1.0"

__all__ = ["DataError", "TfpruneError", "UnsupportedModelError", "__version__"]
__all__ += ["shrink", "shrink_plan"]
__all__ += ["ConstantSparsity", "PolynomialDecay", "PruningSchedule"]
__all__ += ["PrunableWeight", "PruneLowMagnitude", "register_prunable"]
__all__ += ["PruningSummaries", "UpdatePruningStep", "prune", "sparsity", "strip"]
__all__ += ["bench", "export"]
__all__ += ["fuse", "fusion"]
