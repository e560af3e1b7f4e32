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

Each model first trains a few warm-up batches (tracing is not counted). Reported per run:
the median wall and process-CPU seconds per epoch, and the median over rounds of the ratio
pruned / plain (the two epochs of a round ran back to back in one process). CPU seconds
are the steadier measure when other processes load the machine. The table and the command
are printed, and the raw times are written to `benchmarks/out/train_overhead.json`.
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
    """Wall and process-CPU seconds of each epoch.

    CPU time (all threads of this process) is the steadier number on a shared machine:
    other processes' load stretches wall time but not the work this process does.
    """

    def __init__(self):
        super().__init__()
        self.times, self.cpu = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


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
    times = {name: {"wall": [], "cpu": []} for name in runs}
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        for name in order:
            model, callbacks = runs[name]
            timer = EpochTimer()
            model.fit(full, epochs=1, verbose=0, callbacks=[*callbacks, timer])
            times[name]["wall"].append(timer.times[0])
            times[name]["cpu"].append(timer.cpu[0])
            print(f"  round {r + 1}/{args.rounds} {name:8s} {timer.times[0]:.2f} s wall "
                  f"{timer.cpu[0]:.2f} s cpu", file=sys.stderr, flush=True)
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
            self.times, self.cpu = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._start[0])
            self.cpu.append(time.process_time() - self._start[1])


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
    times = {name: {"wall": [], "cpu": []} for name in runs}
    for r in range(args["rounds"]):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        for name in order:
            model, callbacks = runs[name]
            timer = EpochTimer()
            model.fit(full, epochs=1, verbose=0, callbacks=[*callbacks, timer])
            times[name]["wall"].append(timer.times[0])
            times[name]["cpu"].append(timer.cpu[0])
            print(f"  round {r + 1}/{args['rounds']} {name:8s} {timer.times[0]:.2f} s wall "
                  f"{timer.cpu[0]:.2f} s cpu", file=sys.stderr, flush=True)
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


def _ratios(times, pruned, plain):
    """Per-round pruned / plain ratios (each round ran both back to back) and their median."""
    return statistics.median(p / q for p, q in zip(times[pruned], times[plain], strict=True))


def table(k3, tm, k3_sparsity, tm_sparsity, steps):
    """The markdown table: medians of wall and CPU seconds per epoch, and the ratios."""
    runs = {"Keras 3 plain": (k3, "plain", "plain", "-"),
            "tfprune (Keras 3)": (k3, "tfprune", "plain", _span(k3_sparsity)),
            "tf_keras plain": (tm, "plain", "plain", "-"),
            "tfmot (tf_keras)": (tm, "tfmot", "plain", _span(tm_sparsity))}
    lines = [
        f"LeNet-5, MNIST train ({steps} steps of batch 128 per epoch); medians over rounds; "
        "ratio = median of per-round (pruned / its own plain), plain run back to back",
        "",
        "| run | wall s/epoch | CPU s/epoch | wall ratio | CPU ratio | kernel sparsity at end |",
        "|---|---:|---:|---:|---:|---|",
    ]
    medians = {}
    for name, (times, key, base, spars) in runs.items():
        wall, cpu = times[key]["wall"], times[key]["cpu"]
        medians[name] = {"wall": statistics.median(wall), "cpu": statistics.median(cpu)}
        ratio_wall = _ratios({k: v["wall"] for k, v in times.items()}, key, base)
        ratio_cpu = _ratios({k: v["cpu"] for k, v in times.items()}, key, base)
        lines.append(f"| {name} | {medians[name]['wall']:.2f} | {medians[name]['cpu']:.2f} | "
                     f"{ratio_wall:.3f} | {ratio_cpu:.3f} | {spars} |")
    return "\n".join(lines), medians


def _span(sparsity):
    values = [v for v in sparsity.values() if v == v]
    return f"{min(values):.3f}-{max(values):.3f}" if values else "-"


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
        nan = {"wall": [float("nan")], "cpu": [float("nan")]}
        tm, tm_sparsity = {"plain": nan, "tfmot": nan}, {}
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
