"""`Plan`: what `widths` returns: the chosen widths, their figures, which targets they met,
and the way to prune a model to them (`Plan.prune`).
"""

import dataclasses

from tfprune.search import candidates


@dataclasses.dataclass
class Plan:
    """The result of `widths`: the chosen per-layer widths and what was measured about them.

    Attributes:
        widths: Dict of layer name -> units kept, for the searched layers.
        units: Dict of layer name -> units in the baseline.
        sparsities: Dict of layer name -> the sparsity that keeps its width (what the prune
            stage and `prune` take).
        figures: Dict of the chosen candidate's figures: `bytes`, `macs`, `params`,
            `latency_us`, `speedup` (measured on its `.tflite` file), `val_accuracy` and
            `drop_pp` (if it was trained), `predicted_drop_pp`.
        baseline: Dict of the baseline's figures (`bytes`, `macs`, `latency_us`,
            `val_accuracy`).
        goals: List of `Goal`s (the targets, made absolute).
        met: Dict of goal name -> `True`, `False`, or `None` (not measured: a candidate
            that was never trained has no accuracy figure).
        all_met: Boolean, every goal measured and met.
        checked: Boolean, whether the chosen candidate was trained and measured.
        model: The trained compressed Keras model of the chosen candidate, or `None`.
        candidates: List of dicts, every candidate measured: `name`, `widths`, `figures`,
            `predicted_drop_pp`, `role` (`"step"`, `"fill"`, `"checked"`), in order; a step
            also its `tuned_val_accuracy` and, paired with the baseline's, `tuned_drop_pp`
            and `tuned_drop_ci_pp`; a checked candidate's figures its `drop_ci_pp`.
        sensitivity: Dict of `"layer:width"` -> validation accuracy.
        note: String, one line on how the search ended.
        seconds: Float, the time the search took (over resumed runs too).
        measured: Integer, how many candidates' files were exported (and timed) in all,
            the proposals not taken included.
        margin: Dict, the accuracy bound the search planned against: `bound_pp` (asked),
            `margin_pp` (the validation split's), `planned_pp` (`bound_pp - margin_pp`, at
            least 0), `validation_images`, `discordance` (assumed for the margin),
            `needed_images` (the split size that would resolve the bound), `resolved`.
    """

    widths: dict
    units: dict
    sparsities: dict
    figures: dict
    baseline: dict
    goals: list
    met: dict
    all_met: bool
    checked: bool
    model: object = None
    candidates: list = dataclasses.field(default_factory=list)
    sensitivity: dict = dataclasses.field(default_factory=dict)
    note: str = ""
    seconds: float = 0.0
    measured: int = 0
    margin: dict = dataclasses.field(default_factory=dict)

    @property
    def name(self):
        """The chosen widths as `'16-24-48'`."""
        return candidates.name(self.widths)

    @property
    def layer_sparsity(self):
        """The plan as a `--layer_sparsity` setting, to replay it without a search."""
        return ",".join(f"{layer}:{s:g}" for layer, s in self.sparsities.items())

    def prune(self, model, schedule, granularity="filter", **options):
        """`tfprune.prune` with each searched layer's schedule ending at its sparsity
        (`sparsities=self.sparsities`), the other pruned layers' at 0.

        Args:
            model: The model to prune (the one searched, or its trained baseline).
            schedule: A `PruningSchedule` whose `ending_at` gives each layer its own
                (`ConstantSparsity`, `PolynomialDecay`).
            granularity: As `tfprune.prune` takes it (the searched layers need `"filter"`).
            **options: Passed to `tfprune.prune`.

        Returns:
            The wrapped model, to compile and fit with `tfprune.UpdatePruningStep()`.
        """
        import tfprune

        return tfprune.prune(model, schedule.ending_at(0.0), granularity=granularity,
                             sparsities=self.sparsities, **options)

    def summary(self):
        """One line: the widths, the figures, which targets were met."""
        parts = [f"{self.name} ({'trained' if self.checked else 'not trained'})"]
        for goal in self.goals:
            parts.append(goal.describe(self.figures))
        return "; ".join(parts)

    def to_dict(self):
        """The plan as JSON-ready data (without the model)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("model", "goals")}
        data["goals"] = [goal.to_dict() for goal in self.goals]
        data["name"] = self.name
        data["layer_sparsity"] = self.layer_sparsity
        return data


