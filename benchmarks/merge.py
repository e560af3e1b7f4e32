"""Streamline merging on a trained LeNet-5: merge, retrain, and measure before and after.

    python benchmarks/merge.py [--epochs=4] [--runs=400] [--limit=N]

1. The trained Caffe LeNet-5 (`common.trained_lenet5()`, 8 epochs of Adam on MNIST).
2. `tfprune.fuse(model, approximate=True)` merges conv1+pool1 and conv2+pool2 (max pools)
   into two stride-2 convolutions with a ReLU in place of the max, once per initialisation
   of the merged kernel: "grown" (kernel 6x6 = k+p-1, the exact average-pool merge of the
   trained kernel) and "original" (kernel 5x5, the trained kernel itself, stride 2); and,
   as an ablation, "grown" without the ReLU (`pool_activation=None`).
3. Each merged model is retrained `--epochs` epochs (Adam, learning rate 3e-4 cosine-decayed
   to 0, batch 128, same seed); its test accuracy is measured after every epoch, to see
   which initialisation recovers faster. As a control, the unmerged model gets the same
   extra training, so that "recovered" is not just "trained longer".
4. All are exported to float32 `.tflite` files and timed by `tfprune.bench.compare` on the
   LiteRT interpreter (interleaved rounds, one thread, batch 1, medians and speedups over the
   unmerged model); their test accuracy is measured on the `.tflite` files too.

Prints one table (markdown) and writes `benchmarks/out/merge.json`.

    python benchmarks/merge.py --zoo

instead checks exact fusion (`tfprune.fuse(model)`, no retraining) on Keras Applications
models with random weights and random BatchNorm statistics: layers before and after,
BatchNorms left, merges by rule, and the relative error of the fused model's logits.
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

import tfprune  # noqa: E402
from tfprune import atomic, bench, export  # noqa: E402

OUT = common.OUT / "merge"
INITS = ("grown", "original")
# (label, fuse keyword arguments): the two initialisations, and the merge without the ReLU
# that stands in for the max (the ablation showing why fuse adds it).
VARIANTS = (
    ("grown", {"pool_kernel": "grown"}),
    ("original", {"pool_kernel": "original"}),
    ("grown, linear", {"pool_kernel": "grown", "pool_activation": None}),
)


class TestAccuracy(keras.callbacks.Callback):
    """Test accuracy after every epoch (monitoring only: nothing is selected on it)."""

    def __init__(self, test):
        super().__init__()
        self.test, self.history = test, []

    def on_epoch_end(self, epoch, logs=None):
        self.history.append(self.model.evaluate(self.test, verbose=0)[1])


def retrain(model, epochs, train, test, steps_per_epoch):
    """Fine-tunes `model` in place; returns the test accuracy after each epoch."""
    keras.utils.set_random_seed(1)
    schedule = keras.optimizers.schedules.CosineDecay(3e-4, epochs * steps_per_epoch)
    common.compile_classifier(model, learning_rate=schedule)
    monitor = TestAccuracy(test)
    model.fit(train, epochs=epochs, callbacks=[monitor], verbose=0)
    return monitor.history


def describe(name, model, test, path, note):
    counts = bench.count(model)
    export.to_tflite(model, path)
    return {
        "model": name, "note": note, "layers": len(model.layers), "params": counts.params,
        "macs": counts.macs, "path": str(path),
        "keras_acc": common.compile_classifier(model).evaluate(test, verbose=0)[1],
        "tflite_acc": export.evaluate(path, test, threads=1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="retraining epochs")
    parser.add_argument("--runs", type=int, default=400, help="timed latency rounds")
    parser.add_argument("--limit", type=int, default=None, help="training examples (smoke)")
    parser.add_argument("--zoo", action="store_true", help="exact fusion on keras.applications")
    args = parser.parse_args(argv)
    if args.zoo:
        return zoo()
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.time()

    train = common.mnist("train", shuffle=True, seed=1, limit=args.limit)
    test = common.mnist("test", batch_size=512)
    steps = len(train)
    base = common.trained_lenet5()
    rows = [describe("LeNet-5 (unmerged)", base, test, OUT / "lenet5.tflite", "trained 8 ep")]
    base_acc = rows[0]["keras_acc"]

    curves = {}
    for label, kwargs in VARIANTS:
        merged = tfprune.fuse(base, approximate=True, **kwargs)
        plan = [str(s) for s in tfprune.fusion.plan(base, approximate=True, **kwargs)]
        print("\n".join(plan), file=sys.stderr)
        at_merge = common.compile_classifier(merged).evaluate(test, verbose=0)[1]
        curves[label] = [at_merge] + retrain(merged, args.epochs, train, test, steps)
        kernel = merged.get_layer("conv1").kernel.shape[0]
        act = merged.get_layer("conv1").get_config()["activation"]
        rows.append(describe(f"merged, init {label} ({kernel}x{kernel} s2, {act})", merged,
                             test, OUT / f"lenet5_merged_{label.replace(', ', '_')}.tflite",
                             f"+{args.epochs} ep retrain"))
        rows[-1]["plan"] = plan

    control = keras.models.clone_model(base)
    control.set_weights(base.get_weights())
    curves["unmerged (control)"] = [base_acc] + retrain(control, args.epochs, train, test, steps)
    rows.append(describe("unmerged + same retraining", control, test,
                         OUT / "lenet5_control.tflite", f"+{args.epochs} ep retrain"))

    timing = common.time_rows(rows, runs=args.runs)

    report(rows, curves, timing, args, base_acc, time.time() - started)
    with atomic.atomic_path(OUT.parent / "merge.json") as tmp:
        Path(tmp).write_text(json.dumps({"rows": rows, "curves": curves,
                                          "args": vars(args)}, indent=2))


ZOO = (("MobileNetV2", dict(alpha=0.35), (96, 96, 3)), ("ResNet50", {}, (64, 64, 3)),
       ("EfficientNetB0", {}, (64, 64, 3)), ("DenseNet121", {}, (64, 64, 3)),
       ("NASNetMobile", {}, (96, 96, 3)))


def zoo():
    """Exact fusion of Keras Applications models with random BatchNorm statistics."""
    import collections

    import numpy as np

    rng = np.random.default_rng(0)
    print("| model | layers before -> after | BatchNorm left | merges by rule | "
          "rel. error of logits | fuse s |")
    print("|---|---|---|---|---|---|")
    for name, kwargs, shape in ZOO:
        model = getattr(keras.applications, name)(weights=None, input_shape=shape,
                                                  classifier_activation=None, **kwargs)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                c = layer.moving_mean.shape
                layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.5, c),
                                   rng.normal(0, 0.5, c), rng.uniform(0.3, 2.0, c)])
        started = time.time()
        fused = tfprune.fuse(model)
        seconds = time.time() - started
        rules = collections.Counter(s.rule for s in tfprune.fusion.plan(model) if s.applied)
        x = rng.uniform(0, 1, (2, *shape)).astype("float32")
        want = np.asarray(model(x), np.float64)
        err = np.abs(np.asarray(fused(x), np.float64) - want).max() / np.abs(want).max()
        left = sum(isinstance(la, keras.layers.BatchNormalization) for la in fused.layers)
        print(f"| {name} {shape[0]}x{shape[1]} | {len(model.layers)} -> {len(fused.layers)} | "
              f"{left} | {', '.join(f'{k} {v}' for k, v in rules.most_common())} | "
              f"{err:.1e} | {seconds:.1f} |")
    print("\nReproduce: python benchmarks/merge.py --zoo")


def recovery_verdict(curves, base_acc, tie_pp=0.05):
    """Which initialisation recovers better: first over the epochs, then at the end."""
    a, b = (curves[init] for init in INITS)
    lines = []
    for when, x, y in (("right after the merge", a[0], b[0]), ("after 1 epoch", a[1], b[1]),
                       ("at the end", a[-1], b[-1])):
        diff = 100 * (x - y)
        who = "tie" if abs(diff) < tie_pp else (INITS[0] if diff > 0 else INITS[1])
        lines.append(f"{when}: {who} ({INITS[0]} {100 * x:.2f}%, {INITS[1]} {100 * y:.2f}%)")
    control = curves["unmerged (control)"][-1]
    gaps = ", ".join(f"{init} {100 * (curves[init][-1] - base_acc):+.2f} pp / "
                     f"{100 * (curves[init][-1] - control):+.2f} pp" for init in INITS)
    return ("Recovery, " + "; ".join(lines) + f".\nFinal gap to the unmerged model "
            f"({100 * base_acc:.2f}%) / to the unmerged control retrained alike "
            f"({100 * control:.2f}%): {gaps} (bar: no worse than -0.1 pp).")


def report(rows, curves, timing, args, base_acc, seconds):
    head = ("| model | layers | params | MACs | .tflite bytes | XNNPACK µs (speedup) | "
            "builtin µs (speedup) | test acc Keras | test acc .tflite |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        x, b = r["xnnpack"], r["builtin"]
        print(f"| {r['model']}, {r['note']} | {r['layers']} | {r['params']:,} | {r['macs']:,} | "
              f"{r['tflite_bytes']:,} | {x['median_us']:.1f} ({x['speedup']:.2f}x) | "
              f"{b['median_us']:.1f} ({b['speedup']:.2f}x) | {100 * r['keras_acc']:.2f}% | "
              f"{100 * r['tflite_acc']:.2f}% |")
    print()
    print("Test accuracy (%) right after the merge (epoch 0) and after each retraining epoch:")
    for name, curve in curves.items():
        print(f"  {name:20s} " + "  ".join(f"{100 * a:.2f}" for a in curve))
    print("(grown, original: the merged conv gets a ReLU in place of the max; "
          "linear: pool_activation=None)")
    print(recovery_verdict(curves, base_acc))
    print(f"\nLatency: {timing.runs} interleaved rounds after {timing.warmup} warm-up, one "
          f"thread, batch 1, medians; speedup = median per-round (unmerged time / this one's) "
          f"model. Machine: {common.machine()}.")
    print(f"Reproduce: python benchmarks/merge.py --epochs={args.epochs} --runs={args.runs}"
          + (f" --limit={args.limit}" if args.limit else "") + f"   ({seconds / 60:.1f} min)")


if __name__ == "__main__":
    main()
