"""Steady costs for the search (issue 16): how far the latency table is from whole files,
how much whole-file timings move with the machine's load, and which widths repeated
searches choose.

    python benchmarks/search_steadiness.py                  # every part, ~15 min here
    python benchmarks/search_steadiness.py --parts=table,spread --repeats=3 --load=1

LeNet-5 (trained 2 epochs on MNIST, cached in benchmarks/out/) cut to the widths of
`CANDIDATES`, merged as `flags/lenet5_auto.flags` merges (approximate: pool into strided
conv), shrunk, exported in dynamic-range int8, batch 1, LiteRT + XNNPACK, 1 thread.

Parts:

- `table`: each candidate's latency predicted by a fresh `LatencyTable` (calibrated on the
  full-width candidate, as the search does) against its file timed whole, interleaved with
  the float baseline: the prediction error of latency and speedup.
- `spread`: the whole-file speedups timed `--repeats` times, each in a fresh session,
  without load and with `--load` CPU-bound processes beside; and the table's predicted
  speedups, each time from a fresh table (nothing cached), the same way.
- `search`: `tfprune.search.widths` with the flagfile's targets (50x, 10x), run
  `--search_repeats` times on each of: whole files timed (`latency_table=False`: the
  search before the table) and a fresh table each time (nothing cached: the first run on a
  machine), each without and with load. A table read from its file gives the same widths
  by construction (the test suite checks it; `flags/lenet5_auto.flags`' runs show it).
  The searches' checks are not trained and proposals not fine-tuned (the accuracy is the
  cut model's): the widths are what is compared.
"""

import argparse
import contextlib
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import OUT, machine, mnist, print_table, trained_lenet5  # noqa: E402

import tfprune  # noqa: E402
from tfprune import bench, export  # noqa: E402
from tfprune.search import candidates  # noqa: E402
from tfprune.search.latency_table import LatencyTable  # noqa: E402

CANDIDATES = ("20-50-500", "16-32-64", "15-21-158", "12-19-66", "11-13-112", "8-21-66",
              "6-16-90")
RUNS, WARMUP = 3000, 300


def _compress(model):
    merged = tfprune.fuse(model, approximate=True, pool_kernel="original",
                          pool_activation="relu")
    return tfprune.shrink(merged)


def _spin():
    while True:
        pass


@contextlib.contextmanager
def _load(processes):
    """`processes` CPU-bound processes running beside the measurement."""
    # Spawned, not forked: a fork of a process running TensorFlow's threads can hang.
    spawn = multiprocessing.get_context("spawn")
    spinners = [spawn.Process(target=_spin, daemon=True) for _ in range(processes)]
    for p in spinners:
        p.start()
    try:
        yield
    finally:
        for p in spinners:
            p.terminate()
            p.join()


def _models(baseline):
    layers = candidates.Layers(baseline, "filter", 0.75)
    cut = {}
    for name in CANDIDATES:
        widths = dict(zip(layers.units, map(int, name.split("-")), strict=True))
        cut[name] = _compress(candidates.cut(baseline, widths, layers, "filter"))
    return cut


def _whole(baseline, models, folder):
    """Whole-file speedups (median per-round ratio) and 10th-percentile latencies, one
    interleaved session with the baseline."""
    base = export.to_tflite(baseline, Path(folder) / "baseline.tflite", batch_size=1)
    files = [export.to_tflite(m, Path(folder) / f"{n}.tflite", quantize="dynamic",
                              batch_size=1) for n, m in models.items()]
    timing = bench.compare(base, *files, runs=RUNS, warmup=WARMUP, delegates=("xnnpack",))
    return {n: (timing.timing(i + 1).speedup, timing.timing(i + 1).p10_us)
            for i, n in enumerate(models)}


def _predicted(baseline, models, table=None):
    """Table speedups and latencies, calibrated on the full-width candidate as the search."""
    table = table or LatencyTable(runs=RUNS, warmup=WARMUP, path=False)
    base = table.predict(baseline, "none")
    us = dict(zip(models, table.predict_many(list(models.values()), "dynamic"), strict=True))
    return {n: (base / v, v) for n, v in us.items()}


