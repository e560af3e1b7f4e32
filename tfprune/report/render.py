"""The report rendered: its one-line `headline`, `report.md` (`markdown`), and `write`,
which puts `report.json`, `report.md` and the plots in the run folder.
"""

import json
from pathlib import Path

from tfprune import atomic, stats, verdict
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
        written += draw(folder, report)
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


