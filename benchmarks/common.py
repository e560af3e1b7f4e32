"""What the benchmark scripts share: a trained LeNet-5 baseline, cached between scripts.

Run a benchmark from the repository root, e.g. `python benchmarks/merge.py`; MNIST comes
from `--data_dir` or `TFPRUNE_DATA_DIR` (see README).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from tfprune import atomic, data, models  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


# The converter's export modes: (label, `export.to_tflite` keyword arguments).
EXPORT_MODES = (
    ("float32", {"quantize": "none"}),
    ("float16", {"quantize": "float16"}),
    ("dynamic", {"quantize": "dynamic"}),
    ("int8", {"quantize": "int8"}),
    ("int8 (int8 I/O)", {"quantize": "int8", "int8_io": True}),
)


def mnist(split, batch_size=128, **kwargs):
    """MNIST from `TFPRUNE_DATA_DIR` (or the user cache)."""
    return data.mnist(split, batch_size=batch_size, **kwargs)


def compile_classifier(model, learning_rate=1e-3):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def trained_lenet5(epochs=8, seed=0, name="lenet5", verbose=2):
    """Caffe LeNet-5 trained on all of MNIST (Adam, batch 128), cached in benchmarks/out/.

    The cache key is the model name, epochs and seed; delete the file to retrain.
    """
    path = OUT / f"{name}_e{epochs}_s{seed}.keras"
    if path.exists():
        return keras.models.load_model(path)
    keras.utils.set_random_seed(seed)
    model = compile_classifier(models.get(name))
    model.fit(mnist("train", shuffle=True, seed=seed), epochs=epochs, verbose=verbose)
    with atomic.atomic_path(path, make_parents=True) as tmp:
        model.save(tmp)
    return model


def machine():
    """What the latency figures were measured on, with the load at the time (measured)."""
    import platform

    load = os.getloadavg()[0]
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} "
            "over the last minute")


def time_rows(rows, runs, warmup=50, threads=1):
    """Times each row's `path` (interleaved, batch 1) and adds the figures to it.

    Each row gains, per delegate, the median µs (and p10, p90), the per-round speedup over
    the first row (median, p10, p90), the delegate that ran and its note, plus the file's
    raw and gzip bytes.
    """
    from tfprune import bench

    timing = bench.compare(*[r["path"] for r in rows], threads=threads, batch_size=1,
                           runs=runs, warmup=warmup)
    for i, row in enumerate(rows):
        for delegate in ("xnnpack", "builtin"):
            t = timing.timing(i, delegate)
            row[delegate] = {"median_us": t.median_us, "p10_us": t.p10_us, "p90_us": t.p90_us,
                             "speedup": t.speedup, "speedup_p10": t.speedup_p10,
                             "speedup_p90": t.speedup_p90, "ran": t.delegate_used,
                             "note": t.note}
        row["tflite_bytes"] = timing.timing(i).size_raw
        row["tflite_gzip"] = timing.timing(i).size_gzip
    return timing


if __name__ == "__main__":
    model = trained_lenet5()
    print("test accuracy", model.evaluate(mnist("test"), verbose=0)[1], file=sys.stderr)
    os.makedirs(OUT, exist_ok=True)


def timing_cells(row, notes, spread=False):
    """A timed row's two table cells, XNNPACK then builtin: "µs (speedup)", with the
    speedup's p10 and p90 if `spread`, and " *" where another delegate ran; each delegate's
    note is added to `notes`."""
    cells = []
    for delegate in ("xnnpack", "builtin"):
        t = row[delegate]
        mark = "" if t["ran"] == delegate else " *"
        band = f" [{t['speedup_p10']:.2f}, {t['speedup_p90']:.2f}]" if spread else ""
        cells.append(f"{t['median_us']:.1f} ({t['speedup']:.2f}x{band}){mark}")
        if t["note"]:
            notes.append(f"* {Path(row['path']).name} [{delegate}]: {t['note']}")
    return cells


def print_table(head, rows):
    """Prints `head` and `rows` (lists of strings) as an aligned Markdown table."""
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
