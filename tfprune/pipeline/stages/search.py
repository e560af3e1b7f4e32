"""The search stage: per-layer widths to a budget (`tfprune.search`), checked by training
the candidate with the run's own compress stages in a scratch folder
(`runner.run_in_scratch`)."""

import json
import sys

import tfprune
from tfprune import atomic, stats
from tfprune.pipeline import training
from tfprune.pipeline.records import jsonable
from tfprune.pipeline.runner import run_in_scratch
from tfprune.pipeline.stage import Stage
from tfprune.pipeline.stages.baseline import BASELINE
from tfprune.pipeline.stages.benchmark import BENCHMARK
from tfprune.pipeline.stages.export import EXPORT, mode_settings
from tfprune.pipeline.stages.fold import FOLD
from tfprune.pipeline.stages.merge import MERGE, fuse_as_configured
from tfprune.pipeline.stages.prune import PRUNE
from tfprune.pipeline.stages.retrain import RETRAIN
from tfprune.pipeline.stages.search_report import PART
from tfprune.pipeline.stages.shrink import SHRINK
from tfprune.pipeline.validation import (
    distills,
    parse_granularity,
    search_target,
)

# Declared after the stages whose settings it depends on (it trains candidates with them),
# and placed before prune in STAGES.

SEARCH_FILES = ("search.json", "search_trace.json")
# The stages that make the compressed model from the baseline (each run has merge or fold).
COMPRESS = (PRUNE, MERGE, RETRAIN, FOLD, SHRINK)
_TARGET_KEYS = ("target_size", "target_speedup", "target_latency", "target_macs",
                "max_accuracy_drop", "search_time")


def _search_inputs(config, train, mode=None):
    """What `tfprune.search` needs to cost candidates as this run will make them, in `mode`
    (defaults to the first of `--quantize`)."""
    mode = mode or config.quantize[0]

    def compress(model):  # the merge stage, then the shrink stage
        merged = model if config.merge == "none" else fuse_as_configured(model, config)
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

    # Refused only if no exported mode reaches the target: any of their files may meet it.
    modes, refusals = list(dict.fromkeys(context.config.quantize)), []
    for mode in modes:
        try:
            return search.check_target(context.source_model, search_target(context.config),
                                       **_search_inputs(context.config, context.train, mode))
        except tfprune.TfpruneError as error:
            refusals.append(error)
    if len(modes) == 1:
        raise refusals[0]
    raise tfprune.TfpruneError(f"{refusals[0]} (in every --quantize mode: {', '.join(modes)})")


def _search_mode(context, baseline, log):
    """The `--quantize` mode the search costs candidates in: of the modes the run exports,
    the one whose full-width file is nearest the cost targets (the least to cut, so the
    widest widths; the first mode unless another is nearer by 10%). The targets are then
    judged on any file."""
    from tfprune import search

    config = context.config
    modes = list(dict.fromkeys(config.quantize))
    target = search_target(config)
    by_mode = (target.size_ratio, target.size_bytes, target.speedup, target.latency_us)
    if len(modes) == 1 or all(v is None for v in by_mode):  # MACs: the same in every mode
        return modes[0]
    short = {mode: search.shortfall(baseline, target,
                                    **_search_inputs(config, context.train, mode))
             for mode in modes}
    # The order given stands unless another mode is clearly nearer (by 10%, a log ratio of
    # 0.1): a speed target's distances are timed, and timing noise must not pick the mode.
    mode = min(modes, key=short.get)
    mode = modes[0] if short[modes[0]] - short[mode] < 0.1 else mode
    if log:
        log("full width in each --quantize mode, distance to the cost targets (log ratio): "
            + ", ".join(f"{m} {short[m]:.2f}" for m in modes)
            + f"; costing candidates in {mode}")
    return mode


def _search(context):
    from tfprune import search

    config = context.config
    baseline = context.model(BASELINE.model)
    mode = _search_mode(context, baseline, _search_log(config))
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
        method=config.search_method, trace=context.folder / SEARCH_FILES[1],
        resume=config.resume, trace_key=json.dumps(key, sort_keys=True, default=jsonable),
        seed=config.seed, log=_search_log(config),
        **_search_inputs(config, context.train, mode))
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
    enabled=lambda config: bool(search_target(config)), report=PART,
    keys=tuple(dict.fromkeys((
        "target_size", "target_speedup", "target_latency", "target_macs", "max_accuracy_drop",
        "search_time", "search_checks", "search_method", "search_step",
        "search_finetune_steps", "distill",
        "distill_temperature", "distill_weight", "validation_split",
        *(key for stage in (*COMPRESS, EXPORT, BENCHMARK)
          for key in stage.keys if key != "layer_sparsity")))))
