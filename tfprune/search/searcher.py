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
   steps 2-4 run again, within the time limit (and `max_checks`). Before a candidate is
   trained, its file is timed whole against the baseline's (kept in the table's file); if
   it misses a planned speed, the calibration takes it and the widths are planned again.
   A trained candidate's file is timed whole too; if it is slower than the table predicted
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

import numpy as np

from tfprune import options, stats
from tfprune.errors import TfpruneError
from tfprune.search import allocate, candidates, sensitivity
from tfprune.search.greedy import (
    TIMED,
    Greedy,
    latency_table_for,
    margin_of,
    planned,
    refuse_unreachable,
    timed,
    too_small,
    warn_line,
)
from tfprune.search.targets import Target
from tfprune.search.trace import Trace

# In the trace's key: a trace written by another version of the method is not resumed.
_VERSION = "greedy-fill-backoff-table-uniform-5"


def widths(model, train, validation, target, *, granularity="filter", check=None,
           teacher=None, temperature=4.0, distill_weight=0.5, compress=None, export=None,
           bench=None, other_sparsity=0.0, finetune_steps=100, epochs=2, batch_size=128,
           learning_rate=5e-4, optimizer=None, from_logits=None, grid_step=0.85,
           time_limit=1800.0, max_checks=None, method="auto", trace=None, resume=False,
           trace_key="", seed=0,
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
        method: `"greedy"` (one layer a step), `"allocate"` (every channel group at once:
            `allocate`) or `"auto"` (the default: allocate above `allocate.GREEDY_LAYERS`
            searched layers).
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

    target = target if isinstance(target, Target) else Target.parse(**dict(target))
    if method not in options.SEARCH_METHODS:
        raise TfpruneError(f"The search method is one of {', '.join(options.SEARCH_METHODS)}. "
                           f"Received: method={method!r}")
    if not len(validation[1]):
        raise TfpruneError("A search decides on a validation split, and this one is empty: "
                           "hold some training data out. Received: validation=0 examples")
    layers = candidates.Layers(model, granularity, grid_step)
    export, bench, compress = _defaults(export, bench, compress)
    if from_logits is None:
        from tfprune.distill import ends_in_softmax

        from_logits = not ends_in_softmax(model)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    optimizer = optimizer or (lambda: keras.optimizers.Adam(learning_rate))
    say = log or (lambda line: None)
    exported = {k: v for k, v in export.items() if k != "representative_data"}
    # Not the targets: every measurement holds whatever is asked of it, so a search for
    # another target resumes from this one's trace and measures only what is new.
    many = method == "allocate" or (  # ranked all at once, not greedily
        method == "auto" and len(layers.units) > allocate.GREEDY_LAYERS)
    sets = allocate.tied(model, layers) if many else None
    key = _key(model, _VERSION, timed(target), layers.grid, granularity, exported, bench,
               other_sparsity, finetune_steps, epochs, batch_size, learning_rate, seed,
               teacher is not None, temperature, distill_weight, latency_table is not False,
               latency_margin, trace_key, *(["allocate", allocate.FRACTIONS] if many else []))
    record = Trace(trace, key=key, resume=resume)
    if record.resumed:
        say(f"resuming the search recorded in {trace} ({record.elapsed():.0f} s so far)")

    def time_left():
        return time_limit - record.elapsed()

    costs = candidates.Costs(model, layers, granularity, compress, export, bench,
                             other_sparsity, memo=record.section("costs"),
                             estimates=record.section("estimates"), timed=timed(target),
                             table=(latency_table_for(latency_table, bench, say)
                                    if timed(target) else None))
    try:
        base = costs.baseline()
        goals = target.goals(base)
        cost_goals = planned(goals, latency_margin if costs.table is not None else 0.0)
        refuse_unreachable([g for g in goals if g.figure != "drop_pp"],
                            costs.measure([layers.smallest])[0], layers)
        if costs.table is not None:
            k = costs.calibration()
            say(f"latency: predicted from a table of the layers timed alone "
                f"({costs.table.timed} new entries, {len(costs.table.entries)} in "
                f"{costs.table.path or 'memory'}), calibrated on whole files: latency "
                f"x{k['latency']:.2f}, speedup /{k['speedup']:.2f}; planning "
                + ", ".join(g.describe() for g in cost_goals if g.figure in TIMED))
        base_right = stats.correct(model, validation)
        base["val_accuracy"] = int(np.sum(base_right)) / len(base_right)
        margin = margin_of(target.max_accuracy_drop, base["val_accuracy"], len(base_right),
                         margin_pp)
        goals[-1] = dataclasses.replace(  # the accuracy goal: the bound less the margin
            goals[-1], bound=margin["planned_pp"],
            text=f"{goals[-1].text} less a {margin['margin_pp']:.2f} pp margin")
        say(f"accuracy: planning against {margin['planned_pp']:.2f} pp, max_accuracy_drop="
            f"{margin['bound_pp']:g} pp less the {margin['margin_pp']:.2f} pp margin of "
            f"{margin['validation_images']:,} validation images (95%, paired)")
        if not margin["resolved"]:
            (warn or warn_line)(too_small(margin, base["val_accuracy"]))
        say(f"baseline: {base['bytes']:,} bytes, validation accuracy "
            f"{base['val_accuracy']:.2%}; searching {dict(layers.units)}")
        tuner = sensitivity.Tuner(
            model, layers, train, validation, steps=finetune_steps, batch_size=batch_size,
            optimizer=optimizer, loss=loss, teacher=teacher, temperature=temperature,
            weight=distill_weight, from_logits=from_logits, seed=seed)
        if many:
            say(f"{len(layers.units)} layers in {len(sets)} channel groups: allocated all at "
                f"once by accuracy lost per share of {' and '.join(_shared(goals))}"
                + ("" if method == "allocate" else
                   f" (the greedy is for up to {allocate.GREEDY_LAYERS} layers)"))
        memo = sensitivity.measure(
            tuner, record.section("sensitivity"), time_left, say,
            fractions=allocate.FRACTIONS if many else sensitivity.FRACTIONS, sets=sets)
        reference = base["val_accuracy"]
        if many:  # a cut's loss is against the same fine-tuning without one
            reference = allocate.control(tuner, memo, say)
        predictor = sensitivity.Sensitivity(layers, reference, memo)
        path = sensitivity.Path(tuner, base["val_accuracy"], record.section("path"))
        if check is None:
            def check(sparsities):
                return _default_check(model, sparsities, granularity, other_sparsity, train,
                                      validation, compress, epochs, batch_size, optimizer,
                                      loss, teacher, temperature, distill_weight,
                                      from_logits, seed)
        search = Greedy(layers, costs, cost_goals, goals, predictor, path, base, check,
                         record, time_left, say, base_right=base_right,
                         validation=validation, max_checks=max_checks,
                         sets=sets, shares=allocate.shares(model, sets, _shared(goals))
                         if many else None)
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
    target, layers, costs = _costing(model, target, granularity, compress, export, bench,
                                     other_sparsity, grid_step, latency_table)
    try:
        goals = [g for g in target.goals(costs.baseline()) if g.figure != "drop_pp"]
        refuse_unreachable(goals, costs.measure([layers.smallest])[0], layers)
    finally:
        costs.close()


def shortfall(model, target, *, granularity="filter", compress=None, export=None,
              bench=None, other_sparsity=0.0, grid_step=0.85):
    """How far the full-width model, compressed and exported as `export` says, is from the
    cost targets: the sum of their log ratios (0 when it meets them). Its file is timed
    whole when a speed target needs it. Loads no data and trains nothing.

    A run exporting several `--quantize` modes searches in the one with the least to cut
    (`tfprune.pipeline`'s search stage): its widths can stay widest.
    """
    target, layers, costs = _costing(model, target, granularity, compress, export, bench,
                                     other_sparsity, grid_step, False)
    try:
        goals = [g for g in target.goals(costs.baseline()) if g.figure != "drop_pp"]
        figures = costs.measure([layers.full])[0]
        return sum(g.shortfall(figures) for g in goals)
    finally:
        costs.close()


def _costing(model, target, granularity, compress, export, bench, other_sparsity, grid_step,
             latency_table):
    """The target, the searched layers and the `Costs` of `check_target` and `shortfall`."""
    target = target if isinstance(target, Target) else Target.parse(**dict(target))
    layers = candidates.Layers(model, granularity, grid_step)
    export, bench, compress = _defaults(export, bench, compress)
    costs = candidates.Costs(model, layers, granularity, compress, export, bench,
                             other_sparsity, timed=timed(target),
                             table=(latency_table_for(latency_table, bench, None)
                                    if timed(target) else None))
    return target, layers, costs


def _defaults(export, bench, compress):
    """`export`, `bench` and `compress` with the defaults `widths` documents filled in."""
    import tfprune

    export = dict({"quantize": "dynamic", "batch_size": 1}, **(export or {}))
    bench = dict({"threads": 1, "batch_size": 1, "runs": 1000, "warmup": 100},
                 **(bench or {}))
    return export, bench, compress or (lambda m: tfprune.shrink(tfprune.fuse(m)))


def _shared(goals):
    """What the allocation's cost shares count for these goals: MACs for speed (and MAC
    targets); parameters and MACs for a size target, so that a model made as small is not
    made slower (by parameters alone, mobilenet_tiny kept its stem, most of its MACs, whole
    and ran 2.3x faster where halving every group ran 3.6x)."""
    figures = {"bytes": ("params", "macs"), "latency_us": ("macs",), "speedup": ("macs",),
               "macs": ("macs",)}
    return tuple(dict.fromkeys(f for g in goals if g.figure in figures
                               for f in figures[g.figure])) or ("macs",)


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
