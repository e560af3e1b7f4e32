"""The report's PNG plots (`draw`), with matplotlib's Agg backend: no display needed."""

import io

from tfprune import atomic
from tfprune.report.tables import MEMORY_PLOT, PLOTS, SEARCH_PLOT


def draw(folder, report):
    """Draws the report's plots into `folder` (each file atomically); their file names."""
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
