"""The report as data: `build` joins a run's stage results into one JSON-ready dict (its
model, file, layer and target tables, and the verdict); `targets` and `ship` judge it."""

import dataclasses

from tfprune import verdict

FILES = ("report.json", "report.md")
PLOTS = ("stages.png", "tflite.png", "layers.png")


def build(config, stages, results, records, data=None):
    """The report as a dict.

    Args:
        config: The run's `PipelineConfig` (or a dict of its fields).
        stages: The run's stage declarations, in order (`tfprune.pipeline.Stage`: their
            `name`, `model`, `model_file` and `report` are read).
        results: Dict of stage name -> that stage's result.
        records: Dict of stage name -> its record (hash, seconds, figure, outputs).
        data: The dataset's description (`tfprune.data.Splits.describe()`: classes in label
            order, each split's size, source and use), or `None`.

    Returns:
        Dict with `config`; `stages` (one row per stage that made a Keras model); `files`
        (per file, the facts the stages reported about it); `layers` (per layer of the
        first model: units and weights kept in the last, kernel zeros after each model
        stage); `summary` (baseline vs compressed, with ratios); `targets` (with a
        search: each target, its bound, the final figure and whether it was met, see
        `targets`); under a stage's name, the facts its report part adds (`Part.facts`,
        such as figures measured on a microcontroller); `seconds` per stage; the raw
        `results`; the `verdict` (`tfprune.verdict.judge`); with `data`, a `data` section.

    Example:

    >>> from tfprune import report
    >>> from tfprune.pipeline import PipelineConfig, Stage
    >>> stages = [Stage("baseline", None, model="baseline"),
    ...           Stage("shrink", None, model="compressed")]
    >>> results = {"baseline": {"params": 1000}, "shrink": {"params": 250}}
    >>> data = report.build(PipelineConfig(), stages, results, {})
    >>> [row["model"] for row in data["stages"]], data["summary"]["params_ratio"]
    (['baseline.keras', 'compressed.keras'], 4.0)
    """
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    models = [stage for stage in stages if stage.model and results.get(stage.name)]
    rows = []
    for stage in models:
        result = results[stage.name]
        rows.append({"stage": stage.name, "model": stage.model_file,
                     "params": result.get("params"), "nonzeros": result.get("nonzeros"),
                     "macs": result.get("macs"), "val_accuracy": result.get("val_accuracy"),
                     "val_drop_pp": result.get("val_drop_pp"),
                     "val_drop_ci_pp": result.get("val_drop_ci_pp"),
                     "seconds": (records.get(stage.name) or {}).get("seconds"),
                     "figure": (records.get(stage.name) or {}).get("figure")})
    files = {}
    for stage in stages:
        for name, facts in ((results.get(stage.name) or {}).get("files") or {}).items():
            files.setdefault(name, {}).update(facts)
    summary, judged = _judged(cfg, models, results, files)
    report = {"config": cfg, "stages": rows, "files": files,
              "layers": _layers(models, results), "summary": summary,
              "targets": judged,
              **{stage.name: stage.report.facts(models, files) for stage in stages
                 if stage.report is not None and stage.report.facts is not None},
              "seconds": {s: r.get("seconds") for s, r in records.items()},
              "results": {stage.name: results[stage.name] for stage in stages
                          if stage.name in results}, **({"data": data} if data else {})}
    report["verdict"] = verdict.judge(report)
    report["ship"] = None
    if not report["verdict"]["finite"]:  # no ratio is ever stated for a broken model
        report["summary"].update(dict.fromkeys(RATIOS))
    else:
        report["ship"] = ship(files, cfg.get("max_accuracy_drop", 0.5),
                              exclude=models[0].model if models else None)
    return report


RATIOS = ("params_ratio", "nonzeros_ratio", "macs_ratio", "size_ratio", "gzip_ratio", "speedup",
          "accuracy_delta", "accuracy_drop_ci_pp")


