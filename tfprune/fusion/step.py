"""One line of a fusion plan: a merge the rewriter makes, or a layer it leaves alone."""

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
