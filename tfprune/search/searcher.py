"""`widths`: per-layer widths that meet every target with the least accuracy lost.

The search follows NetAdapt (Yang et al. 2018), with a sensitivity analysis for what it
cannot measure cheaply:

1. **Sensitivity**: each searched layer cut alone to a few widths, briefly fine-tuned,
   measured on the validation split (`sensitivity.measure`): recorded, and the model of
   the accuracy each layer's width costs (`Sensitivity`).
2. **Greedy**: from the full model, each step cuts each layer in turn one grid step
   (about 15%) narrower than the current candidate, fine-tunes each proposal briefly from
   the current candidate's weights (so the path is pruned gradually, as training will
   prune it: `sensitivity.Path`), and takes the proposal that closes most of the gap to
   the unmet cost targets per point of validation accuracy lost. Sizes are those of real
   `.tflite` files (`candidates.Costs`); latency comes from a `LatencyTable` of the model's
   layers timed alone at their widths (kept on disk: the same numbers on a busy machine
   or the next run), calibrated once on whole files, and planned with `latency_margin` to
   spare. Without a latency target, proposals are ranked on estimated bytes and counted
   MACs, and each step taken is measured. It stops when every size, speed and MAC target
   is met.
3. **Fill**: the last grid step overshoots; the layers are widened back as far as every
   target stays met (bisection on measured files), first the layer whose last cut on the
   path lost most accuracy.
4. **Check and back off**: the candidate is trained for real (`check`) and its validation
   accuracy compared with the baseline's, image by image (a paired 95% interval,
   `tfprune.stats`). If it loses more than `max_accuracy_drop` less the validation split's
   margin, the layer whose cuts lost most accuracy along the path (then the one the
   sensitivity model blames most) gets one grid step wider and may not go below that;
   steps 2-4 run again, within the time limit (and `max_checks`). A trained candidate's
   file is timed whole, against the baseline's; if it is slower than the table predicted
   beyond the calibration, the calibration takes it and the search goes on.

The validation split measures a drop only to within its margin: the half-width of the 95%
interval a candidate that loses nothing would get on it (`tfprune.stats.margin_pp`, at the
baseline's accuracy). The search plans against `max_accuracy_drop` less that margin (never
below 0), says so in its log and in `Plan.margin`, and when the margin is as large as the
bound it warns, before any training, with the split size that would resolve the bound.

Every decision uses the validation split; the caller measures the test set once, at the
end. Every measurement goes into a `Trace`, so an interrupted search resumes from the last
one. If no trained candidate meets every target, the result says so and holds the best
one found; it never reports a target as met that a measurement did not meet.
"""

import dataclasses
import hashlib
import json
import math
import sys
import time

import numpy as np

from tfprune import stats
from tfprune.errors import TfpruneError
from tfprune.search import candidates, sensitivity
from tfprune.search.targets import Target
from tfprune.search.trace import Trace

# Predicted losses below this (pp) count as this much: free steps rank by what they save.
_LOSS_FLOOR = 0.01
# In the trace's key: a trace written by another version of the method is not resumed.
_VERSION = "greedy-fill-backoff-table-2"
# The figures only timing a file measures.
_TIMED = ("latency_us", "speedup")


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


