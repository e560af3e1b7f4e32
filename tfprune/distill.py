"""Knowledge distillation, Keras-native: a student learns from a teacher's softened outputs.

`Distiller` is a `keras.Model` that holds a student and a frozen teacher; `fit` trains the
student on `(1 - weight) * (the compiled loss) + weight * SoftTargetLoss(teacher, student)`
(Hinton et al. 2015). It is a plain Keras model, so it works with every callback (the
pruning callbacks find the `PruneLowMagnitude` layers inside the student), with
`tf.distribute` (create and compile it inside `strategy.scope()`), and it saves and loads
as a `.keras` file. `SoftTargetLoss` is the distillation term alone, a `keras.losses.Loss`
for users who precompute the teacher's outputs.
"""

import keras
from keras import ops

from tfprune import compat

# Outputs that are probabilities (a softmax) are turned back into logits as log(p); this
# floor keeps log finite. softmax(log(p) / T) equals softmax(logits / T), since softmax
# ignores a constant shift, so nothing is lost above it; classes below it weigh
# (1e-20)^(1/T) or less in the softened targets.
_FLOOR = 1e-20


def _logits(outputs, from_logits):
    """`outputs` as logits: unchanged, or log of probabilities (up to a constant shift)."""
    if from_logits:
        return outputs
    return ops.log(ops.maximum(outputs, _FLOOR))


