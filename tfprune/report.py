"""The run's report: `report.json`, `report.md` (a table like the paper's) and PNG plots.

`build` turns the stage results of `tfprune.pipeline` into one JSON-ready dict; `write`
renders it into the run folder (every file atomically). Plots use matplotlib's Agg backend,
so no display is needed.
"""

import dataclasses
import io
import json
from pathlib import Path

from tfprune import atomic

MODEL_STAGES = (("baseline", "baseline"), ("prune", "pruned"), ("merge", "merged"),
                ("retrain", "retrained"), ("shrink", "compressed"))


def build(config, results, records):
    """The report as a dict.

    Args:
        config: The run's `PipelineConfig` (or a dict of its fields).
        results: Dict of stage name -> that stage's result (see `tfprune.pipeline`).
        records: Dict of stage name -> its record (hash, seconds, figure, outputs).

    Returns:
        Dict with `config`, `stages` (one row per Keras model stage), `tflite` (per file),
        `benchmark`, `layers` (per-layer units and sparsity, baseline vs compressed) and
        `summary` (baseline vs compressed with ratios).
    """
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    stages = []
    for stage, model_name in MODEL_STAGES:
        result = results.get(stage) or {}
        if not result:
            continue
        stages.append({"stage": stage, "model": f"{model_name}.keras",
                       "params": result.get("params"), "nonzeros": result.get("nonzeros"),
                       "macs": result.get("macs"), "keras_accuracy": result.get("keras_accuracy"),
                       "seconds": (records.get(stage) or {}).get("seconds")})
    tflite = {}
    for name, info in (results.get("export") or {}).items():
        tflite[name] = {**info, "accuracy": (results.get("verify") or {}).get(name)}
    bench = results.get("benchmark") or {}
    summary = _summary(results, tflite, bench)
    return {"config": cfg, "stages": stages, "tflite": tflite, "benchmark": bench,
            "layers": _layers(results), "summary": summary,
            "seconds": {s: r.get("seconds") for s, r in records.items()}}


def _summary(results, tflite, bench):
    base = results.get("baseline") or {}
    comp = results.get("shrink") or {}
    bt, ct = tflite.get("baseline.tflite", {}), tflite.get("compressed.tflite", {})

    def ratio(a, b):
        return a / b if a and b else None

    acc_b, acc_c = bt.get("accuracy"), ct.get("accuracy")
    return {
        "baseline": {"params": base.get("params"), "nonzeros": base.get("nonzeros"),
                     "macs": base.get("macs"), "bytes": bt.get("bytes"),
                     "gzip_bytes": bt.get("gzip_bytes"), "accuracy": acc_b,
                     "latency_us": bench.get("baseline_median_us")},
        "compressed": {"params": comp.get("params"), "nonzeros": comp.get("nonzeros"),
                       "macs": comp.get("macs"), "bytes": ct.get("bytes"),
                       "gzip_bytes": ct.get("gzip_bytes"), "accuracy": acc_c,
                       "latency_us": bench.get("compressed_median_us"),
                       "quantize": ct.get("quantize"), "sparse": ct.get("sparse")},
        "params_ratio": ratio(base.get("params"), comp.get("params")),
        "nonzeros_ratio": ratio(base.get("nonzeros"), comp.get("nonzeros")),
        "macs_ratio": ratio(base.get("macs"), comp.get("macs")),
        "size_ratio": ratio(bt.get("bytes"), ct.get("bytes")),
        "gzip_ratio": ratio(bt.get("gzip_bytes"), ct.get("gzip_bytes")),
        "speedup": bench.get("speedup"),
        "accuracy_delta": (acc_c - acc_b) if acc_b is not None and acc_c is not None else None,
    }


def _layers(results):
    base = {r["name"]: r for r in (results.get("baseline") or {}).get("layers", [])}
    comp = {r["name"]: r for r in (results.get("shrink") or {}).get("layers", [])}
    pruned = {r["name"]: r for r in (results.get("retrain") or {}).get("layers", [])}
    rows = []
    for name, row in base.items():
        kept = comp.get(name)
        rows.append({"name": name, "class": row["class"], "units": row["units"],
                     "units_kept": kept["units"] if kept else None,
                     "weights": row["weights"], "weights_kept": kept["weights"] if kept else None,
                     "sparsity": (pruned.get(name) or kept or {}).get("sparsity")})
    return rows


def write(folder, report, plots=True):
    """Writes `report.json`, `report.md` and (with `plots`) the PNGs into `folder`.

    Returns:
        The list of file names written.
    """
    folder = Path(folder)
    atomic.write_text(folder / "report.json", json.dumps(report, indent=1))
    atomic.write_text(folder / "report.md", markdown(report))
    written = ["report.json", "report.md"]
    if plots:
        written += _plots(folder, report)
    return written


def _num(value, fmt="{:,}"):
    return "—" if value is None else fmt.format(value)


def _x(value):
    return "—" if value is None else f"{value:.1f}x"


