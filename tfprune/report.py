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

from tfprune import atomic, verdict

FILES = ("report.json", "report.md")
PLOTS = ("stages.png", "tflite.png", "layers.png")


def build(config, stages, results, records):
    """The report as a dict.

    Args:
        config: The run's `PipelineConfig` (or a dict of its fields).
        stages: The run's stage declarations, in order (`tfprune.pipeline.Stage`: their
            `name`, `model` and `model_file` are read).
        results: Dict of stage name -> that stage's result.
        records: Dict of stage name -> its record (hash, seconds, figure, outputs).

    Returns:
        Dict with `config`; `stages` (one row per stage that made a Keras model); `files`
        (per file, the facts the stages reported about it); `layers` (per layer of the
        first model: units and weights kept in the last, kernel zeros after each model
        stage); `summary` (baseline vs compressed, with ratios); `seconds` per stage; the
        raw `results`; and the `verdict` (`tfprune.verdict.judge`).

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
                     "seconds": (records.get(stage.name) or {}).get("seconds")})
    files = {}
    for stage in stages:
        for name, facts in ((results.get(stage.name) or {}).get("files") or {}).items():
            files.setdefault(name, {}).update(facts)
    report = {"config": cfg, "stages": rows, "files": files,
              "layers": _layers(models, results), "summary": _summary(models, results, files),
              "seconds": {s: r.get("seconds") for s, r in records.items()},
              "results": {stage.name: results[stage.name] for stage in stages
                          if stage.name in results}}
    report["verdict"] = verdict.judge(report)
    if not report["verdict"]["finite"]:  # no ratio is ever stated for a broken model
        report["summary"].update(dict.fromkeys(RATIOS))
    return report


RATIOS = ("params_ratio", "nonzeros_ratio", "macs_ratio", "size_ratio", "gzip_ratio", "speedup",
          "accuracy_delta")


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
                "quantize": facts.get("quantize"), "sparse": facts.get("sparse")}

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
    }


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
    >>> report.headline({"summary": {"size_ratio": 31.8, "speedup": 0.9,
    ...                              "accuracy_delta": -0.015},
    ...                  "verdict": {"earned": False, "unmet": ["slower: 0.90x"]}})
    'NOT EARNED (slower: 0.90x): 31.8x smaller, 0.9x faster, accuracy -1.50 pp'
    """
    s = report["summary"]
    return verdict.line(report, f"{_x(s.get('size_ratio'))} smaller, {_x(s.get('speedup'))} "
                                f"faster, accuracy {_pp(s.get('accuracy_delta'))}")


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
        (".tflite test accuracy", _num(b["accuracy"], pct), _num(c["accuracy"], pct),
         _pp(s["accuracy_delta"])),
        (f"Latency median, µs ({cfg.get('bench_threads')} thread, batch "
         f"{cfg.get('bench_batch_size')})", _num(b["latency_us"], "{:.1f}"),
         _num(c["latency_us"], "{:.1f}"), _x(s["speedup"])),
    ]
    lines = [f"# tfprune run: {cfg.get('model')} on {cfg.get('dataset')}", "",
             *_verdict_lines(report),
             f"Compressed model: `{c.get('quantize')}` quantization, sparse encoding "
             f"{'on' if c.get('sparse') else 'off'}; merges: {cfg.get('merge')}; "
             f"granularity: `{cfg.get('granularity')}`, sparsity "
             f"{cfg.get('layer_sparsity') or cfg.get('final_sparsity')}.", "",
             "Ratios are baseline / compressed: for latency, the speedup.", "",
             "| | baseline | compressed | ratio |", "|---|---:|---:|---:|"]
    lines += [f"| {a} | {b_} | {c_} | {r} |" for a, b_, c_, r in rows]
    lines += ["", "## Stages (Keras models)", "",
              "Each stage's Keras model on the validation split (held out of the training "
              "images); the test set measures only the `.tflite` files above.", "",
              "| stage | model | params | non-zeros | MACs | Keras validation accuracy | "
              "time (s) |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for st in report["stages"]:
        lines.append(f"| {st['stage']} | `{st['model']}` | {_num(st['params'])} | "
                     f"{_num(st['nonzeros'])} | {_num(st['macs'])} | "
                     f"{_num(st['val_accuracy'], pct)} | {_num(st['seconds'], '{:.1f}')} |")
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
    lines += ["", "## Files", "", "| file | model | quantize | sparse | bytes | gzip | "
              "test accuracy | latency (µs) |", "|---|---|---|---|---:|---:|---:|---:|"]
    for name, info in report["files"].items():
        lines.append(f"| `{name}` | {info.get('model', '—')} | {info.get('quantize', '—')} | "
                     f"{info.get('sparse', '—')} | {_num(info.get('bytes'))} | "
                     f"{_num(info.get('gzip_bytes'))} | {_num(info.get('accuracy'), pct)} | "
                     f"{_num(info.get('latency_us'), '{:.1f}')} |")
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
    return "\n".join(lines)


def _verdict_lines(report):
    """The verdict, first thing in `report.md`: earned, or each claim not earned and why."""
    result = report.get("verdict")
    if not result:
        return []
    if result["earned"]:
        met = ", ".join(claim["name"] for claim in result["claims"])
        return [f"**Verdict: earned** (claims checked: {met or 'none'}).", ""]
    return (["**Verdict: NOT EARNED.** The result falls short of what it would claim:", ""]
            + [f"- {reason}" for reason in result["unmet"]] + [""])


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
    return written
