import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    keras.utils.set_random_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def mnist_dir():
    """The MNIST IDX folder CI provides; tests that need it are skipped without it."""
    folder = os.environ.get("TFPRUNE_DATA_DIR") or os.path.join(
        os.path.dirname(__file__), "..", "..", "shared", "data", "mnist"
    )
    if not os.path.isdir(folder):
        pytest.skip("MNIST IDX files not found: set TFPRUNE_DATA_DIR")
    return folder
