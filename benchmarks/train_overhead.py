"""Training-time cost of pruning: plain Keras 3 vs tfprune vs tfmot, LeNet-5 on MNIST.

    python benchmarks/train_overhead.py [--rounds=4] [--batch_size=128] [--limit=N]

Same data (the MNIST training set as one NumPy array, batched by `tf.data` in the same way),
same architecture (Caffe LeNet-5), same optimizer (Adam) and the same schedule
(`PolynomialDecay(0 -> 0.9, frequency=100)`) for both pruners.

- Keras 3, in this process: plain training and tfprune pruning, one epoch each per round,
  interleaved A/B then B/A, so that drift in the machine's load hits both alike.
- tf_keras, in a subprocess with TF_USE_LEGACY_KERAS=1 (tfmot needs the legacy Keras and
  must not share a process with Keras 3): plain tf_keras training and tfmot pruning,
  interleaved the same way.

Each model first trains a few warm-up batches (tracing is not counted). Reported: the
median epoch time of each and the ratios pruned / plain within each process. The table and
the command are printed, and the raw times are written to
`benchmarks/out/train_overhead.json`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfprune  # noqa: E402
from tfprune import atomic, data, models  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
FINAL_SPARSITY = 0.9
FREQUENCY = 100
WARMUP_BATCHES = 5


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch (from the first batch's start to the last batch's end)."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def dataset(x, y, batch_size):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(
        tf.data.AUTOTUNE)


def compile_model(model):
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def run_keras3(x, y, args, end_step):
    """Median epoch times of plain Keras 3 training and of tfprune pruning, interleaved."""
    keras.utils.set_random_seed(0)
    plain = compile_model(models.lenet5())
    schedule = tfprune.PolynomialDecay(0.0, FINAL_SPARSITY, begin_step=0, end_step=end_step,
                                       frequency=FREQUENCY)
    pruned = compile_model(tfprune.prune(plain, schedule))
    runs = {
        "plain": (plain, []),
        "tfprune": (pruned, [tfprune.UpdatePruningStep()]),
    }
    full = dataset(x, y, args.batch_size)
    for model, callbacks in runs.values():
        model.fit(full, epochs=1, steps_per_epoch=WARMUP_BATCHES, verbose=0, callbacks=callbacks)
    times = {name: [] for name in runs}
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        for name in order:
            model, callbacks = runs[name]
            timer = EpochTimer()
            model.fit(full, epochs=1, verbose=0, callbacks=[*callbacks, timer])
            times[name].append(timer.times[0])
            print(f"  round {r + 1}/{args.rounds} {name:8s} {timer.times[0]:.2f} s",
                  file=sys.stderr)
    achieved = tfprune.sparsity(pruned)
    return times, achieved


TFMOT_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    args = json.loads(sys.argv[1])
    arrays = np.load(args["data"])
    x, y = arrays["x"], arrays["y"]
    batch = args["batch_size"]
    L = keras.layers


    def lenet5():
        return keras.Sequential([
            keras.Input((28, 28, 1)), L.Conv2D(20, 5, name="conv1"), L.MaxPooling2D(2),
            L.Conv2D(50, 5, name="conv2"), L.MaxPooling2D(2), L.Flatten(),
            L.Dense(500, activation="relu", name="ip1"),
            L.Dense(10, activation="softmax", name="ip2")])


    def compile_model(model):
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model


    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._start)


    def dataset(x, y):
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).prefetch(
            tf.data.AUTOTUNE)


    keras.utils.set_random_seed(0)
    plain = compile_model(lenet5())
    base = lenet5()
    base.set_weights(plain.get_weights())
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        0.0, args["final_sparsity"], begin_step=0, end_step=args["end_step"],
        frequency=args["frequency"])
    pruned = compile_model(
        tfmot.sparsity.keras.prune_low_magnitude(base, pruning_schedule=schedule))
    runs = {"plain": (plain, []),
            "tfmot": (pruned, [tfmot.sparsity.keras.UpdatePruningStep()])}
    full = dataset(x, y)
    for model, callbacks in runs.values():
        model.fit(full, epochs=1, steps_per_epoch=args["warmup"], verbose=0,
                  callbacks=callbacks)
    times = {name: [] for name in runs}
    for r in range(args["rounds"]):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        for name in order:
            model, callbacks = runs[name]
            timer = EpochTimer()
            model.fit(full, epochs=1, verbose=0, callbacks=[*callbacks, timer])
            times[name].append(timer.times[0])
            print(f"  round {r + 1}/{args['rounds']} {name:8s} {timer.times[0]:.2f} s",
                  file=sys.stderr, flush=True)
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    achieved = {layer.name: float(np.mean(layer.get_weights()[0] == 0))
                for layer in stripped.layers if layer.get_weights()}
    print(json.dumps({"times": times, "sparsity": achieved}))
    """
)


