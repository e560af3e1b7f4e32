"""The stages of a run, declared, in order in `STAGES`.

A run is baseline, (search,) prune, merge, retrain, shrink, export, verify, benchmark,
(tflm,) report: the search runs when a target is set, tflm with `--target=tflm`. Each
`Stage` (see `tfprune.pipeline.runner`) names the settings that decide it, the files it
reads and writes, the Keras model it makes, and its `run(context)`. The runner and the
report take everything they need from these declarations: adding a stage (a search for
per-layer widths, a TFLite Micro measurement) is one declaration here, placed in `STAGES`,
plus its code; a stage that only some runs need declares `enabled(config)`.

This module stays light to import (`import tfprune.pipeline` loads it, and a bad
`--stop_after` is reported before Keras loads): Keras and TensorFlow load inside the stage
functions. The search's check runs the compress stages through the runner
(`runner.run_in_scratch`).
"""

import json
import os
import sys

import numpy as np

import tfprune
from tfprune import atomic, stats
from tfprune.data import fingerprint
from tfprune.errors import TfpruneError
from tfprune.pipeline import budget, micro, training
from tfprune.pipeline.config import (
    distills,
    parse_granularity,
    parse_layer_sparsity,
    search_target,
)
from tfprune.pipeline.context import is_path
from tfprune.pipeline.runner import Stage, file_sha256, jsonable, run_in_scratch

# ----------------------------------------------------------------------------- baseline


def _baseline_epochs(config):
    """The epochs the baseline trains: as asked, or 8 for a zoo model and 0 for a loaded one."""
    if config.baseline_epochs is not None:
        return config.baseline_epochs
    return 0 if is_path(config.model) else 8


def _baseline_settings(config):
    path = config.model if is_path(config.model) and os.path.isfile(config.model) else None
    return {"baseline_epochs": _baseline_epochs(config),
            "model_sha256": file_sha256(path) if path else None,
            "data_fingerprint": fingerprint(config.dataset)}


def _check_baseline(context):
    """The source model loads and every stage can read it (a `keras.ops` call it cannot
    rebuild is named here, before training), the dataset fits it, and its classes match."""
    model = context.source_model
    tfprune.graph.LayerGraph.from_model(model)
    splits = context.data
    x, y = splits.train
    want = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    got = tuple(x.shape[1:])
    if want is None or len(want) != len(got) or any(
            w is not None and w != g for w, g in zip(want, got, strict=True)):
        raise TfpruneError(
            f"The dataset's images do not fit the model's input: the model expects "
            f"{model.input_shape}, the dataset gives {(None, *got)}. Received: "
            f"model input={model.input_shape}")
    classes = splits.num_classes or int(np.max(y)) + 1
    units = model.output_shape[-1]
    if units != classes:
        raise TfpruneError(f"The model has {units} outputs but the dataset has {classes} "
                           f"classes ({splits.spec}): give its last layer {classes} units. "
                           f"Received: model output={model.output_shape}")


def _baseline(context):
    config, model = context.config, training.in_scope(context.source_model)
    epochs, resumed = _baseline_epochs(config), 0
    if epochs:
        training.compile_model(model, config, config.baseline_learning_rate,
                               training.steps(context.train, config.baseline_batch_size, epochs))
        resumed = training.fit(model, context.train, epochs, config.baseline_batch_size, config,
                               callbacks=_adaptive_batchnorm(context, config.baseline_batch_size),
                               backup=context.backup_dir)
    outputs = [context.save(BASELINE.model, model)]
    result = _describe(context, model)
    result.update(epochs=epochs, resumed_from_epoch=resumed)
    return outputs, result, (f"{_accuracy_text(result)}, "
                             f"{result['params']:,} params")


BASELINE = Stage(
    "baseline", _baseline, model="baseline", check=_check_baseline, derived=_baseline_settings,
    trains=True,
    keys=("model", "dataset", "train_split", "rescale", "train_limit", "validation_split",
          "baseline_epochs", "baseline_batch_size", "optimizer", "lr_schedule",
          "baseline_learning_rate", "batchnorm_images", "seed"))

# ----------------------------------------------------------------------------- prune