def widths(model, train, validation, target, *, granularity="filter", check=None,
           teacher=None, temperature=4.0, distill_weight=0.5, compress=None, export=None,
           bench=None, other_sparsity=0.0, finetune_steps=100, epochs=2, batch_size=128,
           learning_rate=5e-4, optimizer=None, from_logits=None, grid_step=0.85,
           time_limit=1800.0, max_checks=None, trace=None, resume=False, trace_key="", seed=0,
           log=print, margin_pp=None, warn=None, latency_table=None, latency_margin=0.1):
    """Searches per-layer widths that meet `target` with the least predicted accuracy loss.

    See the module docstring for the method. Only the `validation` split decides.

    Args:
        model: The trained baseline Keras model (not changed).
        train: `(x, y)` arrays to fine-tune and train candidates on.
        validation: `(x, y)` arrays every decision is measured on (held out of `train`).
        target: A `Target`, or a dict of `Target.parse` arguments (`size="50x"`, ...).
        granularity: As `tfprune.prune` takes it; the layers pruned at `"filter"` are
            searched. Defaults to `"filter"`.
        check: Function `check(sparsities) -> (compressed model, validation accuracy)`
            training a candidate for real, or `None` for the default: prune over `epochs`
            (sparsity ramping up over the first three quarters of the steps), `epochs`
            more with the masks fixed, then `compress`.
        teacher: A Keras model to distil from (usually `model` itself), or `None`.
        temperature: Float, the distillation temperature, defaults to `4.0`.
        distill_weight: Float, the distillation term's share, defaults to `0.5`.
        compress: Function `compress(model) -> model` run on a cut model, defaults to
            `tfprune.shrink(tfprune.fuse(model))` (exact merges only).
        export: Dict of `tfprune.export.to_tflite` arguments for the candidates' files,
            defaults to `{"quantize": "dynamic", "batch_size": 1}`.
        bench: Dict of `tfprune.bench.compare` arguments for latency, defaults to
            `{"threads": 1, "batch_size": 1, "runs": 1000, "warmup": 100}`.
        other_sparsity: Float, the sparsity of pruned layers that are not searched (not
            `"filter"` granularity), defaults to `0.0`.
        finetune_steps: Integer, fine-tuning steps after each cut (of the sensitivity
            analysis and of each greedy proposal), defaults to `100`.
        epochs: Integer, epochs of each phase of the default `check`, defaults to `2`.
        batch_size: Integer, defaults to `128`.
        learning_rate: Float, of the default optimizer (Adam), defaults to `5e-4`.
        optimizer: Function returning a new Keras optimizer, defaults to Adam.
        from_logits: Boolean, whether the model outputs logits; `None` (the default) reads
            it from the output layer (a softmax outputs probabilities).
        grid_step: Float in (0, 1), each width of a layer's grid is at most this fraction
            of the one above, defaults to `0.85`.
        time_limit: Float, seconds the search may take, defaults to `1800.0`; a trained
            check is started only if the last one would still fit.
        max_checks: Integer, candidates it may train with `check`, or `None` (the default)
            for as many as `time_limit` allows. Unlike time, a count stops the search at
            the same point however busy the machine is.
        trace: Path of the JSON trace (kept up to date as it goes), or `None`.
        resume: Boolean, continue the search recorded in `trace`, defaults to `False`.
        trace_key: String mixed into the trace's key (settings `check` depends on).
        seed: Integer, defaults to `0`.
        log: Function taking a line of progress, or `None` for silence.
        margin_pp: Float, the margin (pp) taken off `max_accuracy_drop` to plan against;
            `None` (the default) takes the validation split's (`tfprune.stats.margin_pp`).
        warn: Function taking the one-line warning that the validation split is too small
            for the bound, defaults to printing it on stderr.
        latency_table: A `LatencyTable` to predict candidates' latency from, `None` (the
            default) for one kept in `tfprune`'s cache with `bench`'s settings, or `False`
            to time every candidate's file whole (the ranking then follows the machine's
            load).
        latency_margin: Float, the share by which a predicted speed must beat its target
            while planning (the table's error on whole files), defaults to `0.1`.

    Returns:
        A `Plan`.

    Raises:
        TfpruneError: an empty validation split, no layer pruned by filters, or a target
            that no width can reach (the smallest model misses it): before any training.

    Example:

    >>> x = np.random.default_rng(0).random((256, 8, 8, 1), dtype="float32")
    >>> y = (x[:, :4].mean(axis=(1, 2, 3)) > x[:, 4:].mean(axis=(1, 2, 3))).astype("int32")
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv"),
    ...     keras.layers.Flatten(), keras.layers.Dense(16, activation="relu", name="fc"),
    ...     keras.layers.Dense(2, activation="softmax", name="out")])
    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> _ = model.fit(x[:192], y[:192], epochs=5, verbose=0)
    >>> plan = tfprune.search.widths(
    ...     model, (x[:192], y[:192]), (x[192:], y[192:]),
    ...     target={"size": "1.8x", "max_accuracy_drop": 100}, finetune_steps=0,
    ...     epochs=1, grid_step=0.5, export={"quantize": "none"}, log=None)
    >>> plan.all_met, plan.figures["bytes"] * 1.8 <= plan.baseline["bytes"]
    (True, True)
    >>> plan.widths != plan.units, plan.layer_sparsity == ",".join(
    ...     f"{layer}:{s:g}" for layer, s in plan.sparsities.items())
    (True, True)
    """
    import keras

    import tfprune

    target = target if isinstance(target, Target) else Target.parse(**dict(target))
    if not len(validation[1]):
        raise TfpruneError("A search decides on a validation split, and this one is empty: "
                           "hold some training data out. Received: validation=0 examples")
    layers = candidates.Layers(model, granularity, grid_step)
    export = dict({"quantize": "dynamic", "batch_size": 1}, **(export or {}))
    bench = dict({"threads": 1, "batch_size": 1, "runs": 1000, "warmup": 100},
                 **(bench or {}))
    compress = compress or (lambda m: tfprune.shrink(tfprune.fuse(m)))
    if from_logits is None:
        from tfprune.distill import ends_in_softmax

        from_logits = not ends_in_softmax(model)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    optimizer = optimizer or (lambda: keras.optimizers.Adam(learning_rate))
    say = log or (lambda line: None)
    exported = {k: v for k, v in export.items() if k != "representative_data"}
    # Not the targets: every measurement holds whatever is asked of it, so a search for
    # another target resumes from this one's trace and measures only what is new.
    key = _key(model, _VERSION, _timed(target), layers.grid, granularity, exported, bench,
               other_sparsity, finetune_steps, epochs, batch_size, learning_rate, seed,
               teacher is not None, temperature, distill_weight, latency_table is not False,
               latency_margin, trace_key)
    record = Trace(trace, key=key, resume=resume)
    if record.resumed:
        say(f"resuming the search recorded in {trace} ({record.elapsed():.0f} s so far)")

    def time_left():
        return time_limit - record.elapsed()

    costs = candidates.Costs(model, layers, granularity, compress, export, bench,
                             other_sparsity, memo=record.section("costs"),
                             estimates=record.section("estimates"), timed=_timed(target),
                             table=_table(latency_table, bench, say) if _timed(target) else None)
    try:
        base = costs.baseline()
        goals = target.goals(base)
        cost_goals = _planned(goals, latency_margin if costs.table is not None else 0.0)
        _refuse_unreachable([g for g in goals if g.figure != "drop_pp"],
                            costs.measure([layers.smallest])[0], layers)
        if costs.table is not None:
            k = costs.calibration()
            say(f"latency: predicted from a table of the layers timed alone "
                f"({costs.table.timed} new entries, {len(costs.table.entries)} in "
                f"{costs.table.path or 'memory'}), calibrated on whole files: latency "
                f"x{k['latency']:.2f}, speedup /{k['speedup']:.2f}; planning "
                + ", ".join(g.describe() for g in cost_goals if g.figure in _TIMED))
        base_right = stats.correct(model, validation)
        base["val_accuracy"] = int(np.sum(base_right)) / len(base_right)
        margin = _margin(target.max_accuracy_drop, base["val_accuracy"], len(base_right),
                         margin_pp)
        goals[-1] = dataclasses.replace(  # the accuracy goal: the bound less the margin
            goals[-1], bound=margin["planned_pp"],
            text=f"{goals[-1].text} less a {margin['margin_pp']:.2f} pp margin")
        say(f"accuracy: planning against {margin['planned_pp']:.2f} pp, max_accuracy_drop="
            f"{margin['bound_pp']:g} pp less the {margin['margin_pp']:.2f} pp margin of "
            f"{margin['validation_images']:,} validation images (95%, paired)")
        if not margin["resolved"]:
            (warn or _warn)(_too_small(margin, base["val_accuracy"]))
        say(f"baseline: {base['bytes']:,} bytes, validation accuracy "
            f"{base['val_accuracy']:.2%}; searching {dict(layers.units)}")
        tuner = sensitivity.Tuner(
            model, layers, train, validation, steps=finetune_steps, batch_size=batch_size,
            optimizer=optimizer, loss=loss, teacher=teacher, temperature=temperature,
            weight=distill_weight, from_logits=from_logits, seed=seed)
        memo = sensitivity.measure(tuner, record.section("sensitivity"), time_left, say)
        predictor = sensitivity.Sensitivity(layers, base["val_accuracy"], memo)
        path = sensitivity.Path(tuner, base["val_accuracy"], record.section("path"))
        if check is None:
            def check(sparsities):
                return _default_check(model, sparsities, granularity, other_sparsity, train,
                                      validation, compress, epochs, batch_size, optimizer,
                                      loss, teacher, temperature, distill_weight,
                                      from_logits, seed)
        search = _Search(layers, costs, cost_goals, goals, predictor, path, base, check,
                         record, time_left, say, base_right=base_right,
                         validation=validation, max_checks=max_checks)
        plan = search.run()
        plan.margin = margin
        plan.note += (f"; accuracy planned against {margin['planned_pp']:.2f} pp "
                      f"({margin['bound_pp']:g} pp less the validation split's "
                      f"{margin['margin_pp']:.2f} pp margin)")
    finally:
        costs.close()
    plan.sensitivity = dict(record.section("sensitivity"))
    plan.seconds = round(record.elapsed(), 1)
    record.set("plan", plan.to_dict())
    return plan


