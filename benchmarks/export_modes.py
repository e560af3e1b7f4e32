"""Every TFLite export mode on a trained LeNet-5, dense and 90%-sparse: size, accuracy, speed.

    python benchmarks/export_modes.py [--runs=200] [--fine_tune_epochs=2] [--threads=1]

1. The trained Caffe LeNet-5 (`common.trained_lenet5()`, 8 epochs of Adam on MNIST).
2. A 90%-sparse copy: `tfprune.prune` (unstructured, PolynomialDecay 0.5 -> 0.9 over the
   first epoch) and `--fine_tune_epochs` epochs of fine-tuning with the masks held, then
   `tfprune.strip`. With `--fine_tune_epochs=0` the copy is plain magnitude zeroing (the 90%
   smallest weights of every kernel set to zero, no retraining). Cached in benchmarks/out/.
3. Each model is exported in every mode: float32, float16 weights, dynamic range (int8
   weights), full int8 with float I/O, full int8 with int8 I/O; the sparse model both
   without and with the converter's sparse encoding (`sparse=True`).
4. For each file: size raw and gzipped, accuracy of the `.tflite` file on the 10,000 MNIST
   test images (LiteRT interpreter), and latency with XNNPACK and with the builtin kernels
   only (`tfprune.bench.compare`: all files interleaved in one process, one thread, batch 1,
   median µs and the per-round speedup over the dense float32 file).

Prints one markdown table and writes `benchmarks/out/export_modes/results.json`.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfprune  # noqa: E402
from tfprune import atomic, export  # noqa: E402

OUT = common.OUT / "export_modes"
MODES = common.EXPORT_MODES


def sparse_lenet5(model, epochs, sparsity=0.9):
    """A 90%-sparse LeNet-5: pruned and fine-tuned (or zeroed by magnitude if epochs == 0)."""
    path = common.OUT / f"lenet5_sparse{int(sparsity * 100)}_ft{epochs}.keras"
    if path.exists():
        return keras.models.load_model(path)
    if epochs == 0:
        sparse = keras.models.clone_model(model)
        sparse.set_weights(model.get_weights())
        for layer in sparse.layers:
            if hasattr(layer, "kernel"):
                w = layer.kernel.numpy()
                w[np.abs(w) < np.quantile(np.abs(w), sparsity)] = 0.0
                layer.kernel.assign(w)
    else:
        train = common.mnist("train", shuffle=True, seed=0)
        steps = int(train.cardinality())
        schedule = tfprune.PolynomialDecay(0.5, sparsity, 0, steps, frequency=50)
        pruned = common.compile_classifier(tfprune.prune(model, schedule), learning_rate=3e-4)
        pruned.fit(train, epochs=epochs, callbacks=[tfprune.UpdatePruningStep()], verbose=2)
        sparse = tfprune.strip(pruned)
    with atomic.atomic_path(path, make_parents=True) as tmp:
        sparse.save(tmp)
    return sparse


def kernel_sparsity(model):
    kernels = [layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")]
    return 1.0 - sum(np.count_nonzero(k) for k in kernels) / sum(k.size for k in kernels)


def export_all(models, representative):
    """Exports every (model, encoding, mode); returns rows of dicts with their paths."""
    rows = []
    for weights, model in models.items():
        encodings = (False, True) if weights != "dense" else (False,)
        for sparse in encodings:
            for label, kwargs in MODES:
                name = f"{weights}_{'sparseenc_' if sparse else ''}{label.split()[0]}" + (
                    "_io8" if kwargs.get("int8_io") else "")
                path = OUT / f"{name}.tflite"
                start = time.perf_counter()
                export.to_tflite(model, path, sparse=sparse, representative_data=representative,
                                 **kwargs)
                rows.append({"weights": weights, "sparse_encoding": sparse, "mode": label,
                             "path": str(path), "export_s": time.perf_counter() - start})
                print(f"exported {path.name} in {rows[-1]['export_s']:.1f} s", file=sys.stderr)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fine_tune_epochs", type=int, default=2)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    dense = common.trained_lenet5()
    sparse = sparse_lenet5(dense, args.fine_tune_epochs)
    test = common.mnist("test", batch_size=500)
    keras_acc = {name: common.compile_classifier(m).evaluate(test, verbose=0)[1]
                 for name, m in (("dense", dense), ("sparse90", sparse))}
    representative = common.mnist("train", batch_size=100, limit=500)
    rows = export_all({"dense": dense, "sparse90": sparse}, representative)

    for row in rows:
        info = export.inspect(row["path"])
        row.update(size_raw=info.size_raw, size_gzip=info.size_gzip, densify=info.densify,
                   sparse_tensors=len(info.sparse_tensors),
                   accuracy=export.evaluate(row["path"], test))
    common.time_rows(rows, runs=args.runs, warmup=args.warmup, threads=args.threads)

    command = "python benchmarks/export_modes.py " + " ".join(sys.argv[1:])
    table = markdown(rows, keras_acc, kernel_sparsity(sparse), args)
    print(table)
    print(f"\ncommand: {command.strip()}")
    payload = {"command": command.strip(), "machine": platform.platform(),
               "cpu_count": os.cpu_count(), "keras_accuracy": keras_acc, "rows": rows,
               "args": vars(args)}
    atomic.write_text(OUT / "results.json", json.dumps(payload, indent=2) + "\n")
    atomic.write_text(OUT / "results.md", table + f"\n\ncommand: `{command.strip()}`\n")


def markdown(rows, keras_acc, sparsity, args):
    lines = [
        f"LeNet-5 (Caffe 20-50-500-10) on MNIST. Keras test accuracy: dense "
        f"{keras_acc['dense']:.2%}, sparse90 {keras_acc['sparse90']:.2%} (kernel sparsity "
        f"{sparsity:.1%}, fine-tune epochs {args.fine_tune_epochs}). Latency: LiteRT, "
        f"{args.threads} thread, batch 1, {args.runs} interleaved rounds after {args.warmup} "
        "warm-up, median µs (speedup over dense float32, per-round median [p10, p90]). "
        f"Machine: {common.machine()}.",
        "",
        "| weights | sparse enc. | mode | raw bytes | gzip bytes | .tflite acc | "
        "XNNPACK µs (speedup) | builtin µs (speedup) | DENSIFY |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    notes = []
    for r in rows:
        cells = common.timing_cells(r, notes, spread=True)
        lines.append(f"| {r['weights']} | {'yes' if r['sparse_encoding'] else 'no'} | "
                     f"{r['mode']} | {r['size_raw']:,} | {r['size_gzip']:,} | "
                     f"{r['accuracy']:.2%} | {cells[0]} | {cells[1]} | "
                     f"{'yes' if r['densify'] else 'no'} |")
    return "\n".join(lines + ([""] + notes if notes else []))


if __name__ == "__main__":
    main()