def _check_prune(context):
    config = context.config
    unknown = set(parse_layer_sparsity(config.layer_sparsity)) - {
        layer.name for layer in context.source_model.layers}
    if unknown:
        raise TfpruneError(f"layer_sparsity names layers the model does not have: "
                           f"{sorted(unknown)}. Received: layer_sparsity="
                           f"{config.layer_sparsity!r}")
    if config.tensorboard_dir:
        atomic.check_writable(config.tensorboard_dir)


def _prune(context):
    config = context.config
    model = context.model(BASELINE.model)
    overrides = _layer_sparsities(context)
    epochs = budget.prune_epochs(config, len(context.train[1]),
                                 max([config.final_sparsity, *overrides.values()]))
    steps = training.steps(context.train, config.prune_batch_size, epochs)
    frequency = budget.frequency(config, steps)
    end_step = budget.end_step(config, steps, frequency)

    if config.schedule == "constant":
        schedule = tfprune.ConstantSparsity(config.final_sparsity, begin_step=config.begin_step,
                                            frequency=frequency)
    else:
        schedule = tfprune.PolynomialDecay(
            initial_sparsity=config.initial_sparsity, final_sparsity=config.final_sparsity,
            begin_step=config.begin_step, end_step=end_step, power=config.power,
            frequency=frequency)
    granularity = parse_granularity(config.granularity)
    wrapped = tfprune.prune(model, schedule, granularity=granularity, sparsities=overrides)
    learner = training.learner(wrapped, model, config)  # the baseline teaches, if distilling
    training.compile_model(learner, config, config.prune_learning_rate, steps)
    callbacks = [tfprune.UpdatePruningStep(),
                 *_adaptive_batchnorm(context, config.prune_batch_size)]
    if config.tensorboard_dir:
        callbacks.append(tfprune.PruningSummaries(config.tensorboard_dir))
    resumed = 0
    if epochs:
        resumed = training.fit(learner, context.train, epochs, config.prune_batch_size,
                               config, callbacks=callbacks, backup=context.backup_dir)
    pruned = tfprune.strip(wrapped)
    outputs = [context.save(PRUNE.model, pruned)]
    result = _describe(context, pruned)
    result.update(epochs=epochs, end_step=end_step, steps=steps, frequency=frequency,
                  updates=_updates(schedule, steps),
                  granularity=granularity, resumed_from_epoch=resumed,
                  layer_sparsity=overrides, distilled=learner is not wrapped)
    return outputs, result, (f"{_accuracy_text(result)}, "
                             f"{result['nonzeros']:,}/{result['params']:,} non-zero; "
                             f"{epochs} epochs, a mask update every {frequency} steps to "
                             f"step {end_step}")


def _updates(schedule, steps):
    """How many of the first `steps` steps move the masks under `schedule`."""
    return sum(bool(schedule(step)[0]) for step in range(steps))


def _adaptive_batchnorm(context, batch_size, at_epoch_end=False):
    """The callback that recomputes BatchNorm statistics before evaluations and at the end
    of training (`--batchnorm_images`), and of each epoch if asked, as a list: empty when
    off."""
    images = context.config.batchnorm_images
    if not images:
        return []
    return [tfprune.AdaptiveBatchNorm(context.train[0], images=images, batch_size=batch_size,
                                      seed=context.config.seed, at_epoch_end=at_epoch_end)]


PRUNE = Stage(
    "prune", _prune, model="pruned", reads=(BASELINE.model_file,), check=_check_prune,
    trains=True,
    keys=("prune_epochs", "prune_batch_size", "prune_learning_rate", "schedule",
          "initial_sparsity", "final_sparsity", "begin_step", "end_step", "power", "frequency",
          "granularity", "layer_sparsity", "distill", "distill_temperature", "distill_weight",
          "batchnorm_images"))


def _layer_sparsities(context):
    """Per-layer final sparsities: the search's plan when it ran, else `--layer_sparsity`."""
    searched = context.results.get(SEARCH.name)
    if searched is not None:
        return dict(searched["sparsities"])
    return parse_layer_sparsity(context.config.layer_sparsity)

# ----------------------------------------------------------------------------- merge


def _merge(context):
    return _merged(context, MERGE, PRUNE)


