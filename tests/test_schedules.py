"""Schedules: semantics, validation, serialization (tfmot equivalence: test_pruning_tfmot.py)."""

import keras
import pytest

import tfprune
from tfprune.errors import TfpruneError
from tfprune.pruning import schedules


def test_constant_sparsity_prunes_every_frequency_steps_in_range():
    schedule = tfprune.ConstantSparsity(0.6, begin_step=10, end_step=50, frequency=20)
    pruned = [step for step in range(100) if schedule(step)[0]]
    assert pruned == [10, 30, 50]
    assert schedule(0) == (False, 0.6)


def test_constant_sparsity_without_end_prunes_forever():
    schedule = tfprune.ConstantSparsity(0.5, begin_step=0, frequency=1000)
    assert schedule(10**9)[0] is True


def test_polynomial_decay_endpoints_and_shape():
    schedule = tfprune.PolynomialDecay(0.2, 0.9, begin_step=100, end_step=200, power=3,
                                       frequency=10)
    assert schedule(0) == (False, pytest.approx(0.2))
    assert schedule(100) == (True, pytest.approx(0.2))
    assert schedule(150)[1] == pytest.approx(0.9 + (0.2 - 0.9) * 0.5**3)
    assert schedule(200) == (True, pytest.approx(0.9))
    assert schedule(300) == (False, pytest.approx(0.9))
    values = [schedule(s)[1] for s in range(100, 201)]
    assert values == sorted(values)


def test_tensor_step_gives_tensors_with_the_same_values():
    schedule = tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=5)
    should, sparsity = schedule(keras.ops.convert_to_tensor(35))
    assert keras.ops.is_tensor(sparsity)
    assert bool(should) == schedule(35)[0]
    assert float(sparsity) == pytest.approx(schedule(35)[1], abs=1e-6)


@pytest.mark.parametrize(
    "factory, name",
    [
        (lambda: tfprune.ConstantSparsity(1.0, 0), "target_sparsity"),
        (lambda: tfprune.ConstantSparsity(-0.1, 0), "target_sparsity"),
        (lambda: tfprune.ConstantSparsity(0.5, -1), "begin_step"),
        (lambda: tfprune.ConstantSparsity(0.5, 10, end_step=5), "end_step"),
        (lambda: tfprune.ConstantSparsity(0.5, 0, frequency=0), "frequency"),
        (lambda: tfprune.PolynomialDecay(0.0, 1.5, 0, 10), "final_sparsity"),
        (lambda: tfprune.PolynomialDecay(-0.5, 0.5, 0, 10), "initial_sparsity"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 0, -1), "end_step"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 20, 10), "end_step"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 10, 10), "end_step"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 0, 10, frequency=-3), "frequency"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 0, 94), "end_step"),
        (lambda: tfprune.PolynomialDecay(0.2, 0.5, 50, 59, frequency=10), "end_step"),
    ],
)
def test_invalid_arguments_name_the_argument_and_value(factory, name):
    with pytest.raises(TfpruneError, match=f"`{name}`.*Received: {name}=") as e:
        factory()
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


def test_a_decay_must_reach_its_second_mask_update():
    """end_step < begin_step + frequency would prune once, at initial_sparsity, and never
    reach final_sparsity (tfmot accepts it: see test_pruning_tfmot.py)."""
    with pytest.raises(TfpruneError, match="initial_sparsity=0.0, and final_sparsity=0.5 never "
                       "reached. Set end_step >= 100 or frequency <= 94. Received: "
                       "end_step=94, frequency=100"):
        tfprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=94)
    with pytest.raises(TfpruneError, match=r"Set end_step >= 11\. Received: end_step=10"):
        tfprune.PolynomialDecay(0.0, 0.5, begin_step=10, end_step=10, frequency=1)
    # The smallest accepted: one update at begin_step, the last at end_step, at final.
    schedule = tfprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=100)
    assert [(s, schedule(s)[1]) for s in range(300) if schedule(s)[0]] == [(0, 0.0), (100, 0.5)]
    tfprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=94, frequency=94)
    # A constant schedule pruning once is a one-shot prune, at its target: accepted.
    assert tfprune.ConstantSparsity(0.5, begin_step=0, end_step=0)(0) == (True, 0.5)


@pytest.mark.parametrize(
    "schedule",
    [
        tfprune.ConstantSparsity(0.75, begin_step=3, end_step=90, frequency=7),
        tfprune.PolynomialDecay(0.1, 0.85, begin_step=5, end_step=500, power=2, frequency=9),
    ],
)
def test_round_trip_through_config_and_keras_serialization(schedule):
    again = type(schedule).from_config(schedule.get_config())
    assert again == schedule
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    assert [restored(s) for s in range(0, 600, 13)] == [schedule(s) for s in range(0, 600, 13)]
    assert schedules.get(keras.saving.serialize_keras_object(schedule)) == schedule


def test_get_rejects_non_schedules():
    with pytest.raises(TfpruneError, match="Received: schedule=0.5"):
        schedules.get(0.5)


def test_custom_schedule_subclass():
    class Once(tfprune.PruningSchedule):
        def __init__(self, step):
            self.step = step

        def __call__(self, step):
            return step == self.step, 0.5

        def get_config(self):
            return {"step": self.step}

    once = Once(4)
    assert [s for s in range(10) if once(s)[0]] == [4]
    assert Once.from_config(once.get_config()) == once
    assert "Once(step=4)" == repr(once)


def test_ending_at_keeps_the_steps_and_changes_the_target():
    constant = tfprune.ConstantSparsity(0.5, begin_step=3, end_step=90, frequency=7)
    assert constant.ending_at(0.2) == tfprune.ConstantSparsity(0.2, 3, 90, 7)
    decay = tfprune.PolynomialDecay(0.1, 0.8, begin_step=0, end_step=100, power=2,
                                    frequency=10)
    assert decay.ending_at(0.6) == tfprune.PolynomialDecay(0.1, 0.6, 0, 100, 2, 10)
    assert decay.ending_at(0.05).initial_sparsity == 0.05  # never starts above its end
    with pytest.raises(TfpruneError, match="final_sparsity=1.5"):
        decay.ending_at(1.5)


def test_a_custom_schedule_without_ending_at_says_so():
    class Fixed(tfprune.PruningSchedule):
        def __call__(self, step):
            return True, 0.5

        def get_config(self):
            return {}

    with pytest.raises(TfpruneError, match="implement ending_at.*Received: schedule=Fixed()"):
        Fixed().ending_at(0.3)


def test_end_step_is_three_quarters_of_the_steps_on_a_mask_update():
    assert tfprune.pruning.schedules.end_step(400, 10) == 300
    assert tfprune.pruning.schedules.end_step(400, 7) == 301  # 43 updates of 7
    assert tfprune.pruning.schedules.end_step(100, 10, begin_step=20) == 80
    assert tfprune.pruning.schedules.end_step(5, 100) == 100  # at least one update