def run_tfmot(x, y, args, end_step):
    """Median epoch times of plain tf_keras training and of tfmot pruning, in a subprocess."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "mnist.npz")
        np.savez(path, x=x, y=y)
        job = {"data": path, "batch_size": args.batch_size, "rounds": args.rounds,
               "end_step": end_step, "final_sparsity": FINAL_SPARSITY,
               "frequency": FREQUENCY, "warmup": WARMUP_BATCHES}
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
        result = subprocess.run([sys.executable, "-c", TFMOT_SCRIPT, json.dumps(job)],
                                env=env, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"tfmot subprocess failed with code {result.returncode}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["times"], report["sparsity"]


def table(k3, tm, k3_sparsity, tm_sparsity, steps):
    med = {name: statistics.median(ts) for name, ts in {**k3, **{
        f"tf_keras {n}" if n == "plain" else n: ts for n, ts in tm.items()}}.items()}
    rows = [
        ("Keras 3 plain", med["plain"], 1.0, "-"),
        ("tfprune (Keras 3)", med["tfprune"], med["tfprune"] / med["plain"],
         f"{min(k3_sparsity.values()):.3f}-{max(k3_sparsity.values()):.3f}"),
        ("tf_keras plain", med["tf_keras plain"], 1.0, "-"),
        ("tfmot (tf_keras)", med["tfmot"], med["tfmot"] / med["tf_keras plain"],
         f"{min(tm_sparsity.values()):.3f}-{max(tm_sparsity.values()):.3f}"),
    ]
    lines = [
        f"LeNet-5, MNIST train, {steps} steps/epoch; median of per-epoch wall times",
        "",
        "| run | s/epoch (median) | x its own plain | kernel sparsity at end |",
        "|---|---:|---:|---|",
    ]
    lines += [f"| {name} | {t:.2f} | {r:.3f} | {s} |" for name, t, r, s in rows]
    lines.append("")
    lines.append(f"tfmot / tfprune epoch time: {med['tfmot'] / med['tfprune']:.2f}x")
    return "\n".join(lines), med


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="timed epochs per run")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None, help="use the first N images")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--skip_tfmot", action="store_true")
    args = parser.parse_args(argv)
    x, y = data.mnist_arrays("train", data_dir=args.data_dir)
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    steps = -(-len(x) // args.batch_size)
    end_step = WARMUP_BATCHES + steps * args.rounds
    print(f"Keras 3: plain vs tfprune, {args.rounds} interleaved rounds", file=sys.stderr)
    k3, k3_sparsity = run_keras3(x, y, args, end_step)
    if args.skip_tfmot:
        tm, tm_sparsity = {"plain": [float("nan")], "tfmot": [float("nan")]}, {"-": float("nan")}
    else:
        print(f"tf_keras: plain vs tfmot, {args.rounds} interleaved rounds", file=sys.stderr)
        tm, tm_sparsity = run_tfmot(x, y, args, end_step)
    text, med = table(k3, tm, k3_sparsity, tm_sparsity, steps)
    command = "python benchmarks/train_overhead.py " + " ".join(argv or sys.argv[1:])
    load = os.getloadavg()
    print(text)
    print(f"\nload average during the run (1/5/15 min): {load[0]:.1f} {load[1]:.1f} "
          f"{load[2]:.1f}; cpus: {os.cpu_count()}")
    print(f"command: {command.strip()}")
    record = {"command": command.strip(), "keras3": k3, "tf_keras": tm, "median": med,
              "sparsity": {"tfprune": k3_sparsity, "tfmot": tm_sparsity},
              "steps_per_epoch": steps, "batch_size": args.batch_size, "loadavg": load}
    atomic.write_text(OUT / "train_overhead.json", json.dumps(record, indent=2),
                      make_parents=True)


if __name__ == "__main__":
    main()
