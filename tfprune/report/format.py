"""Numbers as `report.md` writes them: a dash for what was not measured, counts with
thousands separators, ratios as `4.0x`, changes in percentage points (with their paired
interval when known). Every table of the report, and every stage's part of it, uses these."""

from tfprune import stats

DASH = "—"  # a figure not measured


def num(value, fmt="{:,}"):
    """`value` formatted with `fmt`, or a dash when it is `None`."""
    return DASH if value is None else fmt.format(value)


def ratio(value):
    """A ratio as `4.0x`, or a dash."""
    return DASH if value is None else f"{value:.1f}x"


def pp(value):
    """A change of a fraction (accuracy) in signed percentage points, or a dash."""
    return DASH if value is None else f"{100 * value:+.2f} pp"


def change(delta, ci_pp):
    """An accuracy change (a fraction), with the paired interval of its drop (pp) if known."""
    if delta is None or ci_pp is None:
        return pp(delta)
    return stats.change_text(-100 * delta, ci_pp)
