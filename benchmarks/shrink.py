"""Filter pruning + physical shrinking on a trained LeNet-5: measured before and after.

    python benchmarks/shrink.py [--epochs=4] [--units=5,12,64] [--runs=400] [--limit=N]

1. The trained Caffe LeNet-5 (`common.trained_lenet5()`, 8 epochs of Adam on MNIST).
2. `tfprune.prune(..., granularity="filter")` twice: conv1/conv2 with one schedule, ip1 with
   another, so that they end at `--units` filters/neurons (default 5-12-64 of 20-50-500:
   8-20-100 gives 5.7x fewer MACs but only ~3.7x lower latency, short of the 4x target);
   `PolynomialDecay` from 0 over the first half of the `--epochs` fine-tuning epochs, then
   held (Adam, learning rate 5e-4 cosine-decayed to 0, batch 128, `UpdatePruningStep`).
3. `tfprune.strip` (same shapes, zeroed filters), then `tfprune.shrink` (smaller layers,
   biases of removed filters folded forward); checked to give the same outputs.
4. The unpruned, the stripped and the shrunk models are exported to float32 `.tflite` files
   with a fixed batch of 1 (no merging, no quantization) and timed by `tfprune.bench.compare`
   on the LiteRT interpreter (interleaved rounds, one thread, batch 1, medians; speedup over the
   unpruned); test accuracy is measured in Keras and on the `.tflite` files.

Prints one markdown table and writes `benchmarks/out/shrink.json`.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfprune  # noqa: E402
from tfprune import atomic, bench, export  # noqa: E402

OUT = common.OUT / "shrink"
SIZES = {"conv1": 20, "conv2": 50, "ip1": 500}


def prune_and_finetune(base, units, epochs, train, steps_per_epoch):
    """Filter-prunes `base` to `units` per layer while fine-tuning; returns it stripped."""
    end = max(1, epochs // 2) * steps_per_epoch
    pruned = base
    by_sparsity = {}
    for name, n in units.items():
        by_sparsity.setdefault(1.0 - n / SIZES[name], []).append(name)
    for sparsity, names in by_sparsity.items():
        schedule = tfprune.PolynomialDecay(0.0, sparsity, 0, end, frequency=max(1, end // 20))
        pruned = tfprune.prune(pruned, schedule, granularity="filter", layers=names)
    keras.utils.set_random_seed(1)
    lr = keras.optimizers.schedules.CosineDecay(5e-4, epochs * steps_per_epoch)
    common.compile_classifier(pruned, learning_rate=lr)
    pruned.fit(train, epochs=epochs, callbacks=[tfprune.UpdatePruningStep()], verbose=2)
    return tfprune.strip(pruned)


def describe(name, model, test, path):
    counts = bench.count(model)
    export.to_tflite(model, path, batch_size=1)  # fixed batch: no shape ops in Flatten
    return {
        "model": name, "params": counts.params, "nonzero": counts.nonzero,
        "macs": counts.macs, "path": str(path),
        "units": [counts[n].output_shape[-1] for n in SIZES],
        "keras_acc": common.compile_classifier(model).evaluate(test, verbose=0)[1],
        "tflite_acc": export.evaluate(path, test, threads=1),
    }


def max_output_error(a, b, test):
    """Largest |a(x) - b(x)| relative to max |a(x)| over the test set."""
    worst, scale = 0.0, 0.0
    for x, _ in test:
        ya, yb = np.asarray(a(x, training=False)), np.asarray(b(x, training=False))
        worst, scale = max(worst, np.abs(ya - yb).max()), max(scale, np.abs(ya).max())
    return worst / scale


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs")
    parser.add_argument("--units", default="5,12,64", help="conv1,conv2,ip1 units to keep")
    parser.add_argument("--runs", type=int, default=400, help="timed latency rounds")
    parser.add_argument("--limit", type=int, default=None, help="training examples (smoke)")
    args = parser.parse_args(argv)
    units = dict(zip(SIZES, map(int, args.units.split(",")), strict=True))
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.time()

    train = common.mnist("train", shuffle=True, seed=1, limit=args.limit)
    test = common.mnist("test", batch_size=512)
    base = common.trained_lenet5()
    stripped = prune_and_finetune(base, units, args.epochs, train, len(train))
    plan = tfprune.shrink_plan(stripped)
    print(plan)
    small = plan.apply()
    error = max_output_error(stripped, small, test)

    rows = [describe("LeNet-5 unpruned (trained 8 ep)", base, test, OUT / "lenet5.tflite"),
            describe(f"filter-pruned, stripped (+{args.epochs} ep)", stripped, test,
                     OUT / "lenet5_pruned.tflite"),
            describe("... then shrunk", small, test, OUT / "lenet5_shrunk.tflite")]
    timing = common.time_rows(rows, runs=args.runs)

    report(rows, timing, args, error, time.time() - started)
    with atomic.atomic_path(OUT.parent / "shrink.json") as tmp:
        Path(tmp).write_text(json.dumps({"rows": rows, "args": vars(args),
                                         "shrink_rel_error": float(error),
                                         "plan": plan.to_dict()}, indent=2))


def report(rows, timing, args, error, seconds):
    head = ("| model | units | params | non-zero | MACs | .tflite B (gzip) | "
            "XNNPACK µs (speedup) | builtin µs (speedup) | acc Keras | acc .tflite |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        x, b = r["xnnpack"], r["builtin"]
        print(f"| {r['model']} | {'-'.join(map(str, r['units']))} | {r['params']:,} | "
              f"{r['nonzero']:,} | {r['macs']:,} | {r['tflite_bytes']:,} "
              f"({r['tflite_gzip']:,}) | {x['median_us']:.1f} ({x['speedup']:.2f}x) | "
              f"{b['median_us']:.1f} ({b['speedup']:.2f}x) | {100 * r['keras_acc']:.2f}% | "
              f"{100 * r['tflite_acc']:.2f}% |")
    base, small = rows[0], rows[-1]
    print(f"\nShrunk vs unpruned: {base['macs'] / small['macs']:.2f}x fewer MACs (target >= 5x), "
          f"{small['xnnpack']['speedup']:.2f}x faster XNNPACK / "
          f"{small['builtin']['speedup']:.2f}x builtin (target >= 4x), accuracy "
          f"{100 * (small['tflite_acc'] - base['tflite_acc']):+.2f} pp on .tflite "
          f"(target: at most 0.2 pp below). Shrunk vs stripped outputs: max rel. error "
          f"{error:.1e}.")
    print(f"Latency: {timing.runs} interleaved rounds after {timing.warmup} warm-up, one "
          f"thread, batch 1, medians; speedup = median per-round (unpruned time / this one's) "
          f"model. Machine: {common.machine()}.")
    print(f"Reproduce: python benchmarks/shrink.py --epochs={args.epochs} --units={args.units} "
          f"--runs={args.runs}" + (f" --limit={args.limit}" if args.limit else "")
          + f"   ({seconds / 60:.1f} min)")


if __name__ == "__main__":
    main()
