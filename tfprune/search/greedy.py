"""The greedy, fill, check and back-off loop of `widths` (`Greedy`), with the margin the
validation split's size allows.
"""

import dataclasses
import math
import sys
import time

import numpy as np

from tfprune import stats
from tfprune.errors import TfpruneError
from tfprune.search import allocate, candidates
from tfprune.search.candidates import TIMED
from tfprune.search.plan import Plan

# Predicted losses below this (pp) count as this much: free steps rank by what they save.
LOSS_FLOOR = 0.01


class Greedy:
    """The greedy, fill, check and back-off loop of `widths` (see the module docstring)."""

    def __init__(self, layers, costs, cost_goals, goals, predictor, path, base, check,
                 record, time_left, log, base_right=None, validation=None, max_checks=None,
                 sets=None, shares=None):
        self.layers, self.costs, self.predictor, self.path = layers, costs, predictor, path
        self.base_right, self.validation = base_right, validation  # to pair checked models
        self.cost_goals, self.goals, self.base = cost_goals, goals, base
        self.check, self.record, self.time_left, self.log = check, record, time_left, log
        self.max_checks = max_checks
        self.sets, self.shares = sets, shares  # with them, `allocate` replaces the greedy
        self.seen = {}  # candidate name -> its row in Plan.candidates
        self.trained = {}  # candidate name -> compressed model, checked in this process

    def figures(self, widths):
        return self.costs.measure([widths])[0]

    def meets_costs(self, figures):
        return all(g.met(figures) for g in self.cost_goals)

    def note(self, widths, figures, role):
        name = candidates.name(widths)
        row = self.seen.setdefault(name, {"name": name, "widths": dict(widths),
                                          "predicted_drop_pp": self.predictor.predict(widths)})
        row["figures"] = {**row.get("figures", {}), **figures}
        row["role"] = "checked" if row.get("role") == "checked" else role
        return row

    def greedy(self, floors):
        """Narrows from the full model until the cost goals are met; `(widths, status)`.

        Each step cuts each layer in turn one grid step below the current candidate,
        fine-tunes each proposal from the current candidate's weights (`Path`), and takes
        the one that closes most of the gap to the unmet cost goals per point of
        validation accuracy it loses.
        """
        current, chain = self.layers.full, [self.layers.full]
        while True:
            figures = self.figures(current)
            row = self.note(current, figures, "step")
            row["tuned_val_accuracy"] = self.path.accuracy(current)
            paired = self.path.paired(current)  # against the baseline, image by image
            if paired is not None:
                row.update(tuned_drop_pp=paired.drop_pp, tuned_drop_ci_pp=list(paired.ci_pp))
            unmet = [g for g in self.cost_goals if not g.met(figures)]
            if not unmet:
                return current, "met"
            if self.time_left() <= 0:
                return current, "time"
            cuts = [(layer, self.layers.narrower(current, layer, floors[layer]))
                    for layer in self.layers.units]
            cuts = [(layer, width) for layer, width in cuts if width is not None]
            if not cuts:
                return current, "exhausted"
            proposals = [{**current, layer: width} for layer, width in cuts]
            # Latency is only known by timing the files; bytes and MACs rank well estimated
            # (the step taken is measured when the loop comes round).
            timed = any(g.figure in TIMED for g in unmet)
            measured = (self.costs.measure if timed else self.costs.estimate)(proposals)
            cuts, proposals, measured = self._just_enough(current, cuts, proposals, measured,
                                                          unmet)
            before = self.path.accuracy(current)
            scores = []
            for (layer, width), after in zip(cuts, measured, strict=True):
                gained = sum(g.shortfall(figures) - g.shortfall(after) for g in unmet)
                # Ties (e.g. a latency already at the interpreter's floor) go to the
                # proposal that saves most MACs and bytes.
                gained += 1e-3 * (math.log(figures["macs"] / max(after["macs"], 1))
                                  + math.log(figures["bytes"] / after["bytes"]))
                lost = max(100.0 * (before - self.path.step(current, layer, width)), 0.0)
                scores.append(gained / (lost + LOSS_FLOOR))
            current = proposals[int(np.argmax(scores))]
            chain.append(current)
            self.path.keep(chain)
            paired = self.path.paired(current)
            self.log(f"step -> {candidates.name(current)}: validation "
                     f"{self.path.accuracy(current):.2%} after fine-tuning"
                     + (f", {paired.text()}" if paired else "") + "; "
                     + ", ".join(g.describe(self.figures(current)) for g in unmet))

    def _just_enough(self, current, cuts, proposals, measured, unmet):
        """The last step's cuts, each only as deep as meeting the cost goals needs.

        A grid step overshoots: from LeNet-5's 11-21-66 (1,594 bytes over its budget) the
        grid's conv1 11 -> 8 met the size, and so does conv2 21 -> 19 (the grid offered
        21 -> 16), which lost less on validation. A proposal that meets every unmet goal is
        widened back to the widest width that still meets them all (bisection on measured
        files), so the step compares the cuts that just suffice.
        """
        result = [list(cuts), list(proposals), list(measured)]
        for i, ((layer, width), after) in enumerate(zip(cuts, measured, strict=True)):
            if not all(g.met(after) for g in unmet):
                continue
            wide = self._widest(current, layer, width, current[layer] - 1)
            if wide != width:
                option = {**current, layer: wide}
                result[0][i], result[1][i], result[2][i] = ((layer, wide), option,
                                                            self.figures(option))
        return result

    def fill(self, widths, floors):
        """Widens layers back, costs still met: first the layer whose last cut on the path
        lost most, then where the sensitivity model predicts most back."""
        last_cut = {layer: cuts[0][2] if cuts else 0.0
                    for layer, cuts in self.path.losses(widths).items()}
        widths = dict(widths)
        while self.time_left() > 0:
            best = None
            for layer, units in self.layers.units.items():
                top = self.layers.wider(widths, layer)
                if top is None:
                    continue
                wide = self._widest(widths, layer, widths[layer], top)
                if wide == widths[layer]:
                    continue
                option = {**widths, layer: wide}
                gain = self.predictor.predict(widths) - self.predictor.predict(option)
                rank = (last_cut[layer], gain, -wide / units)
                if best is None or rank > best[0]:
                    best = (rank, option)
            if best is None:
                return widths
            widths = best[1]
            self.note(widths, self.figures(widths), "fill")
            self.log(f"fill -> {candidates.name(widths)}")
        return widths

    def _widest(self, widths, layer, low, high):
        """The widest width in [low, high] of `layer` that keeps every cost goal met.

        Without latency goals, the bisection runs on estimated figures first and the width
        it finds is measured; it falls back to measuring when the estimate was too kind.
        """
        if not any(g.figure in TIMED for g in self.cost_goals):
            guess_low, guess_high = low, high
            while guess_low < guess_high:
                mid = (guess_low + guess_high + 1) // 2
                if self.meets_costs(self.costs.estimate([{**widths, layer: mid}])[0]):
                    guess_low = mid
                else:
                    guess_high = mid - 1
            if self.meets_costs(self.figures({**widths, layer: guess_low})):
                return guess_low
            high = guess_low - 1
        while low < high:
            mid = (low + high + 1) // 2
            figures = self.figures({**widths, layer: mid})
            if self.meets_costs(figures):
                low = mid
            else:
                high = mid - 1
        return low

    def train(self, widths):
        """Trains `widths` with `check` (once: the trace keeps the result); its figures."""
        name = candidates.name(widths)
        checks = self.record.section("checks")
        if name not in checks:
            start = time.monotonic()
            self.log(f"training {name} to check it ...")
            model, accuracy = self.check(self.layers.sparsities(widths))
            self.trained[name] = model
            result = {"val_accuracy": float(accuracy),
                      "seconds": round(time.monotonic() - start, 1)}
            right = self._right(model, accuracy)
            if right is not None:
                result["table"] = list(stats.paired(self.base_right, right).table)
                # Per image, to pair two checked candidates with each other (`_preferred`).
                result["right"] = np.packbits(right).tobytes().hex()
            if model is not None:  # the trained model's own file: what the run will export
                result["cost"] = self.costs.measure_model(f"{name}@trained", model)
            checks[name] = result
        result = checks[name]
        figures = {**result.get("cost", {}), "val_accuracy": result["val_accuracy"],
                   "drop_pp": 100.0 * (self.base["val_accuracy"] - result["val_accuracy"])}
        paired = stats.PairedDrop.of(*result["table"]) if result.get("table") else None
        if paired is not None:
            figures.update(drop_ci_pp=list(paired.ci_pp), discordant=[paired.lost,
                                                                      paired.gained])
        planned = self.figures(widths)
        if result.get("cost") and result["cost"]["params"] != planned["params"]:
            self.log(f"warning: trained {name} has {result['cost']['params']:,} parameters, "
                     f"not the {planned['params']:,} planned: its pruning schedule did not "
                     "reach its final sparsity (more pruning steps, or a lower frequency); "
                     "its own figures count")
        change = paired.text() if paired else f"{-figures['drop_pp']:+.2f} pp"
        self.log(f"checked {name}: validation accuracy {figures['val_accuracy']:.2%}, "
                 f"{change}; predicted {-self.predictor.predict(widths):+.2f} pp; planned "
                 f"to lose at most {self.goals[-1].bound:.2f} pp")
        if figures.get("table_speedup") and figures.get("speedup"):
            predicted = figures["table_speedup"] / self.costs.calibration()["speedup"]
            figures["table_error"] = predicted / figures["speedup"] - 1.0
            self.log(f"latency of {name}: the table predicted {predicted:.2f}x (calibrated), "
                     f"its file timed whole {figures['speedup']:.2f}x: "
                     f"{figures['table_error']:+.0%}")
        return figures

    def _right(self, model, accuracy):
        """Whether a checked model classifies each validation image right, or `None` (no
        model, or one whose answers do not give `accuracy`)."""
        if model is None or self.base_right is None:
            return None
        right = np.asarray(stats.correct(model, self.validation), bool)
        return right if abs(int(np.sum(right)) / len(right) - accuracy) <= 1e-9 else None

    def _preferred(self, rows):
        """Of candidates that meet every target, the one to keep: the fewest MACs (then
        bytes) among those the validation split cannot tell from the most accurate (paired
        95% interval); a candidate without per-image answers competes on its accuracy."""
        checks = self.record.section("checks")
        best = max(rows, key=lambda c: c["figures"]["val_accuracy"])

        def answers(row):  # per image, from the trace; None if not recorded
            hexed = checks.get(row["name"], {}).get("right")
            bits = None if hexed is None else np.frombuffer(bytes.fromhex(hexed), np.uint8)
            return None if bits is None else np.unpackbits(bits)[:len(self.base_right)] > 0

        def tied(row):
            a, b = answers(best), answers(row)
            if row is best or a is None or b is None:
                return row["figures"]["val_accuracy"] >= best["figures"]["val_accuracy"]
            return stats.paired(a, b).ci_pp[0] <= 0  # not worse beyond noise
        return min((c for c in rows if tied(c)),
                   key=lambda c: (c["figures"]["macs"], c["figures"]["bytes"]))

    def run(self):
        floors = {layer: 1 for layer in self.layers.units}
        checked, status = [], "met"
        while True:
            if self.sets:
                end, status = allocate.allocate(self, self.sets, self.shares, floors)
                widths = (allocate.fill(self, self.sets, self.shares, end) if status == "met"
                          else end)
            else:
                end, status = self.greedy(floors)
                widths = self.fill(end, floors) if status == "met" else end
            name = candidates.name(widths)
            if status != "met" or name in [c["name"] for c in checked]:
                break
            status = self._no_room(name, checked) or status
            if status != "met":
                break
            if self._slower_whole(widths):
                continue  # recalibrated on the file itself: plan again before training
            row = self._checked(widths, checked)
            if self.sets and len(checked) == 1:
                self._reference(checked, floors)
            missed = [g for g in self.goals if not g.met(row["figures"])]
            if not missed or any(self._meets(c) for c in checked):
                break
            if (any(g.figure in TIMED for g in missed) and self.costs.table is not None
                    and self.costs.recalibrate(row["figures"])):
                self.log(f"trained {name} misses {missed[0].describe(row['figures'])}: its "
                         f"file is slower than the table predicted "
                         f"({row['figures'].get('table_error', 0):+.0%}, calibrated); "
                         "recalibrated "
                         f"{self.costs.calibration()}, searching again")
                continue
            if any(g.figure != "drop_pp" for g in missed):
                status = "cost"  # widening cannot mend it
                self.log(f"trained {name} misses {missed[0].describe(row['figures'])}, which "
                         "its plan met")
                break
            if self.max_checks is not None and len(checked) >= self.max_checks:
                status = "checks"  # no check left for what a back-off would find
                break
            layer = self._most_sensitive(widths, end)
            if layer is None:
                status = "exhausted"
                break
            floors[layer] = self.layers.wider(widths, layer)
            self.log(f"{name} loses {row['figures']['drop_pp']:.2f} pp > "
                     f"{self.goals[-1].bound:.2f} pp ({self.goals[-1].text}): widening "
                     f"{layer} to at least "
                     f"{floors[layer]} and searching again")
        return self._plan(checked, widths, status)

    def _checked(self, widths, checked):
        """Trains `widths` (`train`), notes it and appends its row to `checked`; the row."""
        row = self.note(widths, self.train(widths), "checked")
        row["role"] = "checked"
        seconds = self.record.section("checks")[candidates.name(widths)]["seconds"]
        checked.append({**row, "seconds": seconds})
        return row

    def _no_room(self, name, checked):
        """Why `name` may not be trained now: `"checks"` (all used), `"time"` (a check would
        not end in time; one the trace holds costs nothing), or `None`."""
        if self.max_checks is not None and len(checked) >= self.max_checks:
            return "checks"
        durations = [c["seconds"] for c in self.record.section("checks").values()]
        if name not in self.record.section("checks") and (
                self.time_left() <= 0 or (durations and self.time_left() < max(durations))):
            return "time"
        return None

    def _meets(self, row):
        return all(g.met(row["figures"]) for g in self.goals)

    def _reference(self, checked, floors):
        """Trains the uniform candidate (`allocate.uniform`) beside the allocation's first,
        when the checks and the time allow: the allocation's sensitivities, after a few
        fine-tuning steps, may misjudge a group that full training would recover."""
        if self._no_room(None, checked) == "checks":
            self.log("the uniform candidate is not trained: no check left")
            return
        for _ in range(3):  # planned again while its file is slower whole than the table said
            widths = allocate.uniform(self, self.sets, floors)
            if widths is None or not self._slower_whole(widths):
                break
        else:
            widths = None
        name = widths and candidates.name(widths)
        if widths is None or name in [c["name"] for c in checked]:
            return
        if self._no_room(name, checked):
            self.log(f"the uniform candidate {name} is not trained: no time left")
            return
        self.log(f"the uniform candidate {name} (every group at one fraction) is trained "
                 "too, as the allocation's reference")
        self.note(widths, self.figures(widths), "step")  # its file's figures, as any step's
        row = self._checked(widths, checked)
        row["uniform"] = checked[-1]["uniform"] = True

    def _slower_whole(self, widths):
        """Times the candidate's file whole, against the baseline's, before it is trained.

        The table sums layers timed alone, and one calibration factor (from the full-width
        file) cannot follow what a narrowed file pays at its edges: a MobileNetV2 planned at
        2.32x timed 2.02x whole. Whether the file missed a planned speed or latency goal
        (its margin included) and the calibration took it, so that the plan is made again.
        The table keeps the timing and the new calibration: a second search repeats this
        one's decisions.
        """
        if self.costs.table is None or not any(g.figure in TIMED for g in self.cost_goals):
            return False
        name = candidates.name(widths)
        whole = self.costs.whole(widths)
        missed = [g for g in self.cost_goals if g.figure in TIMED and g.met(whole) is False]
        predicted = self.figures(widths)
        self.log(f"{name} before training, its file timed whole: {whole['speedup']:.2f}x "
                 f"(the table predicted {predicted['speedup']:.2f}x, calibrated)"
                 + (f"; misses {missed[0].describe(whole)}" if missed else ""))
        if missed and self.costs.recalibrate(whole):
            self.log(f"recalibrated {self.costs.calibration()} on {name}'s file, planning again")
            return True
        return False

    def _most_sensitive(self, widths, end):
        """The layer to widen: the one whose cuts lost most along the path to `end` (the
        greedy's last step), then the largest predicted loss, then the smallest fraction
        kept; among those that can still widen."""
        lost = {layer: sum(loss for _, _, loss in cuts)
                for layer, cuts in self.path.losses(end).items()}
        options = [(lost[layer], self.predictor.loss(layer, width),
                    -width / self.layers.units[layer], layer)
                   for layer, width in widths.items()
                   if self.layers.wider(widths, layer) is not None]
        return max(options)[-1] if options else None

    def _plan(self, checked, last, status):
        met_all = [c for c in checked if self._meets(c)]
        if met_all:
            chosen = self._preferred(met_all)
        elif checked:  # the fewest targets missed, then the smallest drop
            chosen = min(checked, key=lambda c: (
                sum(not g.met(c["figures"]) for g in self.goals), c["figures"]["drop_pp"]))
        else:
            chosen = self.note(last, self.figures(last), "step")
        widths = chosen["widths"]
        figures = {**self.figures(widths), **chosen.get("figures", {}),
                   "predicted_drop_pp": self.predictor.predict(widths)}
        if chosen.get("tuned_val_accuracy") is not None:
            figures["tuned_val_accuracy"] = chosen["tuned_val_accuracy"]
        met = {g.name: g.met(figures) for g in self.goals}
        all_met = all(met.values())
        if all_met:
            note = f"{chosen['name']} meets every target"
        else:
            missed = [g.describe(figures) for g in self.goals if not g.met(figures)]
            unknown = [g.name for g in self.goals if g.met(figures) is None]
            why = {"time": "the search time ran out", "exhausted": "no width is left to try",
                   "checks": f"it trained the {self.max_checks} candidate(s) allowed",
                   "met": "no trained candidate met the accuracy bound",
                   "cost": "the trained candidate did not keep its planned widths: its "
                           "pruning schedule ended short of its final sparsity"}[status]
            note = (f"No candidate meets all targets ({why}): the best found is "
                    f"{chosen['name']}" + (f"; missed: {'; '.join(missed)}" if missed else "")
                    + (f"; not measured: {', '.join(unknown)}" if unknown else ""))
        note += allocate.reference_note(checked, chosen, met_all)
        return Plan(widths=dict(widths), units=dict(self.layers.units),
                    sparsities=self.layers.sparsities(widths), figures=figures,
                    baseline=dict(self.base), goals=self.goals, met=met, all_met=all_met,
                    checked=chosen["name"] in self.record.section("checks"),
                    model=self.trained.get(chosen["name"]),
                    candidates=list(self.seen.values()), note=note,
                    measured=sum(key != "baseline" and "@" not in key
                                 for key in self.costs.memo))


