"""Paired intervals of accuracy differences (`tfprune.stats`) against known values."""

import math

import numpy as np
import pytest

from tfprune import stats
from tfprune.errors import TfpruneError


def test_newcombe_interval_matches_the_published_example():
    # Cavo et al. (2012), the paired table of Fagerland, Lydersen and Laake's chapter 8; the
    # R package `contingencytables` prints: estimate = -0.0621 (95% CI -0.1186 to -0.0046).
    drop = stats.PairedDrop.of(59, 6, 16, 80)
    assert round(drop.drop_pp / 100, 4) == -0.0621
    assert [round(v / 100, 4) for v in drop.ci_pp] == [-0.1186, -0.0046]
    assert not drop.within_noise()  # the interval excludes 0


def test_the_normal_quantile_and_wilson_interval():
    assert stats._z(0.95) == pytest.approx(1.959963984540054, abs=1e-12)
    assert stats._z(0.99) == pytest.approx(2.5758293035489, abs=1e-10)
    scipy_stats = pytest.importorskip("scipy.stats")
    for k, n in ((0, 10), (8, 10), (5925, 6000), (6000, 6000)):
        ci = scipy_stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert stats.wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def _square_and_add(a, b, c, d, z=1.959963984540054):
    """Newcombe's method 10 written out from the paper's formulas, as a reference."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n

    def wilson(p):
        centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)

    (l1, u1), (l2, u2) = wilson(p1), wilson(p2)
    cross, prod = a * d - b * c, (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0 if prod == 0 else max(cross - n / 2, 0) / math.sqrt(prod) if cross >= 0 else (
        cross / math.sqrt(prod))
    delta = math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    eps = math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return 100 * (p1 - p2 - delta), 100 * (p1 - p2 + eps)


@pytest.mark.parametrize("table", [(5920, 30, 20, 30), (985, 4, 1, 10), (1, 1, 7, 12),
                                   (50, 0, 0, 0), (0, 3, 0, 0), (9900, 0, 0, 100)])
def test_the_interval_is_newcombes_square_and_add(table):
    drop = stats.PairedDrop.of(*table)
    assert drop.ci_pp == pytest.approx(_square_and_add(*table), abs=1e-9)
    low, high = drop.ci_pp
    assert -100 <= low <= drop.drop_pp <= high <= 100


def test_paired_counts_from_per_image_results_and_swapping_flips_the_interval():
    rng = np.random.default_rng(0)
    base = rng.random(2000) < 0.98
    candidate = np.where(rng.random(2000) < 0.02, ~base, base)
    drop = stats.paired(base, candidate)
    a, b, c, d = drop.table
    assert a + b + c + d == 2000 and a + b == base.sum() and a + c == candidate.sum()
    assert drop.drop_pp == pytest.approx(100 * (base.mean() - candidate.mean()))
    back = stats.paired(candidate, base)
    assert back.ci_pp == pytest.approx((-drop.ci_pp[1], -drop.ci_pp[0]))
    figures = drop.to_dict("val_")
    assert set(figures) == {"val_drop_pp", "val_drop_ci_pp", "val_discordant", "val_images"}
    assert figures["val_discordant"] == [b, c] and figures["val_images"] == 2000


def test_no_discordant_image_is_not_certainty():
    # Identical answers on 6,000 images at 99%: Wald says [0, 0]; the interval says what
    # 6,000 images can tell, 0.07 pp either way.
    drop = stats.paired(np.arange(6000) >= 60, np.arange(6000) >= 60)
    low, high = drop.ci_pp
    assert drop.drop_pp == 0 and low < -0.05 and high > 0.05 and drop.within_noise()


def test_coverage_is_near_nominal():
    """Seeded simulation: 95% intervals hold the true drop about 95% of the time."""
    rng = np.random.default_rng(1)
    cells = np.array([0.97, 0.012, 0.008, 0.01])  # true drop 0.4 pp
    tables = rng.multinomial(2000, cells, size=2000)
    true = 100 * (cells[1] - cells[2])
    held = [stats.PairedDrop.of(*t).ci_pp[0] <= true <= stats.PairedDrop.of(*t).ci_pp[1]
            for t in tables]
    assert 0.93 <= np.mean(held) <= 0.975


def test_margin_is_the_normal_approximation_for_large_splits_and_split_size_resolves():
    z = stats._z(0.95)
    for n, accuracy in ((6000, 0.99), (10000, 0.992), (50000, 0.9)):
        wald = 100 * z * math.sqrt((1 - accuracy) / n)
        assert stats.margin_pp(n, accuracy) == pytest.approx(wald, rel=0.05)
    assert stats.margin_pp(6000, 0.99, discordance=0.02) > stats.margin_pp(6000, 0.99)
    n = stats.split_size(0.25, 0.99)
    assert stats.margin_pp(n, 0.99) <= 0.25 < stats.margin_pp(n - 1, 0.99)
    assert 5000 < n < 7000  # about 6,000 images resolve a quarter of a point at 99%
    assert stats.split_size(0.0, 0.99) is None


def test_within_noise_and_text():
    assert stats.within_noise((-0.1, 0.3)) and not stats.within_noise((0.2, 0.3))
    assert stats.within_noise((0.2, 0.6), bound_pp=0.5)
    assert not stats.within_noise((0.2, 0.4), bound_pp=0.5)
    assert stats.change_text(0.0, (-0.2, 0.2)) == "+0.00 pp (95% CI -0.20 to +0.20)"


@pytest.mark.parametrize("call,words", [
    (lambda: stats.paired([True, False], [True]), "Received: 2 and 1 images"),
    (lambda: stats.paired([], []), "Received: 0 and 0 images"),
    (lambda: stats.PairedDrop.of(0, 0, 0, 0), "Received: table=(0, 0, 0, 0)"),
    (lambda: stats.margin_pp(0, 0.99), "Received: images=0"),
    (lambda: stats.margin_pp(100, 0.99, discordance=0.5), "Received: discordance=0.5"),
    (lambda: stats.margin_pp(100, 1.5), "Received: accuracy=1.5"),
])
def test_bad_input_is_one_line_ending_in_received(call, words):
    with pytest.raises(TfpruneError, match=words.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_the_module_is_base_layer_and_loads_no_tensorflow():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; import tfprune.stats; "
            "sys.exit(bool({'tensorflow', 'keras'} & set(sys.modules)))")
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, timeout=60).returncode == 0
