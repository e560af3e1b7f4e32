"""Pruning schedules: at which training steps to prune, and how sparse.

The semantics are tfmot's (`tfmot.sparsity.keras.ConstantSparsity` / `PolynomialDecay`):
pruning happens at steps `begin_step, begin_step + frequency, ...` up to and including
`end_step` (`-1`: forever, `ConstantSparsity` only). Unlike tfmot, a schedule called with a
plain Python or NumPy integer answers with plain Python values (the callback asks on the
host every batch, where a tensor op would cost more than the answer); called with a tensor
it answers with tensors, so it can also run inside a graph.

One difference on purpose: a `PolynomialDecay` whose `end_step` comes before its second
mask update (`end_step < begin_step + frequency`) is refused. tfmot accepts it and prunes
once, at `begin_step`, to `initial_sparsity` (often 0: nothing at all), never reaching
`final_sparsity`; that is never what the schedule's author meant. Bad arguments raise
`tfprune.TfpruneError`, a `ValueError`.
"""

import numbers

import keras
import numpy as np
from keras import ops

from tfprune.errors import TfpruneError


def _math(step):
    """NumPy for a concrete integer step, `keras.ops` for a tensor."""
    return np if isinstance(step, numbers.Integral) else ops


def _check_sparsity(value, name):
    if not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise TfpruneError(f"`{name}` must be a float in [0, 1). Received: {name}={value!r}")


def _check_steps(begin_step, end_step, frequency, allow_forever):
    if not isinstance(begin_step, numbers.Integral) or begin_step < 0:
        raise TfpruneError(
            f"`begin_step` must be an integer >= 0. Received: begin_step={begin_step!r}"
        )
    if not isinstance(end_step, numbers.Integral):
        raise TfpruneError(f"`end_step` must be an integer. Received: end_step={end_step!r}")
    if end_step == -1 and not allow_forever:
        raise TfpruneError("`end_step` cannot be -1 for this schedule. Received: end_step=-1")
    if end_step != -1 and end_step < begin_step:
        raise TfpruneError(
            f"`end_step` must be -1 or >= `begin_step` ({begin_step}). "
            f"Received: end_step={end_step}"
        )
    if not isinstance(frequency, numbers.Integral) or frequency < 1:
        raise TfpruneError(
            f"`frequency` must be an integer >= 1. Received: frequency={frequency!r}")