def latency_table_for(table, bench, log):
    """The `LatencyTable` `widths` predicts latency with (see its `latency_table`)."""
    if table is not None:
        return table or None
    from tfprune.search.latency_table import LatencyTable

    return LatencyTable(threads=bench["threads"], batch_size=bench["batch_size"],
                        runs=bench["runs"], warmup=bench["warmup"], log=log)


def planned(goals, margin):
    """The cost goals to plan against: speed and latency `margin` beyond their targets."""
    planned = []
    for g in goals:
        if g.figure == "drop_pp":
            continue
        if margin and g.figure in TIMED:
            bound = g.bound * (1 + margin) if g.at_least else g.bound / (1 + margin)
            g = dataclasses.replace(g, bound=bound, text=f"{g.text} + {margin:.0%} margin")
        planned.append(g)
    return planned


def margin_of(bound_pp, accuracy, images, margin_pp=None):
    """The accuracy bound to plan against: `bound_pp` less the validation split's margin."""
    discordance = min(1.0 - accuracy, 2.0 * accuracy)  # stats.margin_pp's rule of thumb
    margin = stats.margin_pp(images, accuracy) if margin_pp is None else float(margin_pp)
    return {"bound_pp": bound_pp, "margin_pp": margin,
            "planned_pp": max(bound_pp - margin, 0.0), "validation_images": images,
            "discordance": discordance, "confidence": stats.CONFIDENCE,
            "needed_images": stats.split_size(bound_pp, accuracy),
            "resolved": margin < bound_pp}