def check_target(model, target, *, granularity="filter", compress=None, export=None,
                 bench=None, other_sparsity=0.0, grid_step=0.85, latency_table=None):
    """Raises if no width can reach `target`: the smallest model misses a size, speed or MAC
    target. Loads no data and trains nothing (the weights do not change a file's cost).

    Args:
        model: The Keras model to search (trained or not), and the rest as `widths`.

    Raises:
        TfpruneError: the target is out of reach, or no layer is pruned by filters.
    """
    import tfprune

    target = target if isinstance(target, Target) else Target.parse(**dict(target))
    layers = candidates.Layers(model, granularity, grid_step)
    export = dict({"quantize": "dynamic", "batch_size": 1}, **(export or {}))
    bench = dict({"threads": 1, "batch_size": 1, "runs": 1000, "warmup": 100},
                 **(bench or {}))
    compress = compress or (lambda m: tfprune.shrink(tfprune.fuse(m)))
    costs = candidates.Costs(model, layers, granularity, compress, export, bench,
                             other_sparsity, timed=_timed(target),
                             table=_table(latency_table, bench, None) if _timed(target) else None)
    try:
        goals = [g for g in target.goals(costs.baseline()) if g.figure != "drop_pp"]
        _refuse_unreachable(goals, costs.measure([layers.smallest])[0], layers)
    finally:
        costs.close()


