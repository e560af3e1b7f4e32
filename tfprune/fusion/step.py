"""A fusion plan: its lines (`Step`s), each a merge the rewriter makes or a layer it leaves
alone, and the plan that prints them (`FusionPlan`)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Step:
    """A merge (or a layer left alone) in a fusion plan.

    Attributes:
        layers: Names of the layers merged, in graph order (for a layer left alone, its name).
        result: Name of the layer that replaces them, or `None` if they are removed or kept.
        rule: Short rule name, e.g. `"batchnorm"`, `"max_pool"`, `"kept"`.
        detail: What changes (kernel sizes, strides) or, for a kept layer, why it is kept.
        approximate: Whether the merge changes the model's outputs (retrain after).
    """

    layers: tuple
    result: str = None
    rule: str = ""
    detail: str = ""
    approximate: bool = False

    @property
    def applied(self):
        return self.rule != "kept"

    def __str__(self):
        if not self.applied:
            return f"{self.layers[0]}: left alone ({self.detail})"
        target = self.result if self.result else "removed"
        text = f"{' + '.join(self.layers)} -> {target}"
        if self.detail:
            text += f" ({self.detail})"
        return text + (", approximate" if self.approximate else "")


class FusionPlan(list):
    """The `Step`s of a fusion plan, merges first: a list that prints as a readable plan.

    Attributes:
        name: The model's name.
        approximate: Whether approximate merges were allowed.
    """

    def __init__(self, steps, name=None, approximate=False):
        super().__init__(steps)
        self.name = name
        self.approximate = approximate

    @property
    def merges(self):
        """The steps that merge layers (not those left alone)."""
        return [step for step in self if step.applied]

    def __str__(self):
        mode = "exact and approximate merges" if self.approximate else "exact merges only"
        lines = [f"Fusion plan for {self.name!r} ({mode}):"]
        lines += [f"  {step}" for step in self.merges]
        if not self.merges:
            lines.append("  nothing to merge")
        lines += [f"  leaves {step.layers[0]}: {step.detail}"
                  for step in self if not step.applied]
        return "\n".join(lines)

    __repr__ = __str__
