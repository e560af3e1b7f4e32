"""Paired accuracy differences: how much a candidate loses against a base on the same images,
and how surely that is known.

Two classifiers measured on the same `n` images are paired. Only the images they disagree
on move the difference: `lost` (the base right, the candidate wrong) and `gained` (the
reverse). The drop is `(lost - gained) / n`, in percentage points; its 95% interval is
Newcombe's square-and-add interval for paired proportions (Newcombe 1998, his method 10;
Fagerland, Lydersen and Laake, *Statistical Analysis of Contingency Tables*, ch. 8): the
Wilson score intervals of the two accuracies, combined with their correlation. Unlike the
Wald interval it does not shrink to a point when no image is discordant, and it stays
within [-100, 100] pp.

Near 99% accuracy the interval is wide against the bounds users ask for: two models that
disagree on 1% of 6,000 images know their difference to about ±0.26 pp. `margin_pp` says
how wide the interval will be for a split of a given size, and `split_size` how many
images resolve a given bound; the search plans against the bound less that margin.

Pure NumPy, no TensorFlow: the base layer.
"""

import dataclasses
import functools
import math

import numpy as np

from tfprune.errors import TfpruneError

CONFIDENCE = 0.95


def correct(model, data, batch_size=1000):
    """Per image of `data = (x, y)`, whether a Keras `model`'s top-1 class is the label
    (booleans): what an accuracy averages, and what pairs two models on the same images.

    It calls the model eagerly batch by batch: `predict` would retrace for every new model.
    """
    x, y = data
    return np.concatenate([np.argmax(np.asarray(model(x[i:i + batch_size], training=False)),
                                     axis=-1) == y[i:i + batch_size]
                           for i in range(0, len(y), batch_size)] or [np.zeros(0, bool)])


def accuracy(model, data, batch_size=1000):
    """Top-1 accuracy of a Keras `model` on `data = (x, y)` (see `correct`)."""
    return int(np.sum(correct(model, data, batch_size))) / len(data[1])


@functools.lru_cache(maxsize=8)
def _z(confidence):
    """The two-sided normal quantile: 1.96 for 0.95."""
    if not 0 < confidence < 1:
        raise TfpruneError(f"Expected a confidence in (0, 1). Received: confidence={confidence!r}")
    # Inverse of the normal CDF by bisection on erfc: no SciPy at run time.
    tail, low, high = (1 - confidence) / 2, 0.0, 40.0
    for _ in range(200):
        mid = (low + high) / 2
        if 0.5 * math.erfc(mid / math.sqrt(2)) > tail:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def wilson(successes, n, confidence=CONFIDENCE):
    """The Wilson score interval of a proportion, `(low, high)` in [0, 1].

    Args:
        successes: Number of successes (may be fractional, for expected counts).
        n: Number of trials, positive.
        confidence: Float, defaults to `0.95`.

    Returns:
        A tuple of floats.

    Example:

    >>> from tfprune import stats
    >>> [round(v, 4) for v in stats.wilson(8, 10)]
    [0.4902, 0.9433]
    """
    z = _z(confidence)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _interval(table, confidence):
    """Newcombe's square-and-add interval of `p1 - p2` for a paired 2x2 table, in [-1, 1].

    `table` is `(a, b, c, d)`: both right, only the first right, only the second right,
    neither; `p1 = (a + b) / n`, `p2 = (a + c) / n`.
    """
    a, b, c, d = table
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, confidence)
    l2, u2 = wilson(a + c, n, confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c  # with Newcombe's continuity correction of the correlation
    psi = 0.0 if margins == 0 else (
        (cross - n / 2) / math.sqrt(margins) if cross > n / 2 else
        0.0 if cross >= 0 else cross / math.sqrt(margins))
    estimate = p1 - p2
    low = estimate - math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2
                                   - 2 * psi * (p1 - l1) * (u2 - p2)))
    high = estimate + math.sqrt(max(0.0, (p2 - l2) ** 2 + (u1 - p1) ** 2
                                    - 2 * psi * (p2 - l2) * (u1 - p1)))
    return max(-1.0, low), min(1.0, high)