def too_small(margin, accuracy):
    """The one line saying the validation split cannot resolve the bound, and what would."""
    needed = margin["needed_images"]
    would = (f"about {needed:,} validation images would resolve it" if needed
             else "no split resolves a bound of 0 pp")
    return (f"the validation split ({margin['validation_images']:,} images) cannot resolve "
            f"max_accuracy_drop={margin['bound_pp']:g} pp: at {accuracy:.2%} accuracy it "
            f"measures a drop to ±{margin['margin_pp']:.2f} pp (95%); {would} (a larger "
            f"--validation_split or dataset); the search plans against "
            f"{margin['planned_pp']:.2f} pp")


def warn_line(line):
    print(f"tfprune: warning: {line}", file=sys.stderr, flush=True)


def refuse_unreachable(goals, smallest, layers):
    """Raises if the smallest model (one unit per searched layer) misses a cost goal.

    A latency or speed goal counts as out of reach only if the smallest model missed it in
    90% of the timed rounds (its 10th percentile latency, its 90th percentile speedup), so
    that a noisy machine does not refuse a reachable target.
    """
    for goal in goals:
        figures = dict(smallest)
        if goal.figure == "speedup":
            figures["speedup"] = smallest.get("speedup_p90", smallest.get("speedup"))
        if goal.figure == "latency_us":
            figures["latency_us"] = smallest.get("latency_p10_us", smallest.get("latency_us"))
        if goal.met(figures) is False:
            flag = {"size": "target_size", "speedup": "target_speedup",
                    "latency": "target_latency", "macs": "target_macs"}[goal.name]
            value = smallest[goal.figure]
            shown = f"{value:.1f}x" if goal.figure == "speedup" else f"{value:,.0f}"
            raise TfpruneError(
                f"No width can reach {goal.describe()}: the smallest model "
                f"({dict(layers.smallest)} units) has {shown} {goal.figure}. Ask for less. "
                f"Received: {flag}={goal.text!r}")


def timed(target):
    return target.speedup is not None or target.latency_us is not None