def part_table(baseline, models):
    with tempfile.TemporaryDirectory() as folder:
        whole = _whole(baseline, models, folder)
    table = _predicted(baseline, models)
    full = CANDIDATES[0]
    k_speed = round(table[full][0] / whole[full][0] * 20) / 20
    k_us = round(whole[full][1] / table[full][1] * 20) / 20
    rows = []
    for n in models:
        s_pred, us_pred = table[n][0] / k_speed, table[n][1] * k_us
        rows.append([n, f"{whole[n][1]:.1f}", f"{us_pred:.1f}",
                     f"{us_pred / whole[n][1] - 1:+.0%}", f"{whole[n][0]:.2f}x",
                     f"{s_pred:.2f}x", f"{s_pred / whole[n][0] - 1:+.0%}"])
    print(f"\n## The table against whole files (calibration on {full}: latency x{k_us:.2f}, "
          f"speedup /{k_speed:.2f})\n")
    print_table(["widths", "whole µs (p10)", "table µs", "error", "whole speedup",
                 "table speedup",
                 "error"], rows)


def part_spread(baseline, models, repeats, load):
    results = {}
    for label, processes in (("no load", 0), (f"{load} CPU-bound processes", load)):
        with _load(processes):
            for kind in ("whole files", "fresh table"):
                runs = []
                for _ in range(repeats):
                    if kind == "whole files":
                        with tempfile.TemporaryDirectory() as folder:
                            runs.append(_whole(baseline, models, folder))
                    else:
                        runs.append(_predicted(baseline, models))
                results[(label, kind)] = runs
                print(f"  {label}, {kind}: {repeats} sessions done, {machine()}",
                      file=sys.stderr)
    print(f"\n## Speedups over {repeats} sessions: min / median / max (spread = max/min - 1)\n")
    head = ["widths"] + [f"{kind}, {label}" for label, kind in results]
    rows = []
    for n in models:
        row = [n]
        for runs in results.values():
            values = [r[n][0] for r in runs]
            row.append(f"{min(values):.2f} / {statistics.median(values):.2f} / "
                       f"{max(values):.2f} ({max(values) / min(values) - 1:.0%})")
        rows.append(row)
    print_table(head, rows)


def part_search(baseline, repeats, load):
    train = next(iter(mnist("train", batch_size=6000, shuffle=True, seed=0)))
    validation = next(iter(mnist("test", batch_size=2000)))  # stands in for a split
    train = tuple(t.numpy() for t in train)
    validation = tuple(t.numpy() for t in validation)
    accuracy = float(tfprune.stats.accuracy(baseline, validation))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, processes in (("no load", 0), (f"{load} CPU-bound", load)):
            for kind in ("whole files", "fresh table"):
                chosen = []
                for r in range(repeats):
                    table = False if kind == "whole files" else LatencyTable(
                        path=False, runs=RUNS, warmup=WARMUP)
                    start = time.monotonic()
                    with _load(processes):
                        plan = tfprune.search.widths(
                            baseline, train, validation,
                            {"size": "50x", "speedup": "10x", "max_accuracy_drop": 100},
                            check=lambda s, a=accuracy: (None, a), finetune_steps=0,
                            grid_step=0.75, compress=_compress, latency_table=table,
                            bench={"runs": RUNS, "warmup": WARMUP},
                            trace=Path(folder) / f"{label}-{kind}-{r}.json", log=None)
                    chosen.append(f"{plan.name} ({plan.figures.get('speedup', 0):.1f}x, "
                                  f"{time.monotonic() - start:.0f} s)")
                rows.append([label, kind, "; ".join(chosen),
                             str(len({c.split()[0] for c in chosen}))])
                print(f"  {label}, {kind}: {chosen}", file=sys.stderr)
    print("\n## Widths chosen by repeated searches (size 50x, speedup 10x; checks not "
          "trained)\n")
    print_table(["machine", "latency from", "widths chosen (planned speedup, time)",
                 "different widths"], rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="table,spread,search")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--search_repeats", type=int, default=2)
    parser.add_argument("--load", type=int, default=2, help="CPU-bound processes beside")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    baseline = trained_lenet5(epochs=2)
    models = _models(baseline)
    print(f"# Search steadiness: LeNet-5, dynamic-range int8, LiteRT + XNNPACK, 1 thread, "
          f"batch 1, {RUNS} interleaved rounds; {machine()}")
    parts = args.parts.split(",")
    if "table" in parts:
        part_table(baseline, models)
    if "spread" in parts:
        part_spread(baseline, models, args.repeats, args.load)
    if "search" in parts:
        part_search(baseline, args.search_repeats, args.load)


if __name__ == "__main__":
    main()