def _merged(context, stage, source):
    """The merge (or fold) stage: `source`'s model merged as the run says."""
    config = context.config
    model = context.model(source.model)
    merged = training.clone(model) if config.merge == "none" else _fuse(model, config)
    outputs = [context.save(stage.model, merged)]
    result = _describe(context, merged)
    result["layer_count"] = len(merged.layers)
    return outputs, result, (f"{len(model.layers)} -> {len(merged.layers)} layers, "
                             f"{_accuracy_text(result)}")


def folds_after_retrain(config):
    """Whether the run merges after retraining (`fold` stage) rather than before (`merge`):
    exact merges only, as `--fold_after_retrain` asks; approximate ones need retraining."""
    return config.merge == "exact" and config.fold_after_retrain


def _fuse(model, config):
    """`model` merged as `config` says (`merge` is not `"none"`)."""
    return tfprune.fuse(model, approximate=config.merge == "approximate",
                        pool_kernel=config.pool_kernel,
                        pool_activation=None if config.pool_activation == "none"
                        else config.pool_activation)


MERGE = Stage("merge", _merge, model="merged", reads=(PRUNE.model_file,),
              enabled=lambda config: not folds_after_retrain(config),
              keys=("merge", "pool_kernel", "pool_activation", "fold_after_retrain"))


def _before_retrain(config):
    """The stage whose model the retrain stage trains: merge, or prune when merging waits."""
    return PRUNE if folds_after_retrain(config) else MERGE

# ----------------------------------------------------------------------------- retrain


def _retrain(context):
    config = context.config
    model, resumed = training.clone(context.model(_before_retrain(config).model)), 0
    epochs, early = budget.retrain_epochs(config, context.results[PRUNE.name]["epochs"])
    best = None
    if epochs:
        # Early: the statistics recomputed at each epoch's end, before the best epoch is
        # judged on them (the callbacks run in this order).
        callbacks = _adaptive_batchnorm(context, config.retrain_batch_size, at_epoch_end=early)
        if early:
            best = budget.best_epoch_callback(context.validation, stats.accuracy)
            callbacks.append(best)
        with training.hold_zeros(model):
            learner = training.learner(model, context.model(BASELINE.model), config)
            training.compile_model(learner, config, config.retrain_learning_rate,
                                   0 if early else training.steps(
                                       context.train, config.retrain_batch_size, epochs))
            resumed = training.fit(learner, context.train, epochs, config.retrain_batch_size,
                                   config, callbacks=callbacks, backup=context.backup_dir)
    outputs = [context.save(RETRAIN.model, model)]
    result = _describe(context, model)
    result.update(resumed_from_epoch=resumed, epochs=epochs, early_stopping=bool(best))
    ran = f"{epochs} epochs"
    if best is not None:
        result.update(epochs_run=best.epochs_run, best_epoch=best.best_epoch,
                      learning_rates=best.learning_rates)
        ran = f"best of {best.epochs_run} epochs: {best.best_epoch} (at most {epochs})"
    return outputs, result, (f"{_accuracy_text(result)}, "
                             f"{result['nonzeros']:,} non-zero; {ran}")


RETRAIN = Stage("retrain", _retrain, model="retrained", trains=True,
                reads=lambda config: (_before_retrain(config).model_file,),
                keys=("retrain_epochs", "retrain_batch_size", "retrain_learning_rate", "distill",
                      "distill_temperature", "distill_weight", "batchnorm_images"),
                judged=True)

# ----------------------------------------------------------------------------- fold


def _fold(context):
    return _merged(context, FOLD, RETRAIN)


# Exact merges after retraining (the default with --merge=exact): BatchNorm stays through
# retraining, then folds with the statistics the retrained weights have.
FOLD = Stage("fold", _fold, model="folded", reads=(RETRAIN.model_file,),
             enabled=folds_after_retrain, keys=MERGE.keys, judged=True)


def _before_shrink(config):
    return FOLD if folds_after_retrain(config) else RETRAIN

# ----------------------------------------------------------------------------- shrink


def _shrink(context):
    model = context.model(_before_shrink(context.config).model)
    shrunk = tfprune.shrink(model, threshold=context.config.shrink_threshold)
    outputs = [context.save(SHRINK.model, shrunk)]
    result = _describe(context, shrunk)
    return outputs, result, (f"{result['params']:,} params, {result['macs']:,} MACs, "
                             f"{_accuracy_text(result)}")


