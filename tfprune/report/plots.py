"""The report's PNG plots (`draw`), with matplotlib's Agg backend: no display needed."""

import io

from tfprune import atomic
from tfprune.report.tables import PLOTS


def draw(folder, report, stages=()):
    """Draws the report's plots into `folder` (each file atomically); their file names.

    `PLOTS` first, then the plots of each of `stages` (`Part.plots` of `Stage.report`), in
    stage order: each draws a figure, or `None` when it has nothing to show.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages_png, tflite_png, layers_png = PLOTS
    figures = [(stages_png, _stages_figure, ()), (tflite_png, _tflite_figure, ()),
               (layers_png, _layers_figure, ())]
    for stage in stages:  # a stage's plot is told the stage's name: its key in the report
        figures += [(name, figure, (stage.name,))
                    for name, figure in (stage.report.plots if stage.report else ())]
    written = []
    for name, figure, args in figures:
        fig = figure(plt, report, *args)
        if fig is not None:
            save(plt, fig, folder / name)
            written.append(name)
    return written


def save(plt, fig, path):
    """Saves `fig` as a PNG at `path` (atomically) and closes it."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())


def _stages_figure(plt, report):
    """Non-zero parameters and validation accuracy after each model stage."""
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
    return fig


def _tflite_figure(plt, report):
    """Size, latency and accuracy of the baseline's and the compressed model's file."""
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
    return fig


def _layers_figure(plt, report):
    """Kernel zeros per layer after each model stage, and units per layer kept."""
    layers = report["layers"]
    if not layers:
        return None
    names = [st["stage"] for st in report["stages"]]
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
    return fig