def _judged(config, models, results, files):
    """The summary and the targets, judged on the compressed model's first file, or, when
    that one misses a target, on the first of its other files (another `--quantize` mode)
    that meets every target: the run earns its targets if any file it exported does."""
    summary = _summary(models, results, files)
    judged = targets(config, summary)
    if not judged or all(t["met"] for t in judged) or not models:
        return summary, judged
    for name in [n for n, f in files.items() if f.get("model") == models[-1].model][1:]:
        other = _summary(models, results, files, compressed=name)
        other_judged = targets(config, other)
        if all(t["met"] for t in other_judged):
            other["judged_file"] = name  # not the first file: the headline names it
            return other, other_judged
    return summary, judged


def _summary(models, results, files, compressed=None):
    base = results[models[0].name] if models else {}
    comp = results[models[-1].name] if models else {}
    bt = _file_of(files, models[0].model) if models else {}
    ct = _file_of(files, models[-1].model, compressed) if models else {}

    def ratio(a, b):
        return a / b if a and b else None

    def side(result, facts):
        return {"params": result.get("params"), "nonzeros": result.get("nonzeros"),
                "macs": result.get("macs"), "file": facts.get("name"),
                "bytes": facts.get("bytes"), "gzip_bytes": facts.get("gzip_bytes"),
                "accuracy": facts.get("accuracy"), "latency_us": facts.get("latency_us"),
                "quantize": facts.get("quantize"), "sparse": facts.get("sparse"),
                "test_images": facts.get("images")}

    acc_b, acc_c = bt.get("accuracy"), ct.get("accuracy")
    return {
        "baseline": side(base, bt), "compressed": side(comp, ct),
        "params_ratio": ratio(base.get("params"), comp.get("params")),
        "nonzeros_ratio": ratio(base.get("nonzeros"), comp.get("nonzeros")),
        "macs_ratio": ratio(base.get("macs"), comp.get("macs")),
        "size_ratio": ratio(bt.get("bytes"), ct.get("bytes")),
        "gzip_ratio": ratio(bt.get("gzip_bytes"), ct.get("gzip_bytes")),
        "speedup": ct.get("speedup"),
        "accuracy_delta": (acc_c - acc_b) if acc_b is not None and acc_c is not None else None,
        # The paired 95% interval of the drop (pp), on the same test images (verify).
        "accuracy_drop_ci_pp": ct.get("drop_ci_pp") if ct.get("drop_vs") == bt.get("name")
        else None,
        "slower_reason": ct.get("slower_reason"),
        "sparse_reason": ct.get("sparse_reason"),
    }


def targets(config, summary):
    """Each target of the run, judged on the final figures: never met unless measured so.

    Size comes from the export (the compressed file's bytes), speed from the benchmark,
    MACs from the compressed Keras model, and the accuracy drop from the `.tflite` files'
    test accuracies (baseline - compressed, percentage points). The search decided on the
    validation split; this is the verdict on the test set, measured once, at the end.

    Args:
        config: Dict of the run's settings.
        summary: The report's `summary`.

    Returns:
        A list of dicts (`name`, `text`, `figure`, `bound`, `at_least`, `value`, `met`:
        `True`, `False` or `None` when not measured), empty when no target is set.

    Example:

    >>> from tfprune import report
    >>> summary = {"baseline": {"bytes": 1000, "macs": 80}, "speedup": 9.0,
    ...            "compressed": {"bytes": 20, "macs": 10, "latency_us": 5.0},
    ...            "accuracy_delta": -0.0004}
    >>> config = {"target_size": "50x", "target_speedup": "10x", "max_accuracy_drop": 0.1}
    >>> [(t["name"], t["met"]) for t in report.targets(config, summary)]
    [('size', True), ('speedup', False), ('accuracy', True)]
    """
    from tfprune.search.targets import Target

    target = Target.parse(size=config.get("target_size"), speedup=config.get("target_speedup"),
                          latency=config.get("target_latency"), macs=config.get("target_macs"),
                          max_accuracy_drop=config.get("max_accuracy_drop", 0.5))
    base, comp = summary.get("baseline") or {}, summary.get("compressed") or {}
    if not target or base.get("bytes") is None:
        return []
    delta = summary.get("accuracy_delta")
    figures = {"bytes": comp.get("bytes"), "macs": comp.get("macs"),
               "speedup": summary.get("speedup"), "latency_us": comp.get("latency_us"),
               "drop_pp": None if delta is None else -100.0 * delta}
    goals = target.goals({"bytes": base["bytes"], "macs": base.get("macs") or 0})
    return [{**goal.to_dict(), "value": figures.get(goal.figure), "met": goal.met(figures)}
            for goal in goals]