SHRINK = Stage("shrink", _shrink, model="compressed",
               reads=lambda config: (_before_shrink(config).model_file,),
               keys=("shrink_threshold",), judged=True)

# ----------------------------------------------------------------------------- export


def tflite_files(config):
    """Each `.tflite` file of a run -> `(Keras model name, quantize mode, sparse encoding)`.

    The baseline in float32 first, then the compressed model in each `config.quantize`
    mode: the first mode makes `compressed.tflite`, the others `compressed_<mode>.tflite`.
    """
    files = {f"{BASELINE.model}.tflite": (BASELINE.model, "none", False)}
    for i, mode in enumerate(config.quantize):
        name = f"{SHRINK.model}.tflite" if i == 0 else f"{SHRINK.model}_{mode}.tflite"
        files[name] = (SHRINK.model, mode, config.sparse)
    if config.target == "tflm":  # full int8 without sparse encoding: TFLM has no DENSIFY op
        baseline_int8, compressed = tflm_files(config)
        files[compressed] = (SHRINK.model, "int8", False)
        files[baseline_int8] = (BASELINE.model, "int8", False)
    return files


def tflm_files(config):
    """The files exported for TFLite Micro (`--target=tflm`): the full-int8 baseline, then
    `compressed.tflite`; none for LiteRT."""
    if config.target != "tflm":
        return ()
    return f"{BASELINE.model}_int8.tflite", f"{SHRINK.model}.tflite"


def mode_settings(config, mode, target="litert"):
    """The `tflite.to_tflite` arguments of a mode's own flags: int4's form, int8's float
    layers (never for TFLite Micro)."""
    if mode == "int4":
        return {"int4_form": config.int4_form}
    if mode == "int8" and target != "tflm":
        return {"float_layers": config.int8_float_layers}
    return {}


def _compared(config):
    """The two files verify and the benchmark put side by side: baseline, compressed."""
    return tuple(tflite_files(config))[:2]


def _export(context):
    from tfprune import bench, tflite

    config = context.config
    rep = context.train[0][:config.representative_size]
    files = {}
    for name, (model_name, mode, sparse) in tflite_files(config).items():
        target = "tflm" if name in tflm_files(config) else "litert"
        settings = dict(quantize=mode, representative_data=rep, batch_size=config.export_batch_size,
                        int8_io=config.int8_io and mode == "int8", target=target,
                        **mode_settings(config, mode, target))
        facts = {}
        if sparse:  # the sparse encoding only where it pays: smaller, and no op falls back
            choice = tflite.to_tflite_where_sparse_pays(context.model(model_name),
                                                        context.folder / name, **settings)
            sparse, facts = choice.sparse, {"sparse_reason": choice.reason}
        else:
            tflite.to_tflite(context.model(model_name), context.folder / name, **settings)
        raw, gz = bench.file_sizes(context.folder / name)
        files[name] = {"model": model_name, "quantize": mode, "sparse": sparse, "bytes": raw,
                       "gzip_bytes": gz, **facts}
    base, comp = (files[name] for name in _compared(config))
    encoding = f"; {comp['sparse_reason']}" if "sparse_reason" in comp else ""
    return list(files), {"files": files}, (f"{base['bytes']:,} -> {comp['bytes']:,} bytes "
                                           f"({base['bytes'] / comp['bytes']:.1f}x smaller"
                                           f"{encoding})")


EXPORT = Stage(
    "export", _export, reads=(BASELINE.model_file, SHRINK.model_file),
    writes=lambda config: tuple(tflite_files(config)),
    keys=("quantize", "sparse", "representative_size", "export_batch_size", "int8_io",
          "target", "int8_float_layers", "int4_form"))

# ----------------------------------------------------------------------------- verify


def _verify(context):
    from tfprune import tflite

    x, y = context.test
    batches = [(x[i:i + 256], y[i:i + 256]) for i in range(0, len(y), 256)]
    right = {name: tflite.correct(context.folder / name, batches)
             for name in VERIFY.files_read(context.config)}
    base_name, comp_name = _compared(context.config)
    files = {name: {"accuracy": int(np.sum(r)) / len(r)} for name, r in right.items()}
    for name, r in right.items():  # each file against the baseline, on the same images
        if name != base_name:
            files[name].update(stats.paired(right[base_name], r).to_dict(), drop_vs=base_name)
    base, comp = files[base_name]["accuracy"], files[comp_name]["accuracy"]
    change = stats.change_text(files[comp_name]["drop_pp"], files[comp_name]["drop_ci_pp"])
    return [], {"files": files}, f".tflite test accuracy {base:.2%} -> {comp:.2%}: {change}"


