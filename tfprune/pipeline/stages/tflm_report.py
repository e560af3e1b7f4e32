"""The tflm stage's part of the report (`PART`): its facts in `report.json` (which files
are the float baseline, the full-int8 baseline and the compressed file, and their ratios),
its rows of the main table, its section of `report.md` (each file measured on TFLite
Micro) and its plot (`memory.png`, flash and arena).

The facts come from the files' facts (`arena_bytes` and the rest, which the stage reports
under `result["files"]`); the rest reads them back from `report[name]`, `name` being the
stage's.
"""

from tfprune.report import Part
from tfprune.report.format import num, pp, ratio

PLOT = "memory.png"


def facts(models, files):
    """The TFLite Micro figures, when a stage measured files on it (`arena_bytes`), else None.

    Names the float baseline, the full-int8 baseline and the compressed file, with the
    ratios the microcontroller section of the report shows.
    """
    measured = {name: info for name, info in files.items() if "arena_bytes" in info}
    if not models or not measured:
        return None

    def pick(model, quantize=None):
        return next((name for name, info in measured.items() if info.get("model") == model
                     and (quantize is None or info.get("quantize") == quantize)), None)

    base_float, base_int8 = pick(models[0].model, "none"), pick(models[0].model, "int8")
    comp = pick(models[-1].model)
    f, b, c = (measured.get(name) or {} for name in (base_float, base_int8, comp))

    def share(key, x, y):
        return x[key] / y[key] if x.get(key) and y.get(key) else None

    accuracy = c.get("tflm_accuracy")
    return {"baseline_float": base_float, "baseline_int8": base_int8, "compressed": comp,
            "flash_ratio_float": share("flash_bytes", f, c),
            "flash_ratio_int8": share("flash_bytes", b, c),
            "arena_ratio_int8": share("arena_bytes", b, c),
            "accuracy_delta_float": (accuracy - f["accuracy"] if accuracy is not None
                                     and f.get("accuracy") is not None else None),
            **{f"class_mismatches_{kind}": (b.get(f"tflm_{kind}_class_mismatches", 0)
                                            + c.get(f"tflm_{kind}_class_mismatches", 0))
               for kind in ("builtin", "xnnpack")}}


def rows(report, name):
    """Rows of the main table measured on TFLite Micro: the int8 baseline vs compressed."""
    micro = report.get(name)
    if not micro:
        return []
    files = report["files"]
    b, c = files.get(micro["baseline_int8"]) or {}, files.get(micro["compressed"]) or {}
    pct = "{:.2%}"
    delta = (c["tflm_accuracy"] - b["tflm_accuracy"]
             if "tflm_accuracy" in c and "tflm_accuracy" in b else None)
    return [
        ("Flash on TFLite Micro (bytes; baseline: full int8)", num(b.get("flash_bytes")),
         num(c.get("flash_bytes")), ratio(micro["flash_ratio_int8"])),
        ("Tensor arena on TFLite Micro (bytes, measured; baseline: full int8)",
         num(b.get("arena_bytes")), num(c.get("arena_bytes")), ratio(micro["arena_ratio_int8"])),
        ("Test accuracy on TFLite Micro (baseline: full int8)",
         num(b.get("tflm_accuracy"), pct), num(c.get("tflm_accuracy"), pct), pp(delta)),
        ("Latency on TFLite Micro reference kernels, host µs (baseline: full int8)",
         num(b.get("tflm_latency_us"), "{:.1f}"), num(c.get("tflm_latency_us"), "{:.1f}"),
         ratio(c.get("tflm_speedup"))),
    ]


def section(report, name):
    """The TFLite Micro section: each file measured on it, and what the figures mean."""
    micro = report.get(name)
    if not micro:
        return []
    lines = ["", "## TensorFlow Lite Micro", "",
             "Measured on TFLite Micro's interpreter for the host (the `tflite-micro` package): "
             "flash is the file's bytes; the arena is what its recording allocator used "
             "(activations as TFLM's planner lays them out, plus persistent data).", "",
             "| file | flash (bytes) | arena (bytes) | activations | persistent | "
             "TFLM test accuracy | images classed otherwise: LiteRT builtin / XNNPACK | "
             "host latency (µs) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [_file_row(file, info) for file, info in report["files"].items()
              if "arena_bytes" in info]
    return lines + [
        "", f"`{micro['compressed']}` against the float baseline "
        f"`{micro['baseline_float']}`: flash {ratio(micro['flash_ratio_float'])} smaller; "
        f"accuracy on TFLM {pp(micro['accuracy_delta_float'])} from the float "
        "baseline's (on LiteRT). LiteRT's builtin kernels implement the int8 "
        "arithmetic of TFLM's reference kernels; XNNPACK (the `.tflite` test accuracy "
        "above) rounds its own way, so a near tie can fall the other way there. "
        "Latency: host CPU, TFLM's reference kernels, the two int8 files interleaved: "
        "a host figure, not a microcontroller's."]


def _file_row(file, info):
    """One file measured on TFLite Micro: flash, arena and its parts, accuracy, latency."""
    return (f"| `{file}` | {num(info.get('flash_bytes'))} | "
            f"{num(info.get('arena_bytes'))} | {num(info.get('arena_activations'))} | "
            f"{num(info.get('arena_persistent'))} | "
            f"{num(info.get('tflm_accuracy'), '{:.2%}')} | "
            f"{num(info.get('tflm_builtin_class_mismatches'))} / "
            f"{num(info.get('tflm_xnnpack_class_mismatches'))} | "
            f"{num(info.get('tflm_latency_us'), '{:.1f}')} |")


def figure(plt, report, name):
    """Flash and TFLM arena of the float baseline, the int8 baseline and the compressed file."""
    micro, files = report.get(name), report["files"]
    if not micro:
        return None
    names = [(label, micro[key]) for label, key in (
        ("baseline\nfloat32", "baseline_float"), ("baseline\nint8", "baseline_int8"),
        ("compressed\nint8", "compressed")) if micro.get(key)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, (title, key) in zip(axes, (("flash: .tflite bytes (KiB)", "flash_bytes"),
                                       ("tensor arena on TFLite Micro (KiB)", "arena_bytes")),
                                strict=True):
        values = [(files[file].get(key) or 0) / 1024 for _, file in names]
        bars = ax.bar([label for label, _ in names], values,
                      color=["tab:gray", "tab:blue", "tab:green"][:len(names)])
        ax.bar_label(bars, fmt="%.1f")
        ax.set_yscale("log")
        ax.set_title(title)
    return fig


PART = Part(facts=facts, rows=rows, section=section, plots=((PLOT, figure),))
