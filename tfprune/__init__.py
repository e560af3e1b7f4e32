"""tfprune: prune, merge and shrink Keras CNNs into small, fast TensorFlow Lite models."""

from tfprune.errors import DataError, TfpruneError, UnsupportedModelError

__version__ = "0.1.0"

__all__ = ["DataError", "TfpruneError", "UnsupportedModelError", "__version__"]
