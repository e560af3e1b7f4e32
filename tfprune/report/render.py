"""The report rendered: its one-line `headline`, `report.md` (`markdown`), and `write`,
which puts `report.json`, `report.md` and the plots in the run folder.
"""

import json
from pathlib import Path

from tfprune import atomic, stats, verdict
from tfprune.report.format import DASH, change, num, ratio
from tfprune.report.part import contributions
from tfprune.report.plots import draw
from tfprune.report.tables import FILES


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
    speed = f"{ratio(s.get('speedup'))} faster"
    if s.get("speedup") is not None and s["speedup"] < 1:  # never "0.4x faster"
        why = s.get("slower_reason") if not report.get("verdict") else None  # it says why
        speed = f"{ratio(1 / s['speedup'])} SLOWER" + (f" ({why})" if why else "")
    named = f"{s['judged_file']} (meets every target): " if s.get("judged_file") else ""
    return verdict.line(report, f"{named}{ratio(s.get('size_ratio'))} smaller, {speed}, "
                                f"accuracy "
                                f"{change(s.get('accuracy_delta'), s.get('accuracy_drop_ci_pp'))}")


def write(folder, report, plots=True, stages=()):
    """Writes `report.json`, `report.md` and (with `plots`) the PNGs into `folder`.

    Args:
        folder: The run folder (it must exist).
        report: The dict `build` returns.
        plots: Boolean, draw the PNG plots too, defaults to `True`.
        stages: The run's stage declarations, in order: each adds its part
            (`Stage.report`, a `tfprune.report.Part`) to `report.md` and the plots.

    Returns:
        The list of file names written (`FILES`, `PLOTS` and the stages' plots).
    """
    folder = Path(folder)
    json_name, md_name = FILES
    atomic.write_text(folder / json_name, json.dumps(report, indent=1))
    atomic.write_text(folder / md_name, markdown(report, stages))
    written = list(FILES)
    if plots:
        written += draw(folder, report, stages)
    return written


def markdown(report, stages=()):
    """The report as Markdown: the baseline-vs-compressed table, stages, layers, files,
    targets, data, and the part of each of `stages` (`Stage.report`), in stage order."""
    lines = [*_summary_table(report, stages), *_stages_table(report), *_layers_table(report),
             *_files_section(report)]
    for section in contributions(stages, "section", report):
        lines += section
    lines += [*_notes(report), *_targets_section(report)]
    for appendix in contributions(stages, "appendix", report):
        lines += appendix
    return "\n".join([*lines, *_data_lines(report.get("data")), ""])


def _summary_table(report, stages):
    """The title, the verdict, what was done, and the table of baseline vs compressed."""
    s, cfg = report["summary"], report["config"]
    b, c = s["baseline"], s["compressed"]
    pct = "{:.2%}"
    rows = [
        ("Parameters", num(b["params"]), num(c["params"]), ratio(s["params_ratio"])),
        ("Non-zero parameters", num(b["nonzeros"]), num(c["nonzeros"]),
         ratio(s["nonzeros_ratio"])),
        ("MACs", num(b["macs"]), num(c["macs"]), ratio(s["macs_ratio"])),
        (".tflite size (bytes)", num(b["bytes"]), num(c["bytes"]), ratio(s["size_ratio"])),
        (".tflite size gzip (bytes)", num(b["gzip_bytes"]), num(c["gzip_bytes"]),
         ratio(s["gzip_ratio"])),
        (".tflite test accuracy", num(b["accuracy"], pct),
         num(c["accuracy"], pct), change(s["accuracy_delta"], s.get("accuracy_drop_ci_pp"))),
        (f"Latency median, µs ({cfg.get('bench_threads')} thread, batch "
         f"{cfg.get('bench_batch_size')})", num(b["latency_us"], "{:.1f}"),
         num(c["latency_us"], "{:.1f}"), ratio(s["speedup"])),
    ]
    for more in contributions(stages, "rows", report):
        rows += more
    # A stage that decided the per-layer sparsities (a search) says so; else the settings.
    sparsity = next((text for text in contributions(stages, "sparsity", report) if text),
                    cfg.get("layer_sparsity") or cfg.get("final_sparsity"))
    lines = [f"# tfprune run: {cfg.get('model')} on {cfg.get('dataset')}", "",
             *_verdict_lines(report),
             f"Compressed model: `{c.get('quantize')}` quantization, sparse encoding "
             f"{'on' if c.get('sparse') else 'off'}; merges: {cfg.get('merge')}; "
             f"granularity: `{cfg.get('granularity')}`, sparsity {sparsity}.", "",
             "Ratios are baseline / compressed: for latency, the speedup.", "",
             *([f"**The compressed file is slower than the baseline**: {s['slower_reason']}.",
                ""] if s.get("slower_reason") else []),
             *([f"Sparse encoding: {s['sparse_reason']}.", ""] if s.get("sparse_reason")
               else []),
             "| | baseline | compressed | ratio |", "|---|---:|---:|---:|"]
    return lines + [f"| {a} | {b_} | {c_} | {r} |" for a, b_, c_, r in rows]


