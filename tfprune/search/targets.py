"""Compression targets: what a searched model must reach, parsed from text, and checked.

A `Target` holds any combination of a size (a ratio of the baseline `.tflite` file, `50x`,
or bytes, `40KB`), a speedup (a ratio of LiteRT latency, `10x`) or a latency in µs, a MAC
count (`8x` or `300K`), and the accuracy drop allowed, in percentage points. `goals`
turns it into absolute bounds once the baseline's figures are known, and each `Goal` says
whether a candidate's figures meet it and by how much it falls short. Nothing here imports
TensorFlow: the command line checks targets before anything loads.
"""

import dataclasses
import math
import re

from tfprune.errors import TfpruneError

# Decimal prefixes as in SI (KB = 1000 bytes), binary ones with an i (KiB = 1024 bytes).
_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "ki": 2**10, "mi": 2**20, "gi": 2**30}
_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?\s*([a-z]*?)\s*(b)?\s*$")


@dataclasses.dataclass(frozen=True)
class Goal:
    """One bound on one figure of a candidate.

    Attributes:
        name: String, the target's name: `"size"`, `"speedup"`, `"latency"`, `"macs"` or
            `"accuracy"`.
        figure: String, the figure it bounds: `"bytes"`, `"speedup"`, `"latency_us"`,
            `"macs"` or `"drop_pp"` (validation or test accuracy lost, percentage points).
        bound: Float, the bound.
        at_least: Boolean, `True` if the figure must be at least `bound` (a speedup),
            `False` if at most (bytes, µs, MACs, accuracy drop).
        text: String, the target as the user gave it (`"50x"`).
    """

    name: str
    figure: str
    bound: float
    at_least: bool
    text: str

    def met(self, figures):
        """Whether `figures[self.figure]` meets the bound; `None` if it was not measured."""
        value = figures.get(self.figure)
        if value is None:
            return None
        slack = 1e-9 * max(1.0, abs(self.bound))  # a drop of 0.1 pp computed as 0.1000...01
        return value >= self.bound - slack if self.at_least else value <= self.bound + slack

    def shortfall(self, figures):
        """How far `figures` are from the bound, as a log ratio; 0 when met.

        A drop is measured in percentage points, not a ratio: its shortfall is the excess
        in points.
        """
        value = figures.get(self.figure)
        if value is None or self.met(figures):
            return 0.0
        if self.figure == "drop_pp":
            return value - self.bound
        value = max(value, 1e-12)
        return math.log(self.bound / value) if self.at_least else math.log(value / self.bound)

    def describe(self, figures=None):
        """`'size 50x (<= 34,500 bytes)'`, with `': 35,032 met|not met'` given figures."""
        unit = {"bytes": "bytes", "latency_us": "µs", "macs": "MACs", "drop_pp": "pp",
                "speedup": "x"}[self.figure]
        bound = f"{self.bound:.2f}{unit}" if self.figure in ("speedup", "drop_pp") else (
            f"{self.bound:,.0f} {unit}")
        text = f"{self.name} {self.text} ({'>=' if self.at_least else '<='} {bound})"
        if figures is None or figures.get(self.figure) is None:
            return text
        value = figures[self.figure]
        shown = f"{value:.2f}" if isinstance(value, float) else f"{value:,}"
        return f"{text}: {shown}, {'met' if self.met(figures) else 'NOT met'}"

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Target:
    """What a searched model must reach: any of size, speed, MACs, with an accuracy bound.

    Build one with `Target.parse` from text as the command line takes it. Every set field
    must be met; `None` fields are not targets.

    Attributes:
        size_ratio: Float > 1, the baseline `.tflite` file's bytes / the compressed file's.
        size_bytes: Integer, the compressed `.tflite` file's bytes at most.
        speedup: Float > 1, the baseline's LiteRT latency / the compressed file's.
        latency_us: Float, the compressed file's median LiteRT latency at most, in µs.
        macs_ratio: Float > 1, the baseline's MACs / the compressed model's.
        macs: Integer, the compressed model's MACs at most.
        max_accuracy_drop: Float >= 0, the accuracy the compressed model may lose, in
            percentage points, defaults to `0.5`.

    Example:

    >>> from tfprune.search import Target
    >>> target = Target.parse(size="50x", speedup="10x", max_accuracy_drop=0.1)
    >>> target.size_ratio, target.speedup, bool(target)
    (50.0, 10.0, True)
    >>> [goal.describe() for goal in target.goals({"bytes": 1_000_000})]
    ['size 50x (<= 20,000 bytes)', 'speedup 10x (>= 10.00x)', 'accuracy 0.1 pp (<= 0.10pp)']
    >>> Target.parse(size="0.5x")
    Traceback (most recent call last):
    ...
    tfprune.errors.TfpruneError: A size target is a reduction: ... Received: target_size='0.5x'
    """

    size_ratio: float = None
    size_bytes: int = None
    speedup: float = None
    latency_us: float = None
    macs_ratio: float = None
    macs: int = None
    max_accuracy_drop: float = 0.5
    texts: dict = dataclasses.field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, size=None, speedup=None, latency=None, macs=None, max_accuracy_drop=0.5):
        """A `Target` from text: `size="50x"` or `"40KB"`, `speedup="10x"`,
        `latency=800` (µs), `macs="8x"` or `"300K"`; empty or `None` for no such target.

        Raises:
            TfpruneError: unparseable text, a ratio not above 1, a non-positive amount,
                or a negative `max_accuracy_drop`; named as the command line's flag.
        """
        fields, texts = {}, {}
        if _given(size):
            kind, value = _ratio_or_amount("target_size", size, "bytes", "40KB")
            fields["size_ratio" if kind == "ratio" else "size_bytes"] = value
            texts["size"] = str(size).strip()
        if _given(speedup):
            fields["speedup"] = _ratio("target_speedup", speedup)
            texts["speedup"] = str(speedup).strip()
        if _given(latency):
            fields["latency_us"] = _positive("target_latency", latency)
            texts["latency"] = f"{fields['latency_us']:g}us"
        if _given(macs):
            kind, value = _ratio_or_amount("target_macs", macs, "MACs", "300K")
            fields["macs_ratio" if kind == "ratio" else "macs"] = value
            texts["macs"] = str(macs).strip()
        if (isinstance(max_accuracy_drop, bool)
                or not isinstance(max_accuracy_drop, (int, float))
                or not math.isfinite(max_accuracy_drop) or max_accuracy_drop < 0):
            raise TfpruneError("Expected max_accuracy_drop >= 0 (percentage points). "
                               f"Received: max_accuracy_drop={max_accuracy_drop!r}")
        texts["accuracy"] = f"{max_accuracy_drop:g} pp"
        return cls(**fields, max_accuracy_drop=float(max_accuracy_drop), texts=texts)

    def __bool__(self):
        """Whether any size, speed or MAC target is set (the accuracy bound alone is not)."""
        return any(getattr(self, name) is not None for name in (
            "size_ratio", "size_bytes", "speedup", "latency_us", "macs_ratio", "macs"))

    def goals(self, baseline):
        """The targets as `Goal`s, ratios made absolute with the baseline's figures.

        Args:
            baseline: Dict with the baseline's `"bytes"` (of its `.tflite` file) and
                `"macs"`, as far as the ratios need them.

        Returns:
            A list of `Goal`s: the size, speed and MAC targets set, then the accuracy bound.
        """
        texts, goals = self.texts, []
        if self.size_ratio is not None:
            goals.append(Goal("size", "bytes", baseline["bytes"] / self.size_ratio, False,
                              texts.get("size", f"{self.size_ratio:g}x")))
        if self.size_bytes is not None:
            goals.append(Goal("size", "bytes", float(self.size_bytes), False,
                              texts.get("size", f"{self.size_bytes}B")))
        if self.speedup is not None:
            goals.append(Goal("speedup", "speedup", self.speedup, True,
                              texts.get("speedup", f"{self.speedup:g}x")))
        if self.latency_us is not None:
            goals.append(Goal("latency", "latency_us", self.latency_us, False,
                              texts.get("latency", f"{self.latency_us:g}us")))
        if self.macs_ratio is not None:
            goals.append(Goal("macs", "macs", baseline["macs"] / self.macs_ratio, False,
                              texts.get("macs", f"{self.macs_ratio:g}x")))
        if self.macs is not None:
            goals.append(Goal("macs", "macs", float(self.macs), False,
                              texts.get("macs", str(self.macs))))
        goals.append(Goal("accuracy", "drop_pp", self.max_accuracy_drop, False,
                          texts.get("accuracy", f"{self.max_accuracy_drop:g} pp")))
        return goals