@dataclasses.dataclass(frozen=True)
class PairedDrop:
    """The accuracy a candidate loses against a base on the same images, with its interval.

    Build one with `paired` (from per-image correctness) or `PairedDrop.of` (from counts).

    Attributes:
        table: Tuple of integers `(both, lost, gained, neither)`: images both classify
            right, only the base, only the candidate, neither.
        confidence: Float, of the interval, defaults to `0.95`.

    Example:

    >>> from tfprune import stats
    >>> drop = stats.PairedDrop.of(59, 6, 16, 80)  # Cavo et al. 2012, in Fagerland et al. ch. 8
    >>> round(drop.drop_pp, 2), [round(v, 2) for v in drop.ci_pp]
    (-6.21, [-11.86, -0.46])
    >>> drop.text()
    '+6.21 pp (95% CI +0.46 to +11.86)'
    """

    table: tuple
    confidence: float = CONFIDENCE

    @classmethod
    def of(cls, both, lost, gained, neither, confidence=CONFIDENCE):
        """A `PairedDrop` from the four counts of the paired table."""
        table = tuple(int(v) for v in (both, lost, gained, neither))
        if min(table) < 0 or sum(table) == 0:
            raise TfpruneError("A paired comparison needs non-negative counts and at least "
                               f"one image. Received: table={table}")
        return cls(table, confidence)

    @property
    def images(self):
        """Integer, the images compared."""
        return sum(self.table)

    @property
    def lost(self):
        """Integer, images the base classifies right and the candidate wrong."""
        return self.table[1]

    @property
    def gained(self):
        """Integer, images the candidate classifies right and the base wrong."""
        return self.table[2]

    @property
    def drop_pp(self):
        """Float, base accuracy - candidate accuracy, in percentage points."""
        return 100.0 * (self.lost - self.gained) / self.images

    @property
    def ci_pp(self):
        """`(low, high)`, the interval of `drop_pp`, in percentage points."""
        low, high = _interval(self.table, self.confidence)
        return 100.0 * low, 100.0 * high

    def within_noise(self, bound_pp=None):
        """Whether the interval holds no change (0) or `bound_pp`: the images cannot tell."""
        return within_noise(self.ci_pp, bound_pp)

    def text(self):
        """The candidate's change, `'-0.15 pp (95% CI -0.40 to +0.10)'` (negative: lost)."""
        return change_text(self.drop_pp, self.ci_pp, self.confidence)

    def to_dict(self, prefix=""):
        """Compact JSON-ready figures: `drop_pp`, `drop_ci_pp`, `discordant` (`[lost,
        gained]`) and `images`, each name led by `prefix`."""
        return {f"{prefix}drop_pp": self.drop_pp, f"{prefix}drop_ci_pp": list(self.ci_pp),
                f"{prefix}discordant": [self.lost, self.gained],
                f"{prefix}images": self.images}


def paired(base, candidate, confidence=CONFIDENCE):
    """The drop from `base` to `candidate`, two classifiers on the same images.

    Args:
        base: Boolean array, per image whether the base classifies it right.
        candidate: Boolean array as long, the candidate's on the same images, in order.
        confidence: Float, defaults to `0.95`.

    Returns:
        A `PairedDrop`.

    Raises:
        TfpruneError: arrays of other lengths, or empty.

    Example:

    >>> from tfprune import stats
    >>> base = np.array([True] * 990 + [False] * 10)
    >>> candidate = base.copy(); candidate[:4] = False; candidate[-1] = True
    >>> drop = stats.paired(base, candidate)
    >>> drop.table, round(drop.drop_pp, 2), drop.within_noise()
    ((986, 4, 1, 9), 0.3, True)
    """
    base = np.asarray(base, dtype=bool).reshape(-1)
    candidate = np.asarray(candidate, dtype=bool).reshape(-1)
    if len(base) != len(candidate) or not len(base):
        raise TfpruneError("A paired comparison needs both classifiers' results on the same "
                           f"images. Received: {len(base)} and {len(candidate)} images")
    return PairedDrop.of(np.sum(base & candidate), np.sum(base & ~candidate),
                         np.sum(~base & candidate), np.sum(~base & ~candidate), confidence)


