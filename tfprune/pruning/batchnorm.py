"""Adaptive BatchNorm: moving statistics recomputed for the weights a model has now.

Pruning changes what reaches every BatchNorm downstream of a cut channel, but a BatchNorm's
moving mean and variance follow its inputs only slowly (momentum 0.99, or keras.applications'
0.999: a time constant of a thousand steps). A pruned model evaluated with them sees
statistics of the model it was before the cut, and loses accuracy it has not really lost
(EagleEye, Li et al. 2020, recomputes them to judge pruned candidates). `recalibrate`
recomputes them on a few training batches, with no training: each BatchNorm's statistics
become the average of its batch statistics over those batches.
"""

import keras
import numpy as np

from tfprune.pruning.wrapper import unwrap


def batchnorm_layers(model):
    """The BatchNormalization layers of `model` that training updates, in layer order.

    Pruning wrappers and nested models are looked through; a frozen BatchNorm
    (`trainable=False`) and one with batch renormalization are left out, as `fit` leaves
    their statistics alone.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
    ...                           keras.layers.BatchNormalization(name="bn")])
    >>> [layer.name for layer in batchnorm_layers(model)]
    ['bn']
    """
    found = []
    for layer in getattr(model, "layers", ()):
        inner = unwrap(layer)
        if isinstance(inner, keras.Model):
            found.extend(batchnorm_layers(inner))
        elif (isinstance(inner, keras.layers.BatchNormalization) and inner.trainable
              and layer.trainable and not getattr(inner, "renorm", False)):
            found.append(inner)
    return found


def sample(x, images, seed=0):
    """A seeded choice of `images` of the training inputs `x` (all of them if fewer).

    The same images each time: recalibrations of one run are comparable, and repeatable.
    """
    x = np.asarray(x) if not hasattr(x, "shape") else x
    if images >= len(x):
        return x
    index = np.sort(np.random.default_rng(seed).choice(len(x), images, replace=False))
    return x[index]


def recalibrate(model, x, batch_size=128):
    """Recomputes the moving statistics of `model`'s BatchNorms on the images `x`.

    The model runs forward in training mode, batch by batch, with no weight changing but
    the statistics: after batch `i` each moving mean (and variance) is the average of the
    `i + 1` batch means (variances) seen, as PyTorch's `momentum=None` cumulative average.
    Dropout is active, as in the training that the statistics are for. Each BatchNorm's
    momentum is restored afterwards.

    Args:
        model: A Keras model (pruning wrappers and a `tfprune.distill.Distiller`'s student
            allowed: a Distiller recalibrates its student).
        x: NumPy array of input images (a few batches: `sample` picks them), or `None`.
        batch_size: Integer, defaults to `128`.

    Returns:
        Integer, the number of BatchNorm layers recalibrated (0 when `x` is `None` or
        empty, or the model has none).

    Example:

    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.BatchNormalization()])
    >>> x = np.random.default_rng(0).normal(3.0, 2.0, size=(512, 2)).astype("float32")
    >>> recalibrate(model, x, batch_size=64)
    1
    >>> bool(np.allclose(model.layers[0].moving_mean, x.mean(axis=0), atol=1e-5))
    True
    """
    model = getattr(model, "student", model)
    layers = batchnorm_layers(model)
    if x is None or not len(x) or not layers:
        return 0
    saved = [layer.momentum for layer in layers]
    try:
        for i, start in enumerate(range(0, len(x), batch_size)):
            for layer in layers:  # moving = moving * i/(i+1) + batch / (i+1)
                layer.momentum = i / (i + 1)
            model(x[start:start + batch_size], training=True)
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return len(layers)