class _Search:
    """The greedy, fill, check and back-off loop of `widths` (see the module docstring)."""

    def __init__(self, layers, costs, cost_goals, goals, predictor, path, base, check,
                 record, time_left, log, base_right=None, validation=None, max_checks=None):
        self.layers, self.costs, self.predictor, self.path = layers, costs, predictor, path
        self.base_right, self.validation = base_right, validation  # to pair checked models
        self.cost_goals, self.goals, self.base = cost_goals, goals, base
        self.check, self.record, self.time_left, self.log = check, record, time_left, log
        self.max_checks = max_checks
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
            timed = any(g.figure in _TIMED for g in unmet)
            measured = (self.costs.measure if timed else self.costs.estimate)(proposals)
            before = self.path.accuracy(current)
            scores = []
            for (layer, width), after in zip(cuts, measured, strict=True):
                gained = sum(g.shortfall(figures) - g.shortfall(after) for g in unmet)
                # Ties (e.g. a latency already at the interpreter's floor) go to the
                # proposal that saves most MACs and bytes.
                gained += 1e-3 * (math.log(figures["macs"] / max(after["macs"], 1))
                                  + math.log(figures["bytes"] / after["bytes"]))
                lost = max(100.0 * (before - self.path.step(current, layer, width)), 0.0)
                scores.append(gained / (lost + _LOSS_FLOOR))
            current = proposals[int(np.argmax(scores))]
            chain.append(current)
            self.path.keep(chain)
            paired = self.path.paired(current)
            self.log(f"step -> {candidates.name(current)}: validation "
                     f"{self.path.accuracy(current):.2%} after fine-tuning"
                     + (f", {paired.text()}" if paired else "") + "; "
                     + ", ".join(g.describe(self.figures(current)) for g in unmet))

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
        if not any(g.figure in _TIMED for g in self.cost_goals):
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
            table = self._table(model, accuracy)
            if table is not None:
                result["table"] = table
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

    def _table(self, model, accuracy):
        """The paired counts of a checked model against the baseline on the validation
        images, or `None` (no model, or one whose answers do not give `accuracy`)."""
        if model is None or self.base_right is None:
            return None
        right = stats.correct(model, self.validation)
        if abs(int(np.sum(right)) / len(right) - accuracy) > 1e-9:
            return None
        return list(stats.paired(self.base_right, right).table)

    def run(self):
        floors = {layer: 1 for layer in self.layers.units}
        checked, status = [], "met"
        while True:
            end, status = self.greedy(floors)
            widths = self.fill(end, floors) if status == "met" else end
            name = candidates.name(widths)
            if status != "met" or name in [c["name"] for c in checked]:
                break
            durations = [c["seconds"] for c in self.record.section("checks").values()]
            if self.max_checks is not None and len(checked) >= self.max_checks:
                status = "checks"
                break
            if name not in self.record.section("checks") and (
                    self.time_left() <= 0 or (durations and self.time_left() < max(durations))):
                status = "time"  # a check would not end within the time limit
                break
            row = self.note(widths, self.train(widths), "checked")
            row["role"] = "checked"
            checked.append({**row, "seconds": self.record.section("checks")[name]["seconds"]})
            missed = [g for g in self.goals if not g.met(row["figures"])]
            if not missed:
                break
            if (any(g.figure in _TIMED for g in missed) and self.costs.table is not None
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
        met_all = [c for c in checked if all(g.met(c["figures"]) for g in self.goals)]
        if met_all:
            chosen = met_all[0]
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
        return Plan(widths=dict(widths), units=dict(self.layers.units),
                    sparsities=self.layers.sparsities(widths), figures=figures,
                    baseline=dict(self.base), goals=self.goals, met=met, all_met=all_met,
                    checked=chosen["name"] in self.record.section("checks"),
                    model=self.trained.get(chosen["name"]),
                    candidates=list(self.seen.values()), note=note,
                    measured=sum(key != "baseline" and "@" not in key
                                 for key in self.costs.memo))


def _table(table, bench, log):
    """The `LatencyTable` `widths` predicts latency with (see its `latency_table`)."""
    if table is not None:
        return table or None
    from tfprune.search.latency_table import LatencyTable

    return LatencyTable(threads=bench["threads"], batch_size=bench["batch_size"],
                        runs=bench["runs"], warmup=bench["warmup"], log=log)


def _planned(goals, margin):
    """The cost goals to plan against: speed and latency `margin` beyond their targets."""
    planned = []
    for g in goals:
        if g.figure == "drop_pp":
            continue
        if margin and g.figure in _TIMED:
            bound = g.bound * (1 + margin) if g.at_least else g.bound / (1 + margin)
            g = dataclasses.replace(g, bound=bound, text=f"{g.text} + {margin:.0%} margin")
        planned.append(g)
    return planned


def _margin(bound_pp, accuracy, images, margin_pp=None):
    """The accuracy bound to plan against: `bound_pp` less the validation split's margin."""
    discordance = min(1.0 - accuracy, 2.0 * accuracy)  # stats.margin_pp's rule of thumb
    margin = stats.margin_pp(images, accuracy) if margin_pp is None else float(margin_pp)
    return {"bound_pp": bound_pp, "margin_pp": margin,
            "planned_pp": max(bound_pp - margin, 0.0), "validation_images": images,
            "discordance": discordance, "confidence": stats.CONFIDENCE,
            "needed_images": stats.split_size(bound_pp, accuracy),
            "resolved": margin < bound_pp}


def _too_small(margin, accuracy):
    """The one line saying the validation split cannot resolve the bound, and what would."""
    needed = margin["needed_images"]
    would = (f"about {needed:,} validation images would resolve it" if needed
             else "no split resolves a bound of 0 pp")
    return (f"the validation split ({margin['validation_images']:,} images) cannot resolve "
            f"max_accuracy_drop={margin['bound_pp']:g} pp: at {accuracy:.2%} accuracy it "
            f"measures a drop to ±{margin['margin_pp']:.2f} pp (95%); {would} (a larger "
            f"--validation_split or dataset); the search plans against "
            f"{margin['planned_pp']:.2f} pp")


def _warn(line):
    print(f"tfprune: warning: {line}", file=sys.stderr, flush=True)


def _refuse_unreachable(goals, smallest, layers):
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


def _timed(target):
    return target.speedup is not None or target.latency_us is not None


def _default_check(model, sparsities, granularity, other_sparsity, train, validation,
                   compress, epochs, batch_size, optimizer, loss, teacher, temperature,
                   weight, from_logits, seed):
    """Prunes over `epochs`, fine-tunes `epochs` with masks fixed, compresses; accuracy."""
    import keras

    import tfprune
    from tfprune.distill import Distiller

    x, y = train
    steps = max(1, math.ceil(len(y) / batch_size) * epochs)
    frequency = max(1, steps // 10)
    end = tfprune.pruning.schedules.end_step(steps, frequency)
    schedule = tfprune.PolynomialDecay(0.0, other_sparsity, begin_step=0, end_step=end,
                                       frequency=frequency)
    wrapped = tfprune.prune(model, schedule, granularity=granularity, sparsities=sparsities)
    trainer = wrapped if teacher is None else Distiller(
        wrapped, teacher, temperature=temperature, weight=weight, from_logits=from_logits)
    trainer.compile(optimizer=optimizer(), loss=loss)
    keras.utils.set_random_seed(seed)
    # Pruning to the end sparsity, then `epochs` more with the masks where they ended.
    trainer.fit(x, y, batch_size=batch_size, epochs=2 * epochs, shuffle=True, verbose=0,
                callbacks=[tfprune.UpdatePruningStep(), tfprune.AdaptiveBatchNorm(x)])
    compressed = compress(tfprune.strip(wrapped))
    return compressed, stats.accuracy(compressed, validation)


def _key(model, *settings):
    """The trace's key: the settings and a digest of the model's weights."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    plain = json.dumps([repr(s) if not isinstance(s, (str, int, float, bool, type(None)))
                        else s for s in settings], sort_keys=True)
    return hashlib.sha256((plain + digest.hexdigest()).encode()).hexdigest()[:16]