# It reads what the export declaration says it writes.
VERIFY = Stage("verify", _verify, keys=("test_limit", "test_split"),
               reads=lambda config: EXPORT.files_written(config))

# ----------------------------------------------------------------------------- benchmark


def _benchmark(context):
    from tfprune import bench

    config = context.config
    # Every file of the run, interleaved: the report chooses the file to ship on these.
    names = _compared(config)
    timed = (*names, *(n for n in tflite_files(config) if n not in names))
    comparison = bench.compare(*(str(context.folder / name) for name in timed),
                               threads=config.bench_threads, batch_size=config.bench_batch_size,
                               runs=config.bench_runs, warmup=config.bench_warmup,
                               delegates=("xnnpack",))
    base, comp = comparison.timing(0), comparison.timing(1)
    # The per-round ratio's median: slow spells of a shared machine cancel out.
    speedup = comp.speedup
    conditions = {"threads": config.bench_threads, "batch_size": config.bench_batch_size,
               "rounds": config.bench_runs, "cpu_count": os.cpu_count(),
               "load_average": list(os.getloadavg())}
    files = {names[0]: {"latency_us": base.median_us, "delegate": base.delegate_used},
             names[1]: {"latency_us": comp.median_us, "delegate": comp.delegate_used,
                        "speedup": speedup, "speedup_over": names[0], **conditions}}
    for i, name in enumerate(timed[2:], start=2):
        t = comparison.timing(i)
        files[name] = {"latency_us": t.median_us, "delegate": t.delegate_used,
                       "speedup": t.speedup, "speedup_over": names[0]}
    ratio = f"{speedup:.1f}x faster"
    if speedup < 1:  # reported as slower, with what the files show
        macs = tuple(context.results.get(s.name, {}).get("macs") for s in (BASELINE, SHRINK))
        why = bench.slower.reason(base, comp, macs if None not in macs else None)
        files[names[1]].update(slower=True, slower_reason=why)
        ratio = f"{1 / speedup:.1f}x SLOWER: {why}"
    return [], {"files": files, "comparison": comparison.to_dict()}, (
        f"latency {base.median_us:.1f} -> {comp.median_us:.1f} us "
        f"({ratio}, {config.bench_threads} thread(s), {comp.delegate_used})")


BENCHMARK = Stage("benchmark", _benchmark, reads=lambda config: tuple(tflite_files(config)),
                  keys=("bench_threads", "bench_runs", "bench_warmup", "bench_batch_size"))

# ----------------------------------------------------------------------------- tflm


def _tflm(context):
    return micro.measure(context, f"{BASELINE.model}.tflite", *tflm_files(context.config))


# Only with --target=tflm. Its check converts the untrained model before any training.
TFLM = Stage("tflm", _tflm, check=micro.check, enabled=micro.enabled, writes=micro.c_files,
             reads=lambda config: (f"{BASELINE.model}.tflite", *tflm_files(config)),
             keys=("test_limit", "tflm_runs", "max_arena", "emit_c"))

# ----------------------------------------------------------------------------- report


def _report_files(config):
    from tfprune import report

    memory = (report.MEMORY_PLOT,) if micro.enabled(config) else ()
    searched = (report.SEARCH_PLOT,) if SEARCH.applies(config) else ()
    return report.FILES + ((*report.PLOTS, *memory, *searched) if config.plots else ())


def _report(context):
    from tfprune import report

    data = report.build(context.config, context.stages, context.results, context.records,
                        data=context.data.describe())
    outputs = report.write(context.folder, data, plots=context.config.plots)
    return outputs, data, f"{report.headline(data)} -> {context.folder / 'report.md'}"


REPORT = Stage("report", _report, always=True, writes=_report_files)

# ----------------------------------------------------------------------------- search
# Declared after the stages whose settings it depends on (it trains candidates with them),
# and placed before prune in STAGES.