def markdown(report):
    """The report as Markdown: the baseline-vs-compressed table, stages, layers, files."""
    s = report["summary"]
    b, c = s["baseline"], s["compressed"]
    pct = "{:.2%}"
    lat = "{:.1f} µs"
    cfg = report["config"]
    rows = [
        ("Parameters", _num(b["params"]), _num(c["params"]), _x(s["params_ratio"])),
        ("Non-zero parameters", _num(b["nonzeros"]), _num(c["nonzeros"]),
         _x(s["nonzeros_ratio"])),
        ("MACs", _num(b["macs"]), _num(c["macs"]), _x(s["macs_ratio"])),
        (".tflite size (bytes)", _num(b["bytes"]), _num(c["bytes"]), _x(s["size_ratio"])),
        (".tflite size gzip (bytes)", _num(b["gzip_bytes"]), _num(c["gzip_bytes"]),
         _x(s["gzip_ratio"])),
        (".tflite test accuracy", _num(b["accuracy"], pct), _num(c["accuracy"], pct),
         "—" if s["accuracy_delta"] is None else f"{100 * s['accuracy_delta']:+.2f} pp"),
        (f"Latency median ({cfg.get('bench_threads')} thread, batch {cfg.get('bench_batch_size')})",
         _num(b["latency_us"], lat), _num(c["latency_us"], lat), _x(s["speedup"])),
    ]
    lines = [f"# tfprune run: {cfg.get('model')} on {cfg.get('dataset')}", "",
             f"Compressed model: `{c.get('quantize')}` quantization, sparse encoding "
             f"{'on' if c.get('sparse') else 'off'}; merges: {cfg.get('merge')}; "
             f"granularity: `{cfg.get('granularity')}`, sparsity "
             f"{cfg.get('layer_sparsity') or cfg.get('final_sparsity')}.", "",
             "| | baseline | compressed | ratio |", "|---|---:|---:|---:|"]
    lines += [f"| {a} | {b_} | {c_} | {r} |" for a, b_, c_, r in rows]
    lines += ["", "## Stages (Keras models)", "",
              "| stage | model | params | non-zeros | MACs | Keras test accuracy | time (s) |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for st in report["stages"]:
        lines.append(f"| {st['stage']} | `{st['model']}` | {_num(st['params'])} | "
                     f"{_num(st['nonzeros'])} | {_num(st['macs'])} | "
                     f"{_num(st['keras_accuracy'], pct)} | {_num(st['seconds'], '{:.1f}')} |")
    lines += ["", "## Layers", "",
              "| layer | class | units | units kept | weights | weights kept | sparsity |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for row in report["layers"]:
        lines.append(f"| {row['name']} | {row['class']} | {row['units']} | "
                     f"{_num(row['units_kept'])} | {_num(row['weights'])} | "
                     f"{_num(row['weights_kept'])} | {_num(row['sparsity'], '{:.1%}')} |")
    lines += ["", "## .tflite files", "", "| file | quantize | sparse | bytes | gzip | "
              "test accuracy |", "|---|---|---|---:|---:|---:|"]
    for name, info in report["tflite"].items():
        lines.append(f"| `{name}` | {info['quantize']} | {info['sparse']} | "
                     f"{_num(info['bytes'])} | {_num(info['gzip_bytes'])} | "
                     f"{_num(info['accuracy'], pct)} |")
    total = sum(v for v in report["seconds"].values() if v)
    bench = report.get("benchmark") or {}
    machine = ""
    if bench.get("load_average"):
        machine = (f" Machine: {bench.get('cpu_count')} CPUs, load average "
                   f"{bench['load_average'][0]:.1f} during the benchmark.")
    lines += ["", f"Stage times total {total:.0f} s. Latency: LiteRT interpreter "
              f"({'/'.join(dict.fromkeys(bench.get('delegates_used', ['XNNPACK'])))}), "
              f"baseline and compressed interleaved over {bench.get('runs', '?')} rounds; "
              "the ratio is the median of the per-round ratios." + machine +
              " Raw numbers in `report.json`.", ""]
    return "\n".join(lines)


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

    stages = report["stages"]
    names = [st["stage"] for st in stages]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].bar(names, [st["nonzeros"] or 0 for st in stages], color="tab:blue")
    axes[0].set_yscale("log")
    axes[0].set_title("non-zero parameters per stage")
    axes[1].plot(names, [100 * (st["keras_accuracy"] or 0) for st in stages], "o-")
    axes[1].set_title("Keras test accuracy per stage (%)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    save(fig, "stages.png")

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
    save(fig, "tflite.png")

    layers = report["layers"]
    if layers:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        labels = [r["name"] for r in layers]
        axes[0].bar(labels, [100 * (r["sparsity"] or 0) for r in layers])
        axes[0].set_title("sparsity per layer (%)")
        xs = range(len(layers))
        axes[1].bar([x - 0.2 for x in xs], [r["units"] for r in layers], 0.4, label="baseline")
        axes[1].bar([x + 0.2 for x in xs], [r["units_kept"] or 0 for r in layers], 0.4,
                    label="kept")
        axes[1].set_xticks(list(xs), labels)
        axes[1].set_yscale("log")
        axes[1].legend()
        axes[1].set_title("units per layer")
        save(fig, "layers.png")
    return written