def within_noise(ci_pp, bound_pp=None):
    """Whether an interval `(low, high)` (pp) holds 0 or `bound_pp`.

    Example:

    >>> from tfprune import stats
    >>> stats.within_noise((0.05, 0.4)), stats.within_noise((0.05, 0.4), bound_pp=0.1)
    (False, True)
    """
    low, high = ci_pp
    return low <= 0 <= high or (bound_pp is not None and low <= bound_pp <= high)


def change_text(drop_pp, ci_pp, confidence=CONFIDENCE):
    """A drop and its interval as the candidate's change: signs flipped, the loss negative.

    Example:

    >>> from tfprune import stats
    >>> stats.change_text(0.15, (-0.1, 0.4))
    '-0.15 pp (95% CI -0.40 to +0.10)'
    """
    low, high = ci_pp
    return (f"{-drop_pp + 0.0:+.2f} pp ({100 * confidence:g}% CI {-high + 0.0:+.2f} to "
            f"{-low + 0.0:+.2f})")


def margin_pp(images, accuracy, discordance=None, confidence=CONFIDENCE):
    """The half-width (pp) the interval of a drop will have on a split of `images` images.

    It is the interval of a candidate that loses nothing, on the table expected for it:
    the base at `accuracy`, the two disagreeing on a fraction `discordance` of the images,
    half each way.

    Args:
        images: Integer, the split's size.
        accuracy: Float in [0, 1], the base's accuracy.
        discordance: Float, the fraction of images the two classify differently, defaults
            to the base's error rate `1 - accuracy` (two models of about the same
            accuracy differ on about as many images as either gets wrong); at most
            `2 * (1 - accuracy)` and `2 * accuracy`.
        confidence: Float, defaults to `0.95`.

    Returns:
        A float, in percentage points.

    Raises:
        TfpruneError: no images, or a discordance the accuracy cannot have.

    Example:

    >>> from tfprune import stats
    >>> round(stats.margin_pp(6000, 0.99), 2), round(stats.margin_pp(60000, 0.99), 2)
    (0.26, 0.08)
    """
    q = _discordance(accuracy, discordance)
    if not images or images < 1:
        raise TfpruneError(f"A margin needs at least one image. Received: images={images!r}")
    n = float(images)
    table = (n * (accuracy - q / 2), n * q / 2, n * q / 2, n * (1 - accuracy - q / 2))
    return 100.0 * _interval(table, confidence)[1]


def split_size(bound_pp, accuracy, discordance=None, confidence=CONFIDENCE):
    """The fewest images whose interval of a drop is no wider than `bound_pp` either way.

    Args:
        bound_pp: Float, the drop to resolve, in percentage points.
        accuracy, discordance, confidence: As `margin_pp` takes them.

    Returns:
        An integer, or `None` when no size resolves it (a bound of 0 or less).

    Example:

    >>> from tfprune import stats
    >>> n = stats.split_size(0.1, 0.99)
    >>> n, stats.margin_pp(n, 0.99) <= 0.1 < stats.margin_pp(n - 1, 0.99)
    (38875, True)
    """
    _discordance(accuracy, discordance)
    if bound_pp <= 0:
        return None
    low, high = 1, 1
    while margin_pp(high, accuracy, discordance, confidence) > bound_pp:
        low, high = high + 1, 2 * high
        if high > 10 ** 15:
            return None
    while low < high:  # the margin falls as the split grows
        mid = (low + high) // 2
        if margin_pp(mid, accuracy, discordance, confidence) > bound_pp:
            low = mid + 1
        else:
            high = mid
    return low


def _discordance(accuracy, discordance):
    if not 0 <= accuracy <= 1:
        raise TfpruneError(f"Expected an accuracy in [0, 1]. Received: accuracy={accuracy!r}")
    q = 1 - accuracy if discordance is None else discordance
    if not 0 <= q <= 2 * min(accuracy, 1 - accuracy) + 1e-12 and discordance is not None:
        raise TfpruneError(
            "Two classifiers can disagree on at most twice the errors and twice the hits of "
            f"the base. Received: discordance={discordance!r} at accuracy={accuracy!r}")
    return min(q, 2 * min(accuracy, 1 - accuracy))