@keras.saving.register_keras_serializable(package="tfprune")
class SoftTargetLoss(keras.losses.Loss):
    """The distillation term: `T² · KL(softmax(teacher / T) ‖ softmax(student / T))`.

    Called as `loss(teacher_outputs, student_outputs)` (the teacher's outputs in the place
    of `y_true`). Per example it is `T² Σ_k p_k (log p_k - log q_k)` with
    `p = softmax(t / T)`, `q = softmax(s / T)`; the `T²` keeps its gradients on the scale of
    the hard loss's as `T` grows (Hinton et al.). Keras reduces it over the batch (a mean by
    default) and scales it for `tf.distribute` as any loss.

    Args:
        temperature: Float > 0, defaults to `4.0`.
        from_logits: Boolean, whether both outputs are logits (`True`) or probabilities
            such as a softmax's (`False`, turned back into logits as `log(p)`), defaults
            to `False`.
        **kwargs: `keras.losses.Loss` arguments (`reduction`, `name`, `dtype`).

    Raises:
        TfpruneError: a temperature that is not a positive number.

    Example:

    >>> loss = tfprune.distill.SoftTargetLoss(temperature=2.0, from_logits=True)
    >>> same = np.array([[1.0, 2.0, 3.0]])
    >>> float(loss(same, same))   # the student agrees with the teacher: nothing to learn
    0.0
    >>> float(loss(same, np.array([[3.0, 2.0, 1.0]]))) > 0
    True
    """

    def __init__(self, temperature=4.0, from_logits=False, name="soft_target_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = _positive("temperature", temperature)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        t = self.temperature
        teacher = ops.log_softmax(_logits(y_true, self.from_logits) / t, axis=-1)
        student = ops.log_softmax(_logits(y_pred, self.from_logits) / t, axis=-1)
        return t * t * ops.sum(ops.exp(teacher) * (teacher - student), axis=-1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature,
                "from_logits": self.from_logits}


@keras.saving.register_keras_serializable(package="tfprune")
class Distiller(keras.Model):
    """A student trained to match a teacher as well as the labels.

    Compile it as you would the student (optimizer, its loss on the labels, metrics), then
    `fit` it: the loss is `(1 - weight) * compiled loss + weight * SoftTargetLoss`, the
    teacher's outputs computed on each batch in inference mode and never trained (no
    gradient reaches it; its variables are not the distiller's trainable variables, and
    its own `trainable` flag is left as it was). The compiled loss includes the student's
    regularization losses, so they are weighted `1 - weight` too. Calling the distiller
    calls the student; after training, use (or `tfprune.strip`) the student itself.

    Args:
        student: A Keras model, the one to train (it may hold `PruneLowMagnitude` layers).
        teacher: A Keras model with the same output shape, e.g. the uncompressed baseline.
        temperature: Float > 0, softens both outputs, defaults to `4.0`.
        weight: Float in [0, 1], the distillation term's share of the loss, defaults to
            `0.5`.
        from_logits: Boolean, whether both models output logits (`True`) or probabilities
            (`False`), defaults to `False`.
        **kwargs: `keras.Model` arguments (`name`).

    Raises:
        TfpruneError: a student or teacher that is not a Keras model, or a temperature or
            weight out of range.

    Example:

    >>> teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="hidden"),
    ...                             keras.layers.Dense(3, activation="softmax", name="out")])
    >>> student = tfprune.prune(teacher, tfprune.ConstantSparsity(0.5, begin_step=0))
    >>> distiller = tfprune.distill.Distiller(student, teacher, temperature=2.0)
    >>> distiller.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    >>> x, y = np.random.rand(64, 8), np.random.randint(0, 3, 64)
    >>> _ = distiller.fit(x, y, batch_size=16, verbose=0,
    ...                   callbacks=[tfprune.UpdatePruningStep()])
    >>> tfprune.sparsity(student)   # the callback found the student's wrappers
    {'hidden': 0.5, 'out': 0.5}
    """

    def __init__(self, student, teacher, temperature=4.0, weight=0.5, from_logits=False,
                 **kwargs):
        super().__init__(**kwargs)
        for name, model in (("student", student), ("teacher", teacher)):
            if not isinstance(model, keras.Model):
                raise _error(f"Expected the {name} to be a Keras model. Received: "
                             f"{name}={type(model).__name__}")
        if not (isinstance(weight, (int, float)) and 0.0 <= weight <= 1.0):
            raise _error(f"Expected weight in [0, 1]. Received: weight={weight!r}")
        self.student = student
        self.teacher = teacher
        self.weight = float(weight)
        self.soft_loss = SoftTargetLoss(temperature, from_logits)

    @property
    def temperature(self):
        return self.soft_loss.temperature

    @property
    def from_logits(self):
        return self.soft_loss.from_logits

    # The student's variables only are trained: the teacher is a fixed target, whatever its
    # own `trainable` says (Keras reads the `_variables` forms to build the optimizer, the
    # `_weights` forms to take gradients).

    @property
    def trainable_variables(self):
        return self.student.trainable_variables if self.trainable else []

    @property
    def trainable_weights(self):
        return self.student.trainable_weights if self.trainable else []

    @property
    def non_trainable_variables(self):
        if not self.trainable:
            return self.variables
        return self.student.non_trainable_variables + self.teacher.variables

    @property
    def non_trainable_weights(self):
        if not self.trainable:
            return self.weights
        return self.student.non_trainable_weights + self.teacher.weights

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        hard = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                    training=training)
        if self.weight == 0.0:
            return hard
        teacher = ops.stop_gradient(self.teacher(x, training=False))
        soft = self.soft_loss(teacher, y_pred)
        return (1.0 - self.weight) * hard + self.weight * soft

    def get_config(self):
        return {**super().get_config(),
                "student": keras.saving.serialize_keras_object(self.student),
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "temperature": self.temperature, "weight": self.weight,
                "from_logits": self.from_logits}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("student", "teacher"):
            config[key] = keras.saving.deserialize_keras_object(config[key],
                                                                custom_objects=custom_objects)
        return cls(**config)


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _error(f"Expected {name} > 0. Received: {name}={value!r}")
    return float(value)


def _error(message):
    from tfprune.errors import TfpruneError

    return TfpruneError(message)


def ends_in_softmax(model):
    """Whether `model`'s output is a softmax (probabilities) rather than logits: a loss's
    `from_logits` (the run's compiled loss, the `Distiller`'s, the search's).

    Reads the layer that makes the output, through pruning wrappers: a `Softmax` layer, or
    a layer whose `activation` is softmax (a `Dense(..., activation="softmax")` or an
    `Activation("softmax")`).

    Example:

    >>> from tfprune.distill import ends_in_softmax
    >>> dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> ends_in_softmax(dense)
    False
    >>> ends_in_softmax(keras.Sequential([dense, keras.layers.Softmax()]))
    True
    """
    from tfprune.pruning.wrapper import unwrap

    try:
        last = compat.producer(model.outputs[0])  # the layer that makes the output
    except (AttributeError, IndexError, TypeError, ValueError):
        last = None
    last = unwrap(last if last is not None else model.layers[-1])
    if isinstance(last, keras.layers.Softmax):
        return True
    if isinstance(last, keras.Model):  # a nested model: its own output layer decides
        return ends_in_softmax(last)
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"
