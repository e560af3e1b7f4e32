"""Training-time cost of the pruning masks on each Keras backend, LeNet-5 on MNIST.

    python benchmarks/backends.py [--rounds=3] [--limit=20480] [--backends=tensorflow,jax,torch]

Each backend runs in a process of its own (Keras fixes its backend at import): plain
LeNet-5, the same pruned with weight masks, and with filter masks (`{"Conv2D": "filter",
"Dense": "filter"}`), one epoch each per round, in rotating order so that drift in the
machine's load hits all three alike. Same data (a NumPy array, batch 128, no shuffle),
Adam, `PolynomialDecay(0 -> 0.9, frequency=100)` with `UpdatePruningStep`; a few warm-up
batches first (tracing is not timed). Printed per backend: median wall and process-CPU
seconds per epoch, and the median over rounds of pruned / plain (the target is at most
1.25x). A backend that is not installed is skipped, and said so. Raw times go to
`benchmarks/out/backends.json`.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"
RUNS = ("plain", "weight", "filter")
WARMUP_BATCHES = 5
TARGET = 1.25


def child(args):
    """Times the three runs on this process's backend; prints one JSON line."""
    import keras

    import tfprune
    from tfprune import data, models

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.wall = time.perf_counter() - self.start[0]
            self.cpu = time.process_time() - self.start[1]

    x, y = data.mnist_arrays("train", data_dir=args.data_dir)
    x, y = x[:args.limit], y[:args.limit]
    steps = -(-len(x) // args.batch_size)
    schedule = tfprune.PolynomialDecay(0.0, 0.9, begin_step=0,
                                       end_step=WARMUP_BATCHES + steps * args.rounds,
                                       frequency=100)
    keras.utils.set_random_seed(0)
    plain = models.lenet5()
    granularity = {"weight": "weight", "filter": {"Conv2D": "filter", "Dense": "filter"}}
    runs = {"plain": (plain, [])}
    runs.update({name: (tfprune.prune(plain, schedule, granularity=g),
                        [tfprune.UpdatePruningStep()]) for name, g in granularity.items()})
    for model, callbacks in runs.values():
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=args.batch_size, steps_per_epoch=WARMUP_BATCHES,
                  verbose=0, shuffle=False, callbacks=callbacks)
    times = {name: {"wall": [], "cpu": []} for name in runs}
    for r in range(args.rounds):
        for name in RUNS[r % 3:] + RUNS[:r % 3]:   # rotate the order
            model, callbacks = runs[name]
            timer = EpochTimer()
            model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=False,
                      callbacks=[*callbacks, timer])
            times[name]["wall"].append(timer.wall)
            times[name]["cpu"].append(timer.cpu)
            print(f"  {keras.backend.backend()} round {r + 1}/{args.rounds} {name:6s} "
                  f"{timer.wall:.2f} s wall {timer.cpu:.2f} s cpu", file=sys.stderr, flush=True)
    sparsity = {name: tfprune.sparsity(runs[name][0]) for name in ("weight", "filter")}
    print(json.dumps({"backend": keras.backend.backend(), "steps": steps, "times": times,
                      "sparsity": sparsity}))


def ratio(times, name, measure):
    """Median over rounds of `name`'s time / plain's (the same round, run back to back)."""
    return statistics.median(p / q for p, q in zip(times[name][measure],
                                                   times["plain"][measure], strict=True))


def table(results):
    lines = ["| backend | plain s/epoch | weight s/epoch | weight ratio | filter s/epoch | "
             "filter ratio | CPU ratios (weight, filter) |", "|---|---:|---:|---:|---:|---:|---|"]
    for result in results:
        t = result["times"]
        wall = {name: statistics.median(t[name]["wall"]) for name in RUNS}
        lines.append(
            f"| {result['backend']} | {wall['plain']:.2f} | {wall['weight']:.2f} | "
            f"{ratio(t, 'weight', 'wall'):.3f}x | {wall['filter']:.2f} | "
            f"{ratio(t, 'filter', 'wall'):.3f}x | {ratio(t, 'weight', 'cpu'):.3f}x, "
            f"{ratio(t, 'filter', 'cpu'):.3f}x |")
    return "\n".join(lines)


def run_backend(backend, args):
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    if module is None:
        raise SystemExit(f"Unknown backend {backend!r}: tensorflow, jax or torch.")
    if importlib.util.find_spec(module) is None:
        print(f"{backend}: not installed, skipped", file=sys.stderr)
        return None
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, __file__, "--child", f"--rounds={args.rounds}",
               f"--limit={args.limit}", f"--batch_size={args.batch_size}"]
    if args.data_dir:
        command.append(f"--data_dir={args.data_dir}")
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{backend}: the benchmark process failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per run")
    parser.add_argument("--limit", type=int, default=20480, help="training images used")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    results = [r for r in (run_backend(b, args) for b in args.backends.split(",")) if r]
    from tfprune import atomic

    OUT.mkdir(exist_ok=True)
    atomic.write_text(OUT / "backends.json", json.dumps(results, indent=1))
    steps = results[0]["steps"] if results else 0
    print(f"LeNet-5, {args.limit} MNIST images ({steps} steps of batch {args.batch_size}) per "
          f"epoch, {args.rounds} rounds; wall-time medians; ratio = median of per-round "
          f"pruned / plain (target <= {TARGET}x)\n")
    print(table(results))
    for result in results:
        print(f"{result['backend']} sparsity: {json.dumps(result['sparsity'])}")
    print(f"\n{' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