def _stages_table(report):
    """Each model stage's Keras model on the validation split, against the baseline's."""
    lines = ["", "## Stages (Keras models)", "",
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
        shift = DASH if drop is None else change(-drop / 100, st.get("val_drop_ci_pp"))
        lines.append(f"| {st['stage']} | `{st['model']}` | {num(st['params'])} | "
                     f"{num(st['nonzeros'])} | {num(st['macs'])} | "
                     f"{num(st['val_accuracy'], '{:.2%}')} | {shift} | "
                     f"{num(st['seconds'], '{:.1f}')} | {st.get('figure') or DASH} |")
    return lines


def _layers_table(report):
    """Units and weights per layer, first model against last, and its zeros after each
    model stage."""
    stages = [st["stage"] for st in report["stages"]]
    lines = ["", "## Layers", "",
             "Units and weights of each layer with a kernel, in the first model and kept in "
             "the last; *zeros after <stage>*: the fraction of the layer's kernel weights "
             "that are zero in that stage's model.", "",
             "| layer | class | units | units kept | weights | weights kept | "
             + " | ".join(f"zeros after {stage}" for stage in stages) + " |",
             "|---|---|---:|---:|---:|---:|" + "---:|" * len(stages)]
    for row in report["layers"]:
        zeros = " | ".join(num(row["kernel_zeros"].get(stage), "{:.1%}") for stage in stages)
        lines.append(f"| {row['name']} | {row['class']} | {row['units']} | "
                     f"{num(row['units_kept'])} | {num(row['weights'])} | "
                     f"{num(row['weights_kept'])} | {zeros} |")
    return lines


def _notes(report):
    """How long the stages took, and how the latency in the table was measured."""
    c = report["summary"]["compressed"]
    measured = (report["files"].get(c["file"]) or {}) if c["file"] else {}
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
    return ["", notes + " Raw numbers in `report.json`.", ""]


def _targets_section(report):
    """Each target of the run, judged on the final figures (`tables.targets`)."""
    rows = report.get("targets") or []
    if not rows:
        return []
    units = {"bytes": "bytes", "speedup": "x", "latency_us": "µs", "macs": "MACs",
             "drop_pp": "pp"}

    def shown(value, figure):
        if value is None:
            return DASH
        return f"{value:.2f}" if figure in ("speedup", "drop_pp", "latency_us") else f"{value:,.0f}"

    lines = ["## Targets", "",
             "Judged on the final figures above: size from the export, speed from the "
             "benchmark, MACs from the compressed model, accuracy drop on the test set "
             "(`.tflite` files, measured once, at the end)"
             + (f"; on `{report['summary']['judged_file']}`, the first file of the run that "
                "meets every target (the first exported misses one)"
                if (report.get("summary") or {}).get("judged_file") else "") + ".", "",
             "| target | asked | bound | measured | met |", "|---|---|---:|---:|---|"]
    ci = (report.get("summary") or {}).get("accuracy_drop_ci_pp")
    for t in rows:
        op = ">=" if t["at_least"] else "<="
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        value = shown(t["value"], t["figure"])
        if t["figure"] == "drop_pp" and t["value"] is not None and ci is not None:
            value += f" (95% CI {ci[0]:.2f} to {ci[1]:.2f})"
        lines.append(f"| {t['name']} | {t['text']} | {op} {shown(t['bound'], t['figure'])} "
                     f"{units[t['figure']]} | {value} | {met} |")
    return lines + [""]


def _files_section(report):
    """The table of every file (size, accuracy, latency) with the file-to-ship marks."""
    pct, chosen = "{:.2%}", report.get("ship") or {}
    front = set(chosen.get("front") or ())
    lines = ["", "## Files", "", "| file | model | quantize | sparse | bytes | gzip | "
             "test accuracy | change (paired 95% CI) | latency (µs) | speedup | ship |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, info in report["files"].items():
        drop = info.get("drop_pp")
        shift = DASH if drop is None else stats.change_text(drop, info.get("drop_ci_pp"))
        marks = [text for key, text in (("smallest", "smallest"), ("fastest", "fastest"),
                                        ("fastest_tflm", "fastest on TFLM"),
                                        ("smallest_arena", "smallest TFLM arena"))
                 if chosen.get(key) == name]
        mark = ", ".join(["front"] * (name in front) + marks) or "—"
        speedup = info.get("speedup") if chosen else None  # no ratio for a broken model
        lines.append(f"| `{name}` | {info.get('model', '—')} | {info.get('quantize', '—')} | "
                     f"{info.get('sparse', '—')} | {num(info.get('bytes'))} | "
                     f"{num(info.get('gzip_bytes'))} | {num(info.get('accuracy'), pct)} | "
                     f"{shift} | {num(info.get('latency_us'), '{:.1f}')} | "
                     f"{ratio(speedup)} | {mark} |")
    if chosen:
        lines += ["", f"*ship*: the files that lose at most {chosen['bound_pp']} pp on the test "
                  "set (--max_accuracy_drop) and that no other such file beats on both size "
                  "and LiteRT latency (the Pareto *front*), with the *smallest* and the "
                  f"*fastest* of them. Within the bound: {len(chosen['within'])} file(s)."
                  + (" Of those TFLite Micro ran (a microcontroller runs no other): the "
                     "*fastest on TFLM* (host latency, reference kernels) and the one with "
                     "the *smallest TFLM arena*." if chosen.get("fastest_tflm") else "")]
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
        lines.append(f"| {name} | {num(split['images'])} | {split['source']} | "
                     f"{split['used_for']} |")
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


