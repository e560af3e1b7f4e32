"""The search stage's part of the report (`PART`): the sparsities it chose, for the header
of `report.md`; its section (the candidates on its path, with their figures); and its plot
(`search.png`, each candidate's size and speed against its validation accuracy).

Each function reads the stage's result, the plan's `to_dict()` (`tfprune.search`), from
`report["results"][name]`, `name` being the stage's.
"""

from tfprune import stats
from tfprune.report import Part
from tfprune.report.format import num

PLOT = "search.png"


def _plan(report, name):
    return (report.get("results") or {}).get(name)


def sparsity(report, name):
    """The per-layer sparsities the search chose, with the widths they give, or `None`."""
    search = _plan(report, name)
    if not search:
        return None
    return f"{search['layer_sparsity']} (searched: {search['name']} units)"


def section(report, name):
    """The search's section of `report.md`: how it searched, and the candidates on its path."""
    search = _plan(report, name)
    if not search:
        return []
    b = search["baseline"]
    lines = ["## Search", "",
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
    lines += [_candidate_row(c, search["name"], b) for c in search["candidates"]]
    return lines + [""]


def _candidate_row(c, chosen, baseline):
    """One candidate: its file's figures, and its accuracy predicted, fine-tuned, trained."""
    f = c["figures"]
    name = f"**{c['name']}** (chosen)" if c["name"] == chosen else c["name"]
    role = f"{c['role']} (uniform)" if c.get("uniform") else c["role"]
    return (f"| {name} | {role} | {f['bytes']:,} | {baseline['bytes'] / f['bytes']:.1f}x | "
            f"{num(f.get('speedup'), '{:.1f}x')} | {num(f.get('latency_us'), '{:.1f}')} | "
            f"{f['macs']:,} | {c['predicted_drop_pp']:.2f} | "
            f"{num(c.get('tuned_val_accuracy'), '{:.2%}')}"
            + (f", {stats.change_text(c['tuned_drop_pp'], c['tuned_drop_ci_pp'])}"
               if c.get("tuned_drop_ci_pp") is not None else "") + " | "
            f"{num(f.get('val_accuracy'), '{:.2%}')}"
            + (f", {stats.change_text(f['drop_pp'], f['drop_ci_pp'])}"
               if f.get("drop_ci_pp") is not None else "") + " |")


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


def figure(plt, report, name):
    """Size (and speedup) of each candidate against its validation accuracy, targets drawn."""
    search = _plan(report, name)
    if not search:
        return None
    base = search["baseline"]
    timed = any(c["figures"].get("speedup") is not None for c in search["candidates"])
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(10 if timed else 5.5, 4),
                             squeeze=False)
    panels = [("bytes", ".tflite size (KB)", 1e-3)] + (
        [("speedup", "speedup over the baseline (x)", 1)] if timed else [])
    for ax, panel in zip(axes[0], panels, strict=True):
        _panel(ax, search, 100 * base["val_accuracy"], *panel)
    fig.suptitle("search: the candidates on its path, and those trained to check them")
    return fig


def _panel(ax, search, accuracy, figure, label, scale):
    """One figure of the candidates (`bytes` or `speedup`) against validation accuracy."""
    goals = {g["figure"]: g for g in search["goals"]}
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
        _log_axis(ax)
    ax.set_ylim(max(accuracy - 2.0, min(ax.get_ylim()[0], accuracy - 0.5)), accuracy + 0.3)
    ax.set_xlabel(label)
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize="small")


def _log_axis(ax):
    """A log x axis labelled at 1, 2 and 5 in plain numbers."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


PART = Part(sparsity=sparsity, appendix=section, plots=((PLOT, figure),))