class PruningSchedule:
    """Base class: says at each training step whether to prune and at which sparsity.

    Subclasses implement `__call__(step) -> (should_prune, sparsity)` and `get_config()`;
    decorate them with `keras.saving.register_keras_serializable()` so that pruned models
    holding them load back.

    Example:

    >>> @keras.saving.register_keras_serializable(package="my")
    ... class Once(tfprune.PruningSchedule):
    ...     def __init__(self, sparsity, step):
    ...         self.sparsity, self.step = sparsity, step
    ...     def __call__(self, step):
    ...         return step == self.step, self.sparsity
    ...     def get_config(self):
    ...         return {"sparsity": self.sparsity, "step": self.step}
    >>> once = Once(0.5, step=10)
    >>> once(10), once(11)
    ((True, 0.5), (False, 0.5))
    >>> once == Once.from_config(once.get_config())
    True
    """

    def __call__(self, step):
        """Returns `(should_prune, sparsity)` for `step`.

        Args:
            step: Integer (Python, NumPy or scalar tensor), the training step (batch count).

        Returns:
            A tuple: a bool (whether to recompute masks at this step) and a float in [0, 1)
            (the fraction of weights to zero). Plain Python values for a Python or NumPy
            step, tensors for a tensor step.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(step).")

    def get_config(self):
        raise NotImplementedError(f"{type(self).__name__} must implement get_config().")

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def ending_at(self, sparsity):
        """The same schedule, ending at `sparsity`: how `tfprune.prune(..., sparsities=...)`
        gives a layer its own target. Subclasses that can say so override it.

        Args:
            sparsity: Float in [0, 1), the final sparsity.

        Returns:
            A new `PruningSchedule`.

        Raises:
            TfpruneError: the schedule has no final sparsity to change.
        """
        raise TfpruneError(f"{type(self).__name__} cannot give layers their own sparsity: "
                           "implement ending_at(sparsity), or prune those layers with a "
                           f"schedule each. Received: schedule={self!r}")

    def _should_prune(self, step, begin_step, end_step, frequency):
        xp = _math(step)
        in_range = xp.logical_and(
            xp.greater_equal(step, begin_step),
            xp.logical_or(xp.less_equal(step, end_step), end_step < 0),
        )
        turn = xp.equal(xp.mod(xp.subtract(step, begin_step), frequency), 0)
        result = xp.logical_and(in_range, turn)
        return bool(result) if xp is np else result

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


@keras.saving.register_keras_serializable(package="tfprune")
class ConstantSparsity(PruningSchedule):
    """The same sparsity at every pruning step.

    Masks are recomputed at `begin_step` and every `frequency` steps after it, up to and
    including `end_step`.

    Args:
        target_sparsity: Float in [0, 1), the fraction of weights zeroed.
        begin_step: Integer >= 0, the first step that prunes.
        end_step: Integer, the last step that may prune; defaults to `-1` (no end).
        frequency: Integer >= 1, steps between mask updates; defaults to `100`.

    Raises:
        TfpruneError: an argument out of range (the message names it and its value).

    Example:

    >>> schedule = tfprune.ConstantSparsity(0.5, begin_step=0, frequency=10)
    >>> schedule(20)
    (True, 0.5)
    >>> schedule(21)
    (False, 0.5)
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        _check_sparsity(target_sparsity, "target_sparsity")
        _check_steps(begin_step, end_step, frequency, allow_forever=True)
        self.target_sparsity = float(target_sparsity)
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.frequency = int(frequency)

    def __call__(self, step):
        should = self._should_prune(step, self.begin_step, self.end_step, self.frequency)
        if _math(step) is np:
            return should, self.target_sparsity
        return should, ops.convert_to_tensor(self.target_sparsity, dtype="float32")

    def ending_at(self, sparsity):
        """This schedule with `target_sparsity=sparsity`."""
        return type(self)(**{**self.get_config(), "target_sparsity": sparsity})

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="tfprune")
class PolynomialDecay(PruningSchedule):
    """Sparsity rising from `initial_sparsity` to `final_sparsity` along a polynomial.

    `sparsity(step) = final + (initial - final) * (1 - p) ** power`, with
    `p = clip((step - begin_step) / (end_step - begin_step), 0, 1)` (Zhu & Gupta, 2017):
    fast at first, then levelling off. Masks are recomputed at `begin_step` and every
    `frequency` steps after it, up to and including `end_step`: `final_sparsity` is reached
    when `end_step - begin_step` is a multiple of `frequency` (else the last update, before
    `end_step`, falls a little short of it).

    Args:
        initial_sparsity: Float in [0, 1), the sparsity at `begin_step`.
        final_sparsity: Float in [0, 1), the sparsity from `end_step` on.
        begin_step: Integer >= 0, the first step that prunes.
        end_step: Integer >= `begin_step + frequency`, the last step that prunes.
        power: Number, the exponent of the decay; defaults to `3`.
        frequency: Integer >= 1, steps between mask updates; defaults to `100`.

    Raises:
        TfpruneError: an argument out of range (the message names it and its value), or
            an `end_step` before the second mask update, where `final_sparsity` would never
            be reached (tfmot accepts that and prunes once, at `initial_sparsity`).

    Example:

    >>> schedule = tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000)
    >>> [round(schedule(step)[1], 3) for step in range(0, 1001, 250)]
    [0.0, 0.463, 0.7, 0.788, 0.8]
    >>> schedule(1000), schedule(1050)
    ((True, 0.8), (False, 0.8))
    >>> tfprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=94)
    Traceback (most recent call last):
    tfprune.errors.TfpruneError: `end_step` (94) comes before the second mask update ...
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3,
                 frequency=100):
        _check_sparsity(initial_sparsity, "initial_sparsity")
        _check_sparsity(final_sparsity, "final_sparsity")
        _check_steps(begin_step, end_step, frequency, allow_forever=False)
        if end_step < begin_step + frequency:  # includes end == begin, where tfmot gives NaN
            span = end_step - begin_step
            raise TfpruneError(
                f"`end_step` ({end_step}) comes before the second mask update (begin_step + "
                f"frequency = {begin_step + frequency}): masks would be computed once, at "
                f"initial_sparsity={initial_sparsity}, and final_sparsity={final_sparsity} "
                f"never reached. Set end_step >= {begin_step + frequency}"
                + (f" or frequency <= {span}" if span else "")
                + f". Received: end_step={end_step}, frequency={frequency}"
            )
        if not isinstance(power, numbers.Real):
            raise TfpruneError(f"`power` must be a number. Received: power={power!r}")
        self.initial_sparsity = float(initial_sparsity)
        self.final_sparsity = float(final_sparsity)
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.power = power
        self.frequency = int(frequency)

    def __call__(self, step):
        xp = _math(step)
        should = self._should_prune(step, self.begin_step, self.end_step, self.frequency)
        span = float(self.end_step - self.begin_step)
        if xp is np:
            p = min(1.0, max(0.0, (step - self.begin_step) / span))
        else:
            p = ops.clip(ops.cast(step - self.begin_step, "float32") / span, 0.0, 1.0)
        delta = self.initial_sparsity - self.final_sparsity
        sparsity = delta * xp.power(1.0 - p, self.power) + self.final_sparsity
        return should, (float(sparsity) if xp is np else sparsity)

    def ending_at(self, sparsity):
        """This schedule with `final_sparsity=sparsity` (and `initial_sparsity` no higher).

        >>> schedule = tfprune.PolynomialDecay(0.2, 0.8, 0, 1000).ending_at(0.1)
        >>> schedule.initial_sparsity, schedule.final_sparsity, schedule.end_step
        (0.1, 0.1, 1000)
        """
        config = self.get_config()
        config.update(final_sparsity=sparsity,
                      initial_sparsity=min(self.initial_sparsity, sparsity))
        return type(self)(**config)

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


def end_step(steps, frequency, begin_step=0, share=0.75):
    """A schedule's end when the caller gave none: `share` of `steps`, on a mask update
    (`begin_step` plus a whole number of `frequency`, at least one), so that it is reached.

    The prune stage (`tfprune.pipeline.budget`) and the search's check both end their
    schedules here.

    >>> from tfprune.pruning.schedules import end_step
    >>> end_step(steps=400, frequency=10)
    300
    >>> end_step(steps=10, frequency=100)   # never before the first update
    100
    """
    updates = max(1, round((share * steps - begin_step) / frequency))
    return begin_step + updates * frequency


def get(identifier):
    """A schedule from a schedule, or from its Keras serialization (a dict).

    Args:
        identifier: A `PruningSchedule`, or the dict `keras.saving.serialize_keras_object`
            made of one (as a pruned model's config holds it).

    Returns:
        A `PruningSchedule`.

    Raises:
        TfpruneError: anything else.
    """
    if isinstance(identifier, PruningSchedule):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    raise TfpruneError(
        f"`schedule` must be a tfprune.PruningSchedule. Received: schedule={identifier!r}"
    )
