"""Datasets: MNIST, TensorFlow Datasets, image folders and NumPy archives, made to fit a model.

`--dataset` (and `load`, `datasets`) takes:

    mnist                  MNIST from its IDX files, verified (or TFDS)
    tfds:NAME[/CONFIG]     a TFDS image-classification dataset (--data_dir, --train_split,
                           --test_split in TFDS split syntax)
    folder:PATH            one sub-folder per class (PNG, JPEG, BMP, GIF): PATH/train and
                           PATH/test, or one folder whose test set is held out
    npz:PATH               a NumPy archive with x_train, y_train, x_test, y_test

`load` returns `Splits` of NumPy arrays, which the pipeline trains on; `datasets` returns
`tf.data` pipelines for your own `fit`; `export_folder` (and `python -m tfprune.data
export-folder`) writes a dataset out as an image folder. Importing this package loads
neither TensorFlow nor TFDS.
"""

from tfprune.data.folder import IMAGE_EXTENSIONS
from tfprune.data.idx import MNIST_FILES, find_mnist_dir, mnist, mnist_arrays, mnist_pixels
from tfprune.data.loader import datasets, export_folder, load, model_input
from tfprune.data.spec import KINDS, Spec, fingerprint
from tfprune.data.spec import parse as parse_spec
from tfprune.data.splits import Splits, carve_validation

__all__ = ["IMAGE_EXTENSIONS", "KINDS", "MNIST_FILES", "Spec", "Splits", "carve_validation",
           "datasets", "export_folder", "find_mnist_dir", "fingerprint", "load", "mnist",
           "mnist_arrays", "mnist_pixels", "model_input", "parse_spec"]