SEARCH_FILES = ("search.json", "search_trace.json")
# The stages that make the compressed model from the baseline (each run has merge or fold).
COMPRESS = (PRUNE, MERGE, RETRAIN, FOLD, SHRINK)
_TARGET_KEYS = ("target_size", "target_speedup", "target_latency", "target_macs",
                "max_accuracy_drop", "search_time")


def _search_inputs(config, train):
    """What `tfprune.search` needs to cost candidates as this run will make them."""
    mode = config.quantize[0]

    def compress(model):  # the merge stage, then the shrink stage
        merged = model if config.merge == "none" else _fuse(model, config)
        return tfprune.shrink(merged, threshold=config.shrink_threshold)

    return dict(
        granularity=parse_granularity(config.granularity), compress=compress,
        other_sparsity=config.final_sparsity, grid_step=config.search_step,
        export={"quantize": mode, "sparse": config.sparse and config.target != "tflm",
                "batch_size": config.export_batch_size, "target": config.target,
                "int8_io": config.int8_io and mode == "int8",
                "representative_data": train[0][:config.representative_size],
                **mode_settings(config, mode, config.target)},
        bench={"threads": config.bench_threads, "batch_size": config.bench_batch_size,
               "runs": config.bench_runs, "warmup": config.bench_warmup})


def _check_search(context):
    """Targets no width can reach (the smallest model misses them) fail before training."""
    from tfprune import search

    search.check_target(context.source_model, search_target(context.config),
                        **_search_inputs(context.config, context.train))


def _search(context):
    from tfprune import search

    config = context.config
    baseline = context.model(BASELINE.model)
    # The trace holds measurements, whatever the targets: another target resumes from it.
    key = {k: v for k, v in SEARCH.settings(config).items() if k not in _TARGET_KEYS}
    plan = search.widths(
        baseline, context.train, context.validation, search_target(config),
        check=lambda sparsities: _train_candidate(context, sparsities),
        teacher=baseline if distills(config) else None,
        temperature=config.distill_temperature, distill_weight=config.distill_weight,
        finetune_steps=config.search_finetune_steps, batch_size=config.prune_batch_size,
        optimizer=lambda: training.optimizer(config, config.prune_learning_rate, 0),
        time_limit=60 * config.search_time, max_checks=config.search_checks or None,
        trace=context.folder / SEARCH_FILES[1],
        resume=config.resume, trace_key=json.dumps(key, sort_keys=True, default=jsonable),
        seed=config.seed, log=_search_log(config), **_search_inputs(config, context.train))
    _adopt(context, plan)
    data = plan.to_dict()
    atomic.write_text(context.folder / SEARCH_FILES[0],
                      json.dumps(data, indent=1, default=jsonable))
    if not plan.all_met:
        print(f"tfprune: warning: {plan.note}", file=sys.stderr, flush=True)
    f, b = plan.figures, plan.baseline
    full = "-".join(str(units) for units in plan.units.values())
    figure = f"{plan.name} of {full}: {b['bytes'] / f['bytes']:.1f}x smaller"
    if f.get("speedup") is not None:
        figure += f", {f['speedup']:.1f}x faster"
    if f.get("drop_ci_pp") is not None:
        figure += f", validation {stats.change_text(f['drop_pp'], f['drop_ci_pp'])}"
    elif f.get("drop_pp") is not None:
        figure += f", validation {-f['drop_pp']:+.2f} pp"
    if plan.margin:
        figure += f" (planned to lose at most {plan.margin['planned_pp']:.2f} pp)"
    figure += "; every target met" if plan.all_met else "; NOT every target met"
    return list(SEARCH_FILES), data, figure


def _search_log(config):
    if not config.verbose:
        return None
    return lambda line: print(f"[tfprune] search    {line}", flush=True)


