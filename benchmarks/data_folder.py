"""Training from a folder of PNG files against the same images from memory: time per epoch.

    python benchmarks/data_folder.py [--epochs=3] [--rounds=2] [--limit=N] [--keras]

The folder is MNIST written out by `python -m tfprune.data export-folder mnist
benchmarks/out/mnist_png` (done first if it is not there). Both runs train Caffe LeNet-5
(Adam, batch 128, the same initial weights) on the folder's training images:

- memory: `tfprune.data.load` (the folder decoded into NumPy arrays), then
  `tf.data.Dataset.from_tensor_slices(...).shuffle(...).batch(...).prefetch(...)`;
- folder: `tfprune.data.datasets`, which decodes the files as training runs (parallel
  `map` with `AUTOTUNE`), caches them in memory during the first epoch, reshuffles,
  batches and prefetches;
- with `--keras`, also `keras.utils.image_dataset_from_directory(...).cache().prefetch()`
  with the same scaling, for reference.

Rounds run the pipelines one after the other, in alternating order, so that drift in the
machine's load hits both. Reported: wall seconds of the first epoch (the folder decodes its
files then), the median of the later epochs, and the mean over all epochs, each as the
median over rounds, with the ratio folder / memory; then the process-CPU seconds (steadier
when other processes load the machine). The table and the command are printed, and the raw
times are written to `benchmarks/out/data_folder.json`.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfprune import atomic, data, models  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


class EpochTimer(keras.callbacks.Callback):
    """Wall and process-CPU seconds of each epoch."""

    def __init__(self):
        super().__init__()
        self.wall, self.cpu = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def ensure_folder(path, limit):
    if not path.exists():
        print(f"writing {path} (python -m tfprune.data export-folder mnist {path}"
              f"{f' --limit {limit}' if limit else ''}) ...", flush=True)
        data.export_folder("mnist", path, limit=limit)
    return path


def pipelines(spec, batch_size, seed, with_keras):
    """Each pipeline's name -> a function making its training dataset (fresh each round)."""
    model = models.lenet5()

    def memory():
        x, y = data.load(spec, model, validation_split=0).train
        return (tf.data.Dataset.from_tensor_slices((x, y))
                .shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
                .batch(batch_size).prefetch(tf.data.AUTOTUNE))

    def folder():
        return data.datasets(spec, model, batch_size=batch_size, seed=seed,
                             validation_split=0).train

    def keras_folder():
        ds = keras.utils.image_dataset_from_directory(
            spec.partition(":")[2], image_size=(28, 28), color_mode="grayscale",
            batch_size=batch_size, seed=seed, verbose=False)
        return ds.map(lambda x, y: (x / 255.0, y)).cache().prefetch(tf.data.AUTOTUNE)

    made = {"memory": memory, "folder": folder}
    if with_keras:
        made["keras image_dataset_from_directory"] = keras_folder
    return made


def train(make, epochs, seed):
    keras.utils.set_random_seed(seed)
    model = models.lenet5()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    ds = make()
    prepare = time.perf_counter() - start
    timer = EpochTimer()
    model.fit(ds, epochs=epochs, callbacks=[timer], verbose=0, shuffle=False)  # ds shuffles
    return {"prepare": prepare, "wall": timer.wall, "cpu": timer.cpu}


def summary(runs, key):
    """Median over rounds of: the first epoch, the later epochs' median, the mean epoch."""
    first = statistics.median(run[key][0] for run in runs)
    later = statistics.median(statistics.median(run[key][1:]) for run in runs) \
        if len(runs[0][key]) > 1 else None
    mean = statistics.median(statistics.mean(run[key]) for run in runs)
    return first, later, mean


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=str(OUT / "mnist_png"))
    parser.add_argument("--limit", type=int, default=None,
                        help="images per split when writing the folder (default: all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keras", action="store_true",
                        help="also time keras.utils.image_dataset_from_directory")
    args = parser.parse_args()
    spec = f"folder:{ensure_folder(Path(args.folder), args.limit)}"
    made = pipelines(spec, args.batch_size, args.seed, args.keras)
    runs = {name: [] for name in made}
    for round_ in range(args.rounds):
        order = list(made) if round_ % 2 == 0 else list(reversed(made))
        for name in order:
            runs[name].append(train(made[name], args.epochs, args.seed))
            wall = ", ".join(f"{t:.1f}" for t in runs[name][-1]["wall"])
            print(f"round {round_ + 1} {name}: epochs {wall} s", flush=True)
    images = sum(1 for _ in Path(args.folder, "train").rglob("*.png"))
    command = "python benchmarks/data_folder.py " + " ".join(sys.argv[1:])
    print(f"\nCaffe LeNet-5, {images:,} training PNGs ({args.folder}), batch {args.batch_size}, "
          f"{args.epochs} epochs x {args.rounds} rounds; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}\n")
    for key, unit in (("wall", "wall s"), ("cpu", "CPU s")):
        base = summary(runs["memory"], key)
        print(f"| pipeline | first epoch ({unit}) | later epochs | mean epoch | mean / memory |")
        print("|---|---:|---:|---:|---:|")
        for name, made_runs in runs.items():
            first, later, mean = summary(made_runs, key)
            later_text = "—" if later is None else f"{later:.2f}"
            print(f"| {name} | {first:.2f} ({first / base[0]:.2f}x) | {later_text} | "
                  f"{mean:.2f} | {mean / base[2]:.2f}x |")
        print()
    print(f"command: {command.strip()}")
    atomic.write_text(OUT / "data_folder.json", json.dumps(
        {"command": command.strip(), "images": images, "args": vars(args), "runs": runs},
        indent=1), make_parents=True)


if __name__ == "__main__":
    main()
