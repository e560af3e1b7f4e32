"""Widths for tens of channel groups at once: a priced allocation over sensitivity curves.

The greedy narrows one layer a step and fine-tunes a proposal per layer: with the 35
searched convolutions of a MobileNetV2 that is 35 fine-tunings and 35 files a step, for
dozens of steps. Here every channel group is ranked at once, by accuracy lost per unit of
cost, the Lagrangian relaxation of the knapsack that HALP (Shen et al. 2022) solves over
latency:

- **Groups**: searched layers whose channels a residual `Add` couples are one variable
  (the prune stage cuts their channels together, to the widest of them), `tied`.
- **Cost**: each group's share of the model's multiply-accumulates that scale with its
  channel count: its convolutions' outputs, the BatchNorm and depthwise channels that
  follow them, and the inputs of the convolutions that read them (`shares`; first order:
  two groups cut at once save a little less than the sum).
- **Loss**: the sensitivity analysis' predicted accuracy loss of each group at each width
  (`Sensitivity`, the group cut as a whole), against the baseline fine-tuned the same way
  without a cut (`control`); no group goes below the narrowest width it measured.
- **Price**: for a price λ each group takes the grid width that minimises
  `loss(w) + λ · share · w / units`; λ is bisected until the candidate (built, exported and
  costed like every other: real bytes, table latency) meets every cost goal. Each price is
  one candidate, whatever the number of groups: about ten candidates in all.
- **Reference**: the sensitivities come from a few fine-tuning steps, and misjudge a group
  that full training recovers (mobilenet_tiny's stem). The uniform candidate (every group
  at one fraction of its units, `uniform`) is trained beside the allocation's first; of
  the two that meet every target, the one with fewer MACs is kept unless the other is more
  accurate beyond the validation split's noise (`Greedy._preferred`).
"""

import math

import numpy as np

from tfprune.search import candidates, sensitivity

# Above this many searched layers, `widths` allocates instead of the greedy.
GREEDY_LAYERS = 8
# The widths the sensitivity analysis measures when allocating (fractions of the units).
FRACTIONS = (0.5, 0.25)
# Bisection of the price: at most this many candidates after the bracket is found.
BISECTIONS = 8
# The least a cut predicted to lose nothing counts as losing (pp, for a whole layer).
_LOSS_FLOOR = 0.01


def tied(model, layers):
    """The searched layers as groups cut together: those whose output channels a merge (a
    residual `Add`) couples. A list of lists of layer names, in the model's order."""
    from tfprune.graph import ChannelGroups, LayerGraph

    groups = ChannelGroups(LayerGraph.from_model(model))
    labels = {layer: set(groups.group_of(layer).tolist()) for layer in layers.units}
    result = []
    for layer in layers.units:
        joined = [g for g in result if any(labels[layer] & labels[other] for other in g)]
        merged = [x for g in joined for x in g] + [layer]
        result = [g for g in result if g not in joined] + [merged]
    order = list(layers.units)
    return sorted((sorted(g, key=order.index) for g in result), key=lambda g: order.index(g[0]))


def shares(model, sets, figures=("macs",)):
    """Each group's share of the model's MACs (or parameters) that scale with its channels.

    Args:
        model: The baseline Keras model.
        sets: Groups of layer names (`tied`).
        figures: What a share counts: `"macs"` (speed), `"params"` (size) or both (the
            shares of each, summed), defaults to `("macs",)`.

    Returns:
        A dict of the first layer of each group -> its share.
    """
    from tfprune.bench import counts
    from tfprune.graph import ChannelGroups, LayerGraph

    graph = LayerGraph.from_model(model)
    groups = ChannelGroups(graph)
    rows = counts.count(model).rows
    result = {group[0]: 0.0 for group in sets}
    for figure in figures:
        cost = {row.name: getattr(row, figure) for row in rows}
        total = max(sum(cost.values()), 1)
        for group in sets:
            labels = np.unique(np.concatenate([groups.group_of(layer) for layer in group]))
            share = 0.0
            for node in graph.layers():
                if not cost.get(node.name):
                    continue
                share += cost[node.name] * np.mean(np.isin(groups.group_of(node.name), labels))
                if groups.rules[node.name] == "producer" and node.inputs:  # what it reads
                    share += cost[node.name] * np.mean(
                        np.isin(groups.group_of(node.inputs[0]), labels))
            result[group[0]] += share / total
    return result