def _train_candidate(context, sparsities):
    """Trains a candidate as the run will: its prune, merge, retrain and shrink stages, in a
    scratch folder. Each stage seeds its training, so the run's own stages, given the
    chosen plan, would make the same model again: the scratch folder is kept (`_checked`)
    and, if the search chooses this candidate, the run takes its stages (`_adopt`)."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix=".search-", dir=context.folder)
    try:
        context.data  # loaded once, shared with the scratch run  # noqa: B018
        scratch, done = run_in_scratch(
            COMPRESS, context, folder,
            results={BASELINE.name: context.results.get(BASELINE.name),
                     SEARCH.name: {"sparsities": dict(sparsities)}},
            models={BASELINE.model: context.model(BASELINE.model)})
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _checked(context)[_sparsity_key(sparsities)] = (folder, done)
    return scratch.model(SHRINK.model), scratch.results[SHRINK.name]["val_accuracy"]


def _checked(context):
    """The search's checks kept for adoption: sparsities key -> (folder, precomputed)."""
    return vars(context).setdefault("search_checks", {})


def _sparsity_key(sparsities):
    return json.dumps({k: round(float(v), 9) for k, v in sparsities.items()}, sort_keys=True)


def _adopt(context, plan):
    """The run takes the chosen candidate's stages from its check; other checks' scratch
    folders go."""
    import shutil

    chosen = _sparsity_key(plan.sparsities)
    for key, (folder, done) in _checked(context).items():
        if key == chosen and plan.checked:
            context.precomputed.update(done)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    _checked(context).clear()


SEARCH = Stage(
    "search", _search, reads=(BASELINE.model_file,), writes=SEARCH_FILES, check=_check_search,
    enabled=lambda config: bool(search_target(config)),
    keys=tuple(dict.fromkeys((
        "target_size", "target_speedup", "target_latency", "target_macs", "max_accuracy_drop",
        "search_time", "search_checks", "search_step", "search_finetune_steps", "distill",
        "distill_temperature", "distill_weight", "validation_split",
        *(key for stage in (*COMPRESS, EXPORT, BENCHMARK)
          for key in stage.keys if key != "layer_sparsity")))))

STAGES = (BASELINE, SEARCH, *COMPRESS, EXPORT, VERIFY, BENCHMARK, TFLM, REPORT)

# ----------------------------------------------------------------------------- helpers


def _describe(context, model):
    """Keras validation accuracy (and its change from the baseline's), parameter, non-zero
    and MAC counts, per-layer kernels."""
    counts = tfprune.bench.count(model)
    return {**_val_accuracy(context, model),
            "params": int(counts.params), "nonzeros": int(counts.nonzero),
            "macs": int(counts.macs), "layers": _layer_table(model),
            "finite": training.finite(model)}


def _val_accuracy(context, model):
    """The model's accuracy on the validation split (`None` without one) and, after the
    baseline, its drop from the baseline's on the same images with a paired 95% interval
    (`val_drop_pp`, `val_drop_ci_pp`, `val_discordant`, `val_images`: `tfprune.stats`)."""
    if not len(context.validation[1]):
        return {"val_accuracy": None}
    right = stats.correct(model, context.validation)
    result = {"val_accuracy": int(np.sum(right)) / len(right)}
    if BASELINE.name in context.results:  # a later stage: paired with the baseline
        result.update(stats.paired(_baseline_right(context), right).to_dict("val_"))
    return result


def _baseline_right(context):
    """The baseline's answers on the validation split, right or wrong: computed once per
    run (and shared with the search's scratch copies of the context)."""
    cache = vars(context)
    if "baseline_right" not in cache:
        cache["baseline_right"] = stats.correct(context.model(BASELINE.model),
                                                   context.validation)
    return cache["baseline_right"]


def _accuracy_text(result):
    value = result["val_accuracy"]
    if value is None:
        return "no validation split"
    if result.get("val_drop_ci_pp") is None:
        return f"val accuracy {value:.2%}"
    return (f"val accuracy {value:.2%}, "
            f"{stats.change_text(result['val_drop_pp'], result['val_drop_ci_pp'])}")


def _layer_table(model):
    """Per layer with kernels (its handler's prunable weights: a separable conv has two):
    its units (output channels), kernel weights and their zero fraction."""
    from tfprune.handlers import REGISTRY

    rows = []
    for layer in model.layers:
        kernels = [np.asarray(pw.variable) for pw in REGISTRY.prunable_weights(layer)]
        if not kernels:
            continue
        size = sum(w.size for w in kernels)
        rows.append({"name": layer.name, "class": type(layer).__name__,
                     "units": int(layer.output.shape[-1]), "weights": int(size),
                     "kernel_zeros": float(sum(np.sum(w == 0) for w in kernels) / size)})
    return rows