def ship(files, bound_pp, exclude=None):
    """Which files to ship: those within the accuracy bound, their Pareto front on bytes
    and latency, the smallest and the fastest.

    A file is on the front when no other file within the bound is at most as large and at
    most as slow, and smaller or faster. Only files with a size, a latency and a test drop
    against the baseline (verify's `drop_pp`) take part.

    Args:
        files: Dict of file name -> facts (`bytes`, `latency_us`, `drop_pp`, `model`).
        bound_pp: Float, the largest test accuracy drop allowed, in percentage points.
        exclude: Keras model name whose files do not take part (the baseline's), or `None`.

    Returns:
        Dict with `bound_pp`, `within` (names, smallest first), `front` (names, smallest
        first), `smallest` and `fastest` (names, or `None` when no file is within); of the
        files within that TFLite Micro ran (`tflm_latency_us`), `fastest_tflm` (its host
        latency) and `smallest_arena` (names, or `None`).

    Example:

    >>> from tfprune import report
    >>> files = {"a.tflite": {"bytes": 50, "latency_us": 5.0, "drop_pp": 0.1},
    ...          "b.tflite": {"bytes": 30, "latency_us": 9.0, "drop_pp": 0.0},
    ...          "c.tflite": {"bytes": 60, "latency_us": 6.0, "drop_pp": 0.0},
    ...          "d.tflite": {"bytes": 10, "latency_us": 4.0, "drop_pp": 2.0}}
    >>> front = report.ship(files, bound_pp=0.5)
    >>> front["front"], front["smallest"], front["fastest"]
    (['b.tflite', 'a.tflite'], 'b.tflite', 'a.tflite')
    """
    within = sorted((name for name, f in files.items()
                     if (exclude is None or f.get("model") != exclude)
                     and None not in (f.get("bytes"), f.get("latency_us"), f.get("drop_pp"))
                     and f["drop_pp"] <= bound_pp), key=lambda n: files[n]["bytes"])

    def beats(a, b):
        fa, fb = files[a], files[b]
        return (fa["bytes"] <= fb["bytes"] and fa["latency_us"] <= fb["latency_us"]
                and (fa["bytes"], fa["latency_us"]) != (fb["bytes"], fb["latency_us"]))

    front = [n for n in within if not any(beats(m, n) for m in within)]
    # On a microcontroller only the files TFLite Micro ran count (the tflm stage's figures).
    micro = [n for n in within if files[n].get("tflm_latency_us") is not None]
    return {"bound_pp": bound_pp, "within": within, "front": front,
            "smallest": within[0] if within else None,
            "fastest": min(within, key=lambda n: files[n]["latency_us"]) if within else None,
            "fastest_tflm": min(micro, key=lambda n: files[n]["tflm_latency_us"])
            if micro else None,
            "smallest_arena": min(micro, key=lambda n: files[n].get("arena_bytes") or 0)
            if micro else None}


def _file_of(files, model, name=None):
    """The facts of file `name`, or of the first file made from Keras model `model`, with
    its name added; or {}."""
    for key, facts in files.items():
        if facts.get("model") == model and name in (None, key):
            return {"name": key, **facts}
    return {}


def _layers(models, results):
    if not models:
        return []
    tables = {stage.name: {row["name"]: row for row in results[stage.name].get("layers", [])}
              for stage in models}
    first, last = tables[models[0].name], tables[models[-1].name]
    rows = []
    for name, row in first.items():
        kept = last.get(name)
        rows.append({"name": name, "class": row["class"], "units": row["units"],
                     "units_kept": kept["units"] if kept else None,
                     "weights": row["weights"], "weights_kept": kept["weights"] if kept else None,
                     "kernel_zeros": {stage: (table.get(name) or {}).get("kernel_zeros")
                                      for stage, table in tables.items()}})
    return rows
