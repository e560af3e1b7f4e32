"""What differs between Keras backends, in one place.

tfprune's Keras-level API (pruning, callbacks, fusion, shrinking, distillation, `.keras`
files) runs on every Keras backend; the converter, and so the pipeline, need TensorFlow.
Two things differ under JAX, and both are answered here, with the Keras internals they
lean on (`tests/test_backend.py` fails if an upgrade moves them):

- JAX runs `fit`, `evaluate` and `predict` as pure functions: the whole model's state
  enters a `keras.StatelessScope`. A wrapper that opens a scope of its own inside it must
  still see that state (`MaskScope`).
- During an epoch the JAX trainer holds the variables' values itself and leaves the
  variables empty (reading one gives its initializer's value): host code that reads or
  writes weights between batches first writes the trainer's values back
  (`sync_trainer_state`), and the trainer then reads the variables again.
"""

import keras

from tfprune import compat
from tfprune.errors import TfpruneError


def name():
    """The Keras backend in use: `"tensorflow"`, `"jax"`, `"torch"` or `"numpy"`."""
    return keras.backend.backend()


class MaskScope(keras.StatelessScope):
    """A `keras.StatelessScope` that falls back on the enclosing scope's values.

    `PruneLowMagnitude.call` maps each prunable weight to `weight * mask`. Inside JAX's
    stateless step every variable has its value only in the trainer's scope, so a variable
    this scope does not map (a bias, a BatchNorm's statistics) is read from there.
    `own_value` is what this scope alone holds: its mapping and the updates made in it.

    Example:

    >>> v = keras.Variable(1.0)
    >>> w = keras.Variable(2.0)
    >>> with keras.StatelessScope(state_mapping=[(v, 10.0), (w, 20.0)]):
    ...     with MaskScope(state_mapping=[(v, 3.0)]) as scope:
    ...         float(v.value), float(w.value), scope.own_value(w)
    (3.0, 20.0, None)
    """

    def get_current_value(self, variable):
        value = super().get_current_value(variable)
        outer = compat.enclosing_scope(self)  # set by __enter__
        if value is None and outer is not None:
            value = outer.get_current_value(variable)
        return value

    def own_value(self, variable):
        """The value this scope maps `variable` to, or `None` (the enclosing scope is not
        asked)."""
        return self.state_mapping.get(id(variable))


def sync_trainer_state(model):
    """Writes the values a JAX trainer holds back into `model`'s variables (a no-op on
    other backends and outside `fit`/`evaluate`).

    After it, the variables can be read and assigned on the host, and the trainer reads
    them again before its next step (its `jax_state_sync` marks its state synced).
    """
    compat.sync_jax_trainer(model)


def require_tensorflow(what):
    """Raises a one-line `TfpruneError` naming the way across unless the backend is
    TensorFlow.

    Args:
        what: String, what needs TensorFlow (e.g. `"tfprune.export.to_tflite"`).

    Raises:
        TfpruneError: Keras runs on another backend.
    """
    if name() != "tensorflow":
        raise TfpruneError(
            f"{what} needs the TensorFlow backend (the TFLite converter runs on it), but Keras "
            f"runs on {name()!r}: save the model with model.save('model.keras'), then export "
            "it in a process started with KERAS_BACKEND=tensorflow, with "
            "tfprune.export.to_tflite('model.keras', ...) or tfprune --model=model.keras. "
            f"Received: KERAS_BACKEND={name()!r}")
