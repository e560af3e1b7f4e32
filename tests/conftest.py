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
    """The MNIST IDX folder: `TFPRUNE_DATA_DIR`, else `~/.cache/tfprune/mnist`.

    Tests that need it are skipped when neither holds the files. A `TFPRUNE_DATA_DIR` that
    does not hold them is an error, not a skip, so that CI cannot pass without them.
    """
    from tfprune.data import find_mnist_dir
    from tfprune.errors import DataError

    try:
        folder = find_mnist_dir()
    except DataError as e:
        pytest.fail(f"TFPRUNE_DATA_DIR is set but unusable: {e}", pytrace=False)
    if folder is None:
        pytest.skip("MNIST IDX files not found: set TFPRUNE_DATA_DIR or copy them to "
                    "~/.cache/tfprune/mnist (README: MNIST without a download)")
    return str(folder)
