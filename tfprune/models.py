"""The model zoo: the two LeNet-5 variants the results are reported on.

`get(name)` builds one by the name the command line's `--model` takes.
"""

import keras
from keras import layers

from tfprune.errors import TfpruneError


def lenet5(input_shape=(28, 28, 1), num_classes=10, name="lenet5"):
    """Caffe's LeNet-5: conv 20@5x5, max-pool, conv 50@5x5, max-pool, dense 500, dense 10.

    As in Caffe's `lenet_train_test.prototxt`, the convolutions have no activation and the
    only ReLU follows the 500-unit layer; 431,080 parameters at 28x28x1.

    Args:
        input_shape: Tuple, defaults to `(28, 28, 1)`.
        num_classes: Integer, defaults to `10`.
        name: String, defaults to `"lenet5"`.

    Returns:
        An uncompiled `keras.Sequential` whose output is a softmax.

    Example:

    >>> import tfprune
    >>> model = tfprune.models.lenet5()
    >>> model.count_params(), model.output_shape
    (431080, (None, 10))
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(20, 5, name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(50, 5, name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(500, activation="relu", name="ip1"),
            layers.Dense(num_classes, activation="softmax", name="ip2"),
        ],
        name=name,
    )


def lenet5_classic(input_shape=(28, 28, 1), num_classes=10, name="lenet5_classic"):
    """LeCun et al. 1998's LeNet-5: 6-16-120-84, average pooling, ReLU in place of tanh.

    The first convolution pads to 'same' so that a 28x28 input plays the role of the
    paper's 32x32 one.

    Args:
        input_shape: Tuple, defaults to `(28, 28, 1)`.
        num_classes: Integer, defaults to `10`.
        name: String, defaults to `"lenet5_classic"`.

    Returns:
        An uncompiled `keras.Sequential` whose output is a softmax.

    Example:

    >>> import tfprune
    >>> [layer.name for layer in tfprune.models.lenet5_classic().layers][:3]
    ['c1', 's2', 'c3']
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(6, 5, padding="same", activation="relu", name="c1"),
            layers.AveragePooling2D(2, name="s2"),
            layers.Conv2D(16, 5, activation="relu", name="c3"),
            layers.AveragePooling2D(2, name="s4"),
            layers.Flatten(name="flatten"),
            layers.Dense(120, activation="relu", name="c5"),
            layers.Dense(84, activation="relu", name="f6"),
            layers.Dense(num_classes, activation="softmax", name="output"),
        ],
        name=name,
    )


MODELS = {"lenet5": lenet5, "lenet5_classic": lenet5_classic}


def get(name, **kwargs):
    """A zoo model by name.

    Args:
        name: String, a key of `MODELS` (`"lenet5"`, `"lenet5_classic"`).
        **kwargs: Passed to the model's function (`input_shape`, `num_classes`, `name`).

    Returns:
        The model, built and uncompiled.

    Raises:
        TfpruneError: an unknown name.

    Example:

    >>> import tfprune
    >>> tfprune.models.get("lenet5", num_classes=3).output_shape
    (None, 3)
    """
    if name not in MODELS:
        raise TfpruneError(f"Unknown model. Expected one of {sorted(MODELS)} or a .keras path. "
                           f"Received: model={name!r}")
    return MODELS[name](**kwargs)