def _given(value):
    return value is not None and str(value).strip() != ""


def _number(name, text, example):
    match = _AMOUNT.match(str(text).strip().lower())
    if not match:
        raise TfpruneError(f"Cannot read {name}: expected a number with an optional unit, "
                           f"like {example}. Received: {name}={text!r}")
    return match


def _ratio(name, text):
    """`"10x"` or `"10"` -> 10.0, above 1."""
    raw = str(text).strip().lower()
    value = _positive(name, raw[:-1] if raw.endswith("x") else raw)
    if value <= 1:
        raise TfpruneError(f"A {name.removeprefix('target_')} target is a ratio above 1x "
                           f"(like 10x). Received: {name}={text!r}")
    return value


def _ratio_or_amount(name, text, unit, example):
    """`("ratio", 50.0)` from `"50x"`, `("amount", 40000)` from `"40KB"` or `"40000"`."""
    raw = str(text).strip()
    what = name.removeprefix("target_")
    if raw.lower().endswith("x"):
        try:
            value = float(raw[:-1])
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value <= 1:
            raise TfpruneError(
                f"A {what} target is a reduction: expected a ratio above 1x (like 50x) or "
                f"{unit} (like {example}). Received: {name}={text!r}")
        return "ratio", value
    match = _number(name, raw, f"50x or {example}")
    digits, exponent, prefix, byte = match.groups()
    if prefix not in _UNITS or (byte and unit != "bytes"):
        raise TfpruneError(f"Unknown unit in {name}: use K, M, G (1000s) or Ki, Mi, Gi "
                           f"(1024s){' with B' if unit == 'bytes' else ''}, like {example}. "
                           f"Received: {name}={text!r}")
    value = float(digits) * 10 ** int(exponent or 0) * _UNITS[prefix]
    if not value >= 1:
        raise TfpruneError(f"Expected {name} of at least 1 {unit}. Received: {name}={text!r}")
    return "amount", int(round(value))


def _positive(name, value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number) or number <= 0:
        raise TfpruneError(f"Expected {name} to be a positive number. Received: "
                           f"{name}={value!r}")
    return number
