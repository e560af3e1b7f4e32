"""tfprune: prune, merge and shrink Keras CNNs into small, fast TensorFlow Lite models."""

from tfprune.errors import DataError, TfpruneError, UnsupportedModelError
from tfprune.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule

__version__ = "0.1.0"

__all__ = ["DataError", "TfpruneError", "UnsupportedModelError", "__version__"]
__all__ += ["ConstantSparsity", "PolynomialDecay", "PruningSchedule"]