def control(tuner, memo, log=None):
    """The validation accuracy of the baseline fine-tuned as every cut is, without a cut.

    A few steps of fine-tuning move a converged model too (a fresh optimizer state, a
    larger learning rate than its last): a MobileNetV2 at 97.3% measured about 95.5% after
    20 steps, whichever group was cut, and by half or a quarter. Measured against the
    baseline, every cut would cost that much at least, and a group once cut might as well
    go to one channel. Kept in `memo` as `"@control"`.
    """
    if "@control" not in memo:
        memo["@control"] = tuner.cut(tuner.start, {})[0]
    if log:
        log(f"sensitivity reference: the baseline fine-tuned as the cuts are, uncut: "
            f"validation accuracy {memo['@control']:.2%}")
    return memo["@control"]


def choose(search, sets, share, price, floors):
    """The widths that minimise predicted loss plus `price` times cost, group by group,
    down to the narrowest width the sensitivity analysis measured (not extrapolated)."""
    widths = {}
    for group in sets:
        leader = group[0]
        units = search.layers.units[leader]
        floor = max([floors[layer] for layer in group]
                    + sensitivity.points(units, FRACTIONS)[-1:])
        options = [w for w in search.layers.grid[leader] if w >= floor] or [units]
        # A cut predicted to lose nothing still costs a little (up to `_LOSS_FLOOR` pp, more
        # for deeper cuts), so that the price cuts just enough, spread over the groups.
        best = min(options, key=lambda w: (
            _loss(search, leader, w) + price * share[leader] * w / units, -w))
        widths.update({layer: best for layer in group})
    return {layer: widths[layer] for layer in search.layers.units}


def allocate(search, sets, share, floors):
    """Bisects the price until the cost goals are met; `(widths, status)` as the greedy's.

    Args:
        search: The searcher (`greedy.Greedy`): its layers, predictor, costs, goals and log.
        sets: Groups of layer names (`tied`).
        share: Dict of each group's leader -> its cost share (`shares`).
        floors: Dict of layer name -> the narrowest width it may take.
    """
    def probe(price):
        widths = choose(search, sets, share, price, floors)
        figures = search.figures(widths)
        search.note(widths, figures, "step")
        unmet = [g for g in search.cost_goals if not g.met(figures)]
        search.log(f"allocate at price {price:.3g}: {_fraction(search, widths):.0%} of the "
                   f"units kept, predicted {-search.predictor.predict(widths):+.2f} pp; "
                   + ", ".join(g.describe(figures) for g in (unmet or search.cost_goals)))
        return widths, not unmet

    full = dict(search.layers.full)
    if search.meets_costs(search.figures(full)):
        return full, "met"
    narrowest = choose(search, sets, share, 1e12, floors)
    low, high, best, missed = 0.0, 1.0, None, full
    while best is None:  # raising the price until it meets every cost goal
        if search.time_left() <= 0:
            return full, "time"
        widths, met = probe(high)
        if met:
            best = widths
        elif widths == narrowest or high > 1e6:
            return widths, "exhausted"
        else:
            low, high, missed = high, high * 4.0, widths
    for _ in range(BISECTIONS):  # then the lowest price that still meets them
        if search.time_left() <= 0 or high / max(low, 1e-12) < 1.05:
            break
        price = math.sqrt(low * high) if low > 0 else high / 4.0
        widths, met = probe(price)
        if widths in (best, missed):  # a stair step: no candidate lies between
            break
        if met:
            high, best = price, widths
        else:
            low, missed = price, widths
    return best, "met"


