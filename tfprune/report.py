"""The run's report: `report.json`, `report.md` (a table like the paper's) and PNG plots.

`build` joins the stage results of a run (`tfprune.pipeline`) into one JSON-ready dict;
`write` renders it into the run folder (every file atomically). Its `verdict`
(`tfprune.verdict.judge`) says which claims the compressed model earned; one that did not
is said first, in the headline and at the top of `report.md`, and a model that is not
finite gets no ratio at all. The report names no stage:
its table of Keras models lists the stages that declare a `model`, in order (the first is
the baseline, the last the compressed model), and its table of files joins, by file name,
the facts that stages report under `result["files"]` (export: size; verify: accuracy;
benchmark: latency). Plots use matplotlib's Agg backend, so no display is needed.
"""

import dataclasses
import io
import json
from pathlib import Path

from tfprune import atomic, stats, verdict

FILES = ("report.json", "report.md")
PLOTS = ("stages.png", "tflite.png", "layers.png")
MEMORY_PLOT = "memory.png"  # flash and arena, when files were measured on TFLite Micro
SEARCH_PLOT = "search.png"  # runs with a search only: candidates' size and speed vs accuracy


def build(config, stages, results, records, data=None):
    """The report as a dict.

    Args:
        config: The run's `PipelineConfig` (or a dict of its fields).
        stages: The run's stage declarations, in order (`tfprune.pipeline.Stage`: their
            `name`, `model` and `model_file` are read).
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
        `targets`); `seconds` per stage; the raw `results`; the `verdict`
        (`tfprune.verdict.judge`); with `data`, a `data` section.

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
    summary = _summary(models, results, files)
    report = {"config": cfg, "stages": rows, "files": files,
              "layers": _layers(models, results), "summary": summary,
              "targets": targets(cfg, summary), "tflm": _tflm(models, files),
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


def _summary(models, results, files):
    base = results[models[0].name] if models else {}
    comp = results[models[-1].name] if models else {}
    bt = _file_of(files, models[0].model) if models else {}
    ct = _file_of(files, models[-1].model) if models else {}

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


def _tflm(models, files):
    """The TFLite Micro figures, when a stage measured files on it (`arena_bytes`), else None.

    Names the float baseline, the full-int8 baseline and the compressed file, with the
    ratios the microcontroller section of the report shows.
    """
    measured = {name: facts for name, facts in files.items() if "arena_bytes" in facts}
    if not models or not measured:
        return None

    def pick(model, quantize=None):
        return next((name for name, facts in measured.items() if facts.get("model") == model
                     and (quantize is None or facts.get("quantize") == quantize)), None)

    base_float, base_int8 = pick(models[0].model, "none"), pick(models[0].model, "int8")
    comp = pick(models[-1].model)
    f, b, c = (measured.get(name) or {} for name in (base_float, base_int8, comp))

    def ratio(key, x, y):
        return x[key] / y[key] if x.get(key) and y.get(key) else None

    accuracy = c.get("tflm_accuracy")
    return {"baseline_float": base_float, "baseline_int8": base_int8, "compressed": comp,
            "flash_ratio_float": ratio("flash_bytes", f, c),
            "flash_ratio_int8": ratio("flash_bytes", b, c),
            "arena_ratio_int8": ratio("arena_bytes", b, c),
            "accuracy_delta_float": (accuracy - f["accuracy"] if accuracy is not None
                                     and f.get("accuracy") is not None else None),
            **{f"class_mismatches_{kind}": (b.get(f"tflm_{kind}_class_mismatches", 0)
                                            + c.get(f"tflm_{kind}_class_mismatches", 0))
               for kind in ("builtin", "xnnpack")}}


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
        first), `smallest` and `fastest` (names, or `None` when no file is within).

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
    return {"bound_pp": bound_pp, "within": within, "front": front,
            "smallest": within[0] if within else None,
            "fastest": min(within, key=lambda n: files[n]["latency_us"]) if within else None}


def _file_of(files, model):
    """The facts of the first file made from Keras model `model` (its name added), or {}."""
    for name, facts in files.items():
        if facts.get("model") == model:
            return {"name": name, **facts}
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


def headline(report):
    """One line: how much smaller, how much faster, and the accuracy change.

    When the verdict finds claims the model did not earn, the line leads with them.

    Example:

    >>> from tfprune import report
    >>> report.headline({"summary": {"size_ratio": 31.8, "speedup": 12.5,
    ...                              "accuracy_delta": -0.015}})
    '31.8x smaller, 12.5x faster, accuracy -1.50 pp'
    >>> report.headline({"summary": {"size_ratio": 4.3, "speedup": 0.45, "accuracy_delta": 0.0,
    ...                              "slower_reason": "its sparse encoding adds 1 DENSIFY op"}})
    '4.3x smaller, 2.2x SLOWER (its sparse encoding adds 1 DENSIFY op), accuracy +0.00 pp'
    >>> report.headline({"summary": {"size_ratio": 31.8, "speedup": 1.2,
    ...                              "accuracy_delta": -0.015},
    ...                  "verdict": {"earned": False, "unmet": ["accuracy: -1.50 pp"]}})
    'NOT EARNED (accuracy: -1.50 pp): 31.8x smaller, 1.2x faster, accuracy -1.50 pp'
    """
    s = report["summary"]
    speed = f"{_x(s.get('speedup'))} faster"
    if s.get("speedup") is not None and s["speedup"] < 1:  # never "0.4x faster"
        why = s.get("slower_reason") if not report.get("verdict") else None  # it says why
        speed = f"{_x(1 / s['speedup'])} SLOWER" + (f" ({why})" if why else "")
    return verdict.line(report, f"{_x(s.get('size_ratio'))} smaller, {speed}, accuracy "
                                f"{_change(s.get('accuracy_delta'), s.get('accuracy_drop_ci_pp'))}")


def write(folder, report, plots=True):
    """Writes `report.json`, `report.md` and (with `plots`) the PNGs into `folder`.

    Args:
        folder: The run folder (it must exist).
        report: The dict `build` returns.
        plots: Boolean, draw the PNG plots too, defaults to `True`.

    Returns:
        The list of file names written (from `FILES` and `PLOTS`).
    """
    folder = Path(folder)
    json_name, md_name = FILES
    atomic.write_text(folder / json_name, json.dumps(report, indent=1))
    atomic.write_text(folder / md_name, markdown(report))
    written = list(FILES)
    if plots:
        written += _plots(folder, report)
    return written


def _num(value, fmt="{:,}"):
    return "—" if value is None else fmt.format(value)


def _x(value):
    return "—" if value is None else f"{value:.1f}x"


def _pp(value):
    return "—" if value is None else f"{100 * value:+.2f} pp"


def _change(delta, ci_pp):
    """An accuracy change (a fraction), with the paired interval of its drop (pp) if known."""
    if delta is None or ci_pp is None:
        return _pp(delta)
    return stats.change_text(-100 * delta, ci_pp)


def markdown(report):
    """The report as Markdown: the baseline-vs-compressed table, stages, layers, files."""
    s = report["summary"]
    b, c = s["baseline"], s["compressed"]
    pct = "{:.2%}"
    cfg = report["config"]
    measured = (report["files"].get(c["file"]) or {}) if c["file"] else {}
    rows = [
        ("Parameters", _num(b["params"]), _num(c["params"]), _x(s["params_ratio"])),
        ("Non-zero parameters", _num(b["nonzeros"]), _num(c["nonzeros"]),
         _x(s["nonzeros_ratio"])),
        ("MACs", _num(b["macs"]), _num(c["macs"]), _x(s["macs_ratio"])),
        (".tflite size (bytes)", _num(b["bytes"]), _num(c["bytes"]), _x(s["size_ratio"])),
        (".tflite size gzip (bytes)", _num(b["gzip_bytes"]), _num(c["gzip_bytes"]),
         _x(s["gzip_ratio"])),
        (".tflite test accuracy", _num(b["accuracy"], pct),
         _num(c["accuracy"], pct), _change(s["accuracy_delta"], s.get("accuracy_drop_ci_pp"))),
        (f"Latency median, µs ({cfg.get('bench_threads')} thread, batch "
         f"{cfg.get('bench_batch_size')})", _num(b["latency_us"], "{:.1f}"),
         _num(c["latency_us"], "{:.1f}"), _x(s["speedup"])),
    ]
    rows += _tflm_rows(report)
    lines = [f"# tfprune run: {cfg.get('model')} on {cfg.get('dataset')}", "",
             *_verdict_lines(report),
             f"Compressed model: `{c.get('quantize')}` quantization, sparse encoding "
             f"{'on' if c.get('sparse') else 'off'}; merges: {cfg.get('merge')}; "
             f"granularity: `{cfg.get('granularity')}`, sparsity "
             f"{_sparsity_text(report)}.", "",
             "Ratios are baseline / compressed: for latency, the speedup.", "",
             *([f"**The compressed file is slower than the baseline**: {s['slower_reason']}.",
                ""] if s.get("slower_reason") else []),
             *([f"Sparse encoding: {s['sparse_reason']}.", ""] if s.get("sparse_reason")
               else []),
             "| | baseline | compressed | ratio |", "|---|---:|---:|---:|"]
    lines += [f"| {a} | {b_} | {c_} | {r} |" for a, b_, c_, r in rows]
    lines += ["", "## Stages (Keras models)", "",
              "Each stage's Keras model on the validation split (held out of the training "
              "images); the test set measures only the `.tflite` files above. A change is "
              "the model's against the baseline's on the same images, with its paired 95% "
              "interval (Newcombe's, from the images only one of the two classes right): "
              "an interval that holds 0 is a change the split cannot tell from none.", "",
              "| stage | model | params | non-zeros | MACs | Keras validation accuracy | "
              "change from the baseline (paired 95% CI) | time (s) | what it did |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for st in report["stages"]:
        drop = st.get("val_drop_pp")
        change = "—" if drop is None else _change(-drop / 100, st.get("val_drop_ci_pp"))
        lines.append(f"| {st['stage']} | `{st['model']}` | {_num(st['params'])} | "
                     f"{_num(st['nonzeros'])} | {_num(st['macs'])} | "
                     f"{_num(st['val_accuracy'], pct)} | {change} | "
                     f"{_num(st['seconds'], '{:.1f}')} | {st.get('figure') or '—'} |")
    stages = [st["stage"] for st in report["stages"]]
    lines += ["", "## Layers", "",
              "Units and weights of each layer with a kernel, in the first model and kept in "
              "the last; *zeros after <stage>*: the fraction of the layer's kernel weights "
              "that are zero in that stage's model.", "",
              "| layer | class | units | units kept | weights | weights kept | "
              + " | ".join(f"zeros after {stage}" for stage in stages) + " |",
              "|---|---|---:|---:|---:|---:|" + "---:|" * len(stages)]
    for row in report["layers"]:
        zeros = " | ".join(_num(row["kernel_zeros"].get(stage), "{:.1%}") for stage in stages)
        lines.append(f"| {row['name']} | {row['class']} | {row['units']} | "
                     f"{_num(row['units_kept'])} | {_num(row['weights'])} | "
                     f"{_num(row['weights_kept'])} | {zeros} |")
    lines += _files_section(report)
    lines += _tflm_section(report)
    total = sum(v for v in report["seconds"].values() if v)
    notes = f"Stage times total {total:.0f} s."
    if measured.get("latency_us") is not None:
        notes += (f" Latency: LiteRT interpreter ({measured.get('delegate')}), "
                  f"`{measured.get('speedup_over')}` and `{c['file']}` interleaved over "
                  f"{measured.get('rounds')} rounds; the speedup is the median of the "
                  "per-round ratios.")
    if measured.get("load_average"):
        notes += (f" Machine: {measured.get('cpu_count')} CPUs, load average "
                  f"{measured['load_average'][0]:.1f} during the benchmark.")
    lines += ["", notes + " Raw numbers in `report.json`.", ""]
    lines += _search_markdown(report)
    lines += _data_lines(report.get("data"))
    lines += [""]
    return "\n".join(lines)


def _files_section(report):
    """The table of every file (size, accuracy, latency) with the file-to-ship marks."""
    pct, chosen = "{:.2%}", report.get("ship") or {}
    front = set(chosen.get("front") or ())
    lines = ["", "## Files", "", "| file | model | quantize | sparse | bytes | gzip | "
             "test accuracy | change (paired 95% CI) | latency (µs) | speedup | ship |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, info in report["files"].items():
        drop = info.get("drop_pp")
        change = "—" if drop is None else stats.change_text(drop, info.get("drop_ci_pp"))
        marks = [m for m in ("smallest", "fastest") if chosen.get(m) == name]
        mark = ", ".join(["front"] * (name in front) + marks) or "—"
        speedup = info.get("speedup") if chosen else None  # no ratio for a broken model
        lines.append(f"| `{name}` | {info.get('model', '—')} | {info.get('quantize', '—')} | "
                     f"{info.get('sparse', '—')} | {_num(info.get('bytes'))} | "
                     f"{_num(info.get('gzip_bytes'))} | {_num(info.get('accuracy'), pct)} | "
                     f"{change} | {_num(info.get('latency_us'), '{:.1f}')} | "
                     f"{_x(speedup)} | {mark} |")
    if chosen:
        lines += ["", f"*ship*: the files that lose at most {chosen['bound_pp']} pp on the test "
                  "set (--max_accuracy_drop) and that no other such file beats on both size "
                  "and LiteRT latency (the Pareto *front*), with the *smallest* and the "
                  f"*fastest* of them. Within the bound: {len(chosen['within'])} file(s)."]
    return lines


def _data_lines(data, shown=20):
    """The report's data section: classes in label order, and where each split came from and
    which figures it makes."""
    if not data:
        return []
    names = data["classes"]
    classes = ", ".join(f"{i} `{name}`" for i, name in enumerate(names[:shown]))
    more = f", ... ({len(names)} in all, listed in `report.json`)" if len(names) > shown else ""
    lines = ["", "## Data", "", f"Dataset `{data['dataset']}`: {data['num_classes']} classes "
             f"(label: name) {classes}{more}. Scaling: {data['scaling']}."]
    if data.get("notes"):
        lines += ["", "Conversions: " + "; ".join(data["notes"]) + "."]
    lines += ["", "| split | images | from | its figures |", "|---|---:|---|---|"]
    for name, split in data["splits"].items():
        lines.append(f"| {name} | {_num(split['images'])} | {split['source']} | "
                     f"{split['used_for']} |")
    return lines


def _tflm_rows(report):
    """Rows of the main table measured on TFLite Micro: the int8 baseline vs compressed."""
    micro = report.get("tflm")
    if not micro:
        return []
    files = report["files"]
    b, c = files.get(micro["baseline_int8"]) or {}, files.get(micro["compressed"]) or {}
    pct = "{:.2%}"
    delta = (c["tflm_accuracy"] - b["tflm_accuracy"]
             if "tflm_accuracy" in c and "tflm_accuracy" in b else None)
    speedup = c.get("tflm_speedup")
    return [
        ("Flash on TFLite Micro (bytes; baseline: full int8)", _num(b.get("flash_bytes")),
         _num(c.get("flash_bytes")), _x(micro["flash_ratio_int8"])),
        ("Tensor arena on TFLite Micro (bytes, measured; baseline: full int8)",
         _num(b.get("arena_bytes")), _num(c.get("arena_bytes")), _x(micro["arena_ratio_int8"])),
        ("Test accuracy on TFLite Micro (baseline: full int8)",
         _num(b.get("tflm_accuracy"), pct), _num(c.get("tflm_accuracy"), pct), _pp(delta)),
        ("Latency on TFLite Micro reference kernels, host µs (baseline: full int8)",
         _num(b.get("tflm_latency_us"), "{:.1f}"), _num(c.get("tflm_latency_us"), "{:.1f}"),
         _x(speedup)),
    ]


def _tflm_section(report):
    """The TFLite Micro section: each file measured on it, and what the figures mean."""
    micro = report.get("tflm")
    if not micro:
        return []
    pct = "{:.2%}"
    lines = ["", "## TensorFlow Lite Micro", "",
             "Measured on TFLite Micro's interpreter for the host (the `tflite-micro` package): "
             "flash is the file's bytes; the arena is what its recording allocator used "
             "(activations as TFLM's planner lays them out, plus persistent data).", "",
             "| file | flash (bytes) | arena (bytes) | activations | persistent | "
             "TFLM test accuracy | images classed otherwise: LiteRT builtin / XNNPACK | "
             "host latency (µs) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, info in report["files"].items():
        if "arena_bytes" not in info:
            continue
        lines.append(f"| `{name}` | {_num(info.get('flash_bytes'))} | "
                     f"{_num(info.get('arena_bytes'))} | {_num(info.get('arena_activations'))} | "
                     f"{_num(info.get('arena_persistent'))} | "
                     f"{_num(info.get('tflm_accuracy'), pct)} | "
                     f"{_num(info.get('tflm_builtin_class_mismatches'))} / "
                     f"{_num(info.get('tflm_xnnpack_class_mismatches'))} | "
                     f"{_num(info.get('tflm_latency_us'), '{:.1f}')} |")
    lines += ["", f"`{micro['compressed']}` against the float baseline "
              f"`{micro['baseline_float']}`: flash {_x(micro['flash_ratio_float'])} smaller; "
              f"accuracy on TFLM {_pp(micro['accuracy_delta_float'])} from the float "
              "baseline's (on LiteRT). LiteRT's builtin kernels implement the int8 "
              "arithmetic of TFLM's reference kernels; XNNPACK (the `.tflite` test accuracy "
              "above) rounds its own way, so a near tie can fall the other way there. "
              "Latency: host CPU, TFLM's reference kernels, the two int8 files interleaved: "
              "a host figure, not a microcontroller's."]
    return lines

def _verdict_lines(report):
    """The verdict, first thing in `report.md`: earned, or each claim not earned and why."""
    result = report.get("verdict")
    if not result:
        return []
    if result["earned"]:
        met = ", ".join(claim["name"] for claim in result["claims"])
        accuracy = next((c["reason"] for c in result["claims"] if c["name"] == "accuracy"), None)
        said = f" Accuracy: {accuracy}." if accuracy else ""
        return [f"**Verdict: earned** (claims checked: {met or 'none'}).{said}", ""]
    return (["**Verdict: NOT EARNED.** The result falls short of what it would claim:", ""]
            + [f"- {reason}" for reason in result["unmet"]] + [""])


def _sparsity_text(report):
    """The per-layer sparsities: searched (with the widths), given, or the one for all."""
    cfg, search = report["config"], (report.get("results") or {}).get("search")
    if search:
        return f"{search['layer_sparsity']} (searched: {search['name']} units)"
    return cfg.get("layer_sparsity") or cfg.get("final_sparsity")


def _search_markdown(report):
    """The targets verdict and the search's candidates, for a run with a search."""
    rows, search = report.get("targets") or [], (report.get("results") or {}).get("search")
    if not rows and not search:
        return []
    units = {"bytes": "bytes", "speedup": "x", "latency_us": "µs", "macs": "MACs",
             "drop_pp": "pp"}

    def shown(value, figure):
        if value is None:
            return "—"
        return f"{value:.2f}" if figure in ("speedup", "drop_pp", "latency_us") else f"{value:,.0f}"

    lines = ["## Targets", "",
             "Judged on the final figures above: size from the export, speed from the "
             "benchmark, MACs from the compressed model, accuracy drop on the test set "
             "(`.tflite` files, measured once, at the end).", "",
             "| target | asked | bound | measured | met |", "|---|---|---:|---:|---|"]
    for t in rows:
        op = ">=" if t["at_least"] else "<="
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        value = shown(t["value"], t["figure"])
        ci = (report.get("summary") or {}).get("accuracy_drop_ci_pp")
        if t["figure"] == "drop_pp" and t["value"] is not None and ci is not None:
            value += f" (95% CI {ci[0]:.2f} to {ci[1]:.2f})"
        lines.append(f"| {t['name']} | {t['text']} | {op} {shown(t['bound'], t['figure'])} "
                     f"{units[t['figure']]} | {value} | {met} |")
    if not search:
        return lines + [""]
    b = search["baseline"]
    lines += ["", "## Search", "",
              f"{search['note']}. Searched layers (units): "
              + ", ".join(f"{k} ({v})" for k, v in search["units"].items())
              + f"; {search.get('measured') or len(search['candidates'])} candidates "
              f"measured (each a real `.tflite` file, exported and timed), the "
              f"{len(search['candidates'])} below on the path taken, "
              f"{sum(c['role'] == 'checked' for c in search['candidates'])} trained to "
              f"check them, in {search['seconds']:.0f} s. Accuracy on the validation split: "
              f"*predicted* from each layer's sensitivity; *fine-tuned along the path*: the "
              f"greedy's steps, each cut from the one before and briefly fine-tuned; "
              f"*trained* by the run's own stages, with the paired 95% interval of its "
              f"change. Baseline: {b['bytes']:,} bytes, validation accuracy "
              f"{b['val_accuracy']:.2%}.{_margin_text(search.get('margin'))}", "",
              "| candidate | role | bytes | smaller | speedup | latency (µs) | MACs | "
              "predicted drop (pp) | validation, fine-tuned along the path | "
              "validation, trained |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in search["candidates"]:
        f = c["figures"]
        name = f"**{c['name']}** (chosen)" if c["name"] == search["name"] else c["name"]
        lines.append(
            f"| {name} | {c['role']} | {f['bytes']:,} | {b['bytes'] / f['bytes']:.1f}x | "
            f"{_num(f.get('speedup'), '{:.1f}x')} | {_num(f.get('latency_us'), '{:.1f}')} | "
            f"{f['macs']:,} | {c['predicted_drop_pp']:.2f} | "
            f"{_num(c.get('tuned_val_accuracy'), '{:.2%}')}"
            + (f", {stats.change_text(c['tuned_drop_pp'], c['tuned_drop_ci_pp'])}"
               if c.get("tuned_drop_ci_pp") is not None else "") + " | "
            f"{_num(f.get('val_accuracy'), '{:.2%}')}"
            + (f", {stats.change_text(f['drop_pp'], f['drop_ci_pp'])}"
               if f.get("drop_ci_pp") is not None else "") + " |")
    return lines + [""]


def _margin_text(margin):
    """The search's accuracy plan: the bound, the validation split's margin, what it used."""
    if not margin:
        return ""
    text = (f" The accuracy bound, {margin['bound_pp']:g} pp, was planned against less "
            f"the validation split's margin: ±{margin['margin_pp']:.2f} pp on "
            f"{margin['validation_images']:,} images (95%, paired), so "
            f"{margin['planned_pp']:.2f} pp.")
    if not margin.get("resolved") and margin.get("needed_images"):
        text += (f" **The split is too small for the bound**: about "
                 f"{margin['needed_images']:,} images would resolve it.")
    return text


def _plots(folder, report):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name):
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        atomic.write_bytes(folder / name, buf.getvalue())
        written.append(name)

    stages_png, tflite_png, layers_png = PLOTS
    stages = report["stages"]
    names = [st["stage"] for st in stages]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].bar(names, [st["nonzeros"] or 0 for st in stages], color="tab:blue")
    axes[0].set_yscale("log")
    axes[0].set_title("non-zero parameters per stage")
    axes[1].plot(names, [100 * (st["val_accuracy"] or 0) for st in stages], "o-")
    axes[1].set_title("Keras validation accuracy per stage (%)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    save(fig, stages_png)

    s = report["summary"]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    pairs = [("size (KiB)", "bytes", 1 / 1024), ("latency (µs)", "latency_us", 1),
             ("accuracy (%)", "accuracy", 100)]
    for ax, (title, key, scale) in zip(axes, pairs, strict=True):
        values = [(s[m][key] or 0) * scale for m in ("baseline", "compressed")]
        ax.bar(["baseline", "compressed"], values, color=["tab:gray", "tab:green"])
        ax.set_title(".tflite " + title)
        if key == "accuracy" and min(values) > 0:
            ax.set_ylim(min(values) - 1, 100)
    save(fig, tflite_png)

    layers = report["layers"]
    if layers:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        labels = [r["name"] for r in layers]
        xs = range(len(layers))
        width = 0.8 / max(1, len(names))
        for i, stage in enumerate(names):
            axes[0].bar([x + (i - (len(names) - 1) / 2) * width for x in xs],
                        [100 * (r["kernel_zeros"].get(stage) or 0) for r in layers], width,
                        label=stage)
        axes[0].set_xticks(list(xs), labels)
        axes[0].legend(fontsize="small")
        axes[0].set_title("kernel zeros per layer after each stage (%)")
        axes[1].bar([x - 0.2 for x in xs], [r["units"] for r in layers], 0.4, label="baseline")
        axes[1].bar([x + 0.2 for x in xs], [r["units_kept"] or 0 for r in layers], 0.4,
                    label="kept")
        axes[1].set_xticks(list(xs), labels)
        axes[1].set_yscale("log")
        axes[1].legend()
        axes[1].set_title("units per layer")
        save(fig, layers_png)
    if report.get("tflm"):
        _memory_plot(plt, save, report)
    search = (report.get("results") or {}).get("search")
    if search:
        save(_search_figure(plt, search), SEARCH_PLOT)
    return written


def _memory_plot(plt, save, report):
    """Flash and TFLM arena of the float baseline, the int8 baseline and the compressed file."""
    micro, files = report["tflm"], report["files"]
    names = [(label, micro[key]) for label, key in (
        ("baseline\nfloat32", "baseline_float"), ("baseline\nint8", "baseline_int8"),
        ("compressed\nint8", "compressed")) if micro.get(key)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, (title, key) in zip(axes, (("flash: .tflite bytes (KiB)", "flash_bytes"),
                                       ("tensor arena on TFLite Micro (KiB)", "arena_bytes")),
                                strict=True):
        values = [(files[name].get(key) or 0) / 1024 for _, name in names]
        bars = ax.bar([label for label, _ in names], values,
                      color=["tab:gray", "tab:blue", "tab:green"][:len(names)])
        ax.bar_label(bars, fmt="%.1f")
        ax.set_yscale("log")
        ax.set_title(title)
    save(fig, MEMORY_PLOT)


def _search_figure(plt, search):
    """Size (and speedup) of each candidate against its validation accuracy, targets drawn."""
    base = search["baseline"]
    goals = {g["figure"]: g for g in search["goals"]}
    timed = any(c["figures"].get("speedup") is not None for c in search["candidates"])
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(10 if timed else 5.5, 4),
                             squeeze=False)
    accuracy = 100 * base["val_accuracy"]
    panels = [("bytes", ".tflite size (KB)", 1e-3)] + (
        [("speedup", "speedup over the baseline (x)", 1)] if timed else [])
    for ax, (figure, label, scale) in zip(axes[0], panels, strict=True):
        series = (("predicted (sensitivity)", ".", lambda c: (
                       None if c.get("tuned_val_accuracy") is not None
                       else accuracy - c["predicted_drop_pp"])),
                  ("fine-tuned along the path", "x", lambda c: (
                      None if c.get("tuned_val_accuracy") is None
                      else 100 * c["tuned_val_accuracy"])),
                  ("trained (check)", "o", lambda c: (
                      None if c["figures"].get("val_accuracy") is None
                      else 100 * c["figures"]["val_accuracy"])))
        for label_, marker, value in series:
            points = [(c["figures"][figure] * scale, value(c)) for c in search["candidates"]
                      if value(c) is not None and c["figures"].get(figure) is not None]
            if points:
                ax.scatter(*zip(*points, strict=True), marker=marker, label=label_)
        chosen = next(c for c in search["candidates"] if c["name"] == search["name"])
        if chosen["figures"].get("val_accuracy") is not None:
            ax.scatter([chosen["figures"][figure] * scale],
                       [100 * chosen["figures"]["val_accuracy"]], marker="*", s=200,
                       color="tab:red", label=f"chosen {chosen['name']}", zorder=4)
        if figure in goals:
            ax.axvline(goals[figure]["bound"] * scale, color="tab:gray", linestyle="--",
                       label=f"target {goals[figure]['text']}")
        if "drop_pp" in goals:
            ax.axhline(accuracy - goals["drop_pp"]["bound"], color="tab:green",
                       linestyle=":", label=f"max drop {goals['drop_pp']['text']}")
        ax.axhline(accuracy, color="black", linewidth=0.8, label="baseline")
        if figure == "bytes":
            from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(max(accuracy - 2.0, min(ax.get_ylim()[0], accuracy - 0.5)), accuracy + 0.3)
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy (%)")
        ax.legend(fontsize="small")
    fig.suptitle("search: the candidates on its path, and those trained to check them")
    return fig