def fill(search, sets, share, widths):
    """Widens groups back while every cost goal stays met; the widths.

    The price moves in stair steps: asked for 7.2x, mobilenet_tiny's ladder went from 56%
    of its channels kept (too large) to 34% (9.9x) with nothing between. As the greedy's
    fill does, groups are widened one grid step at a time, first the one whose step wins
    back most predicted loss per share of cost it adds, for as long as a measured file
    meets every goal. Only for size and MAC goals: a file's bytes and MACs are computed
    exactly, while a speed goal filled to its bound would be left to timing noise.
    """
    if any(g.figure in candidates.TIMED for g in search.cost_goals):
        return widths
    widths, refused = dict(widths), set()
    while search.time_left() > 0:
        options = []
        for group in sets:
            leader, units = group[0], search.layers.units[group[0]]
            wider = search.layers.wider(widths, leader)
            if wider is None:
                continue
            option = {**widths, **{layer: wider for layer in group}}
            if candidates.name(option) in refused:
                continue
            gain = (_loss(search, leader, widths[leader]) - _loss(search, leader, wider))
            options.append((gain / (share[leader] * (wider - widths[leader]) / units + 1e-12),
                            option))
        for _, option in sorted(options, key=lambda o: -o[0]):
            figures = search.figures(option)
            if search.meets_costs(figures):
                widths = option
                search.note(widths, figures, "fill")
                search.log(f"fill -> {candidates.name(widths)}")
                break
            refused.add(candidates.name(option))
        else:
            return widths
    return widths


def uniform(search, sets, floors, rounds=12):
    """The uniform recipe that meets the cost goals: every group kept at one fraction of its
    units (rounded as `divisible`), the largest fraction (bisected on measured files) whose
    file meets every goal; `None` if none does.

    The allocation trusts sensitivities measured after a few fine-tuning steps, and these
    overstate what a cut costs a group early in the network: mobilenet_tiny's stem, half
    of it cut, lost 0.94 pp after 40 steps, so the allocation kept it whole and the file
    ran 2.1x faster where halving every group ran 3.6x, as accurate once trained. The
    uniform candidate is trained beside the allocation's as a reference (`Greedy.run`).
    """
    def at(fraction):
        widths = {layer: max(divisible(fraction * units, units), floors[layer])
                  for layer, units in search.layers.units.items()}
        for group in sets:  # coupled layers share the widest width
            widths.update({layer: max(widths[m] for m in group) for layer in group})
        return widths

    low, high, best = 0.0, 1.0, None
    for _ in range(rounds):
        if at(low) == at(high):
            break
        middle = (low + high) / 2
        widths = at(middle)
        if search.meets_costs(search.figures(widths)):
            low, best = middle, widths
        else:
            high = middle
    return best


def divisible(width, units, divisor=8):
    """`width` rounded down to a multiple of `divisor` when that keeps at least 90% of it
    (and `units` is a multiple of `divisor`), else to the nearest unit. XNNPACK computes
    channels in tiles: mobilenet_tiny at 16-32-64-64-129 timed 3.5% slower than at
    16-32-64-64-128. Rounding down keeps a cost bound that the exact width met.

    >>> from tfprune.search.allocate import divisible
    >>> divisible(129.3, 256), divisible(26.9, 64), divisible(12.8, 32), divisible(9.5, 20)
    (128, 27, 13, 10)
    """
    down = int(width) // divisor * divisor
    if units % divisor == 0 and down >= max(divisor, 0.9 * width):
        return down
    return int(min(units, max(1, round(width))))


def reference_note(checked, chosen, met_all):
    """What the plan's note says of the uniform candidate (`uniform`), if it was trained."""
    uniform = [c for c in checked if c.get("uniform")]
    if not uniform:
        return ""
    name = uniform[0]["name"]
    if chosen["name"] != name:
        return f"; the uniform candidate {name} was trained too, as the reference"
    why = (" (of those meeting every target, the fewest MACs among the most accurate "
           "within noise)" if len(met_all) > 1 else " (the allocation's missed a target)")
    return f"; the uniform candidate {name}, trained as the reference, is kept{why}"


def _loss(search, leader, width):
    """The loss `choose` weighs: predicted, with the floor a cut costs."""
    units = search.layers.units[leader]
    return search.predictor.loss(leader, width) + _LOSS_FLOOR * (1 - width / units) ** 2


def _fraction(search, widths):
    return sum(widths.values()) / sum(search.layers.units.values())
