"""tfprune against tfmot's own pipeline, from the same trained LeNet-5 baseline.

    python benchmarks/vs_tfmot.py --tfprune_run=export/lenet5_paper   # reuse a finished run
    python benchmarks/vs_tfmot.py [--baseline=FILE.keras]             # run tfprune here too
    python benchmarks/vs_tfmot.py --tfprune_run=export/lenet5_paper \
        --searched_run=export/lenet5_auto       # + the searched widths (lenet5_auto.flags)

The baseline (a `.keras` file, or the cached `benchmarks/common.trained_lenet5()`) goes:
- through tfmot, in a subprocess with TF_USE_LEGACY_KERAS=1 (tfmot needs tf_keras and must
  not share a process with Keras 3): the weights move as NumPy arrays into the same
  architecture built with tf_keras, then `prune_low_magnitude` + `PolynomialDecay`
  (unstructured, the setting tfmot's guides use for size), `UpdatePruningStep`,
  `strip_pruning`, and conversion with `Optimize.DEFAULT` + `EXPERIMENTAL_SPARSITY` and
  full-int8 calibration: tfmot's best size recipe. It prunes for `--tfmot_epochs` (4;
  tfmot's guide uses 2), with the learning rate and batch of tfprune's prune stage.
- through tfprune, with `flags/lenet5_paper.flags` and the baseline as `--model`; or, with
  `--tfprune_run`, a finished `tfprune --flagfile=flags/lenet5_paper.flags` run folder
  supplies the baseline and both `.tflite` files.
With `--searched_run`, a finished `tfprune --flagfile=flags/lenet5_auto.flags` run folder adds
the compressed file of the searched widths as a row beside the hand-tuned one (the table
says whether its baseline file is the same, byte for byte: both flagfiles train the same
baseline with the same seed).
Then all the `.tflite` files are evaluated on the 10,000 test images and timed together
(interleaved rounds, XNNPACK, 1 thread, batch 1), and one table is printed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "vs_tfmot"


def tfmot_child(args):
    """Runs in the subprocess: tfmot prunes, strips and converts the baseline."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    tf_keras.utils.set_random_seed(args.seed)
    arrays = np.load(args.arrays)
    x = arrays["x_train"].astype("float32") / 255.0
    y = arrays["y_train"]
    layers = tf_keras.layers

    def lenet5(batch_size=None):
        return tf_keras.Sequential([
            tf_keras.Input((28, 28, 1), batch_size=batch_size),
            layers.Conv2D(20, 5, name="conv1"), layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(50, 5, name="conv2"), layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"), layers.Dense(500, activation="relu", name="ip1"),
            layers.Dense(10, activation="softmax", name="ip2")])

    model = lenet5()
    weights = np.load(args.weights)
    model.set_weights([weights[f"w{i}"] for i in range(len(weights.files))])

    steps = int(np.ceil(len(y) / args.batch_size)) * args.epochs
    # As tfprune's schedule: ramp over 3/4 of the steps, ending on a mask update.
    frequency = min(100, max(1, steps // 10))
    end_step = max(1, round(0.75 * steps / frequency)) * frequency
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=args.tfmot_sparsity, begin_step=0,
        end_step=end_step, frequency=frequency)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(optimizer=tf_keras.optimizers.Adam(args.learning_rate),
                   loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    pruned.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, shuffle=True,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()], verbose=2)
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    if args.export_batch_size:  # the same fixed batch as tfprune's files
        fixed = lenet5(args.export_batch_size)
        fixed.set_weights(stripped.get_weights())
        stripped = fixed

    def representative():
        for i in range(200):
            yield [x[i:i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(stripped)
    converter.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    Path(args.out).write_bytes(converter.convert())
    # Dynamic-range int8 + sparse as well: what tfprune's file uses, for a like-for-like row.
    converter = tf.lite.TFLiteConverter.from_keras_model(stripped)
    converter.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    Path(args.out).with_name("tfmot_dynamic.tflite").write_bytes(converter.convert())
    # And full int8 without the sparse encoding: bigger, but XNNPACK can run it.
    converter = tf.lite.TFLiteConverter.from_keras_model(stripped)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    Path(args.out).with_name("tfmot_int8_dense.tflite").write_bytes(converter.convert())
    kernels = [w for w in stripped.get_weights() if w.ndim > 1]
    zeros = sum(int((w == 0).sum()) for w in kernels) / sum(w.size for w in kernels)
    print(json.dumps({"seconds": time.perf_counter() - start, "kernel_sparsity": zeros}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="A trained LeNet-5 .keras file (default: the "
                        "cached benchmarks/common.trained_lenet5()).")
    parser.add_argument("--tfprune_run", help="A finished tfprune run folder: its "
                        "baseline.keras is the baseline, its .tflite files are tfprune's.")
    parser.add_argument("--searched_run", help="A finished run of flags/lenet5_auto.flags: "
                        "its compressed.tflite (searched widths) is added as a row.")
    parser.add_argument("--flagfile", default=str(ROOT / "flags" / "lenet5_paper.flags"))
    parser.add_argument("--tfmot_sparsity", type=float, default=0.9)
    parser.add_argument("--tfmot_epochs", type=int, default=4,
                        help="Pruning epochs for tfmot (its guide uses 2); 0: as many as "
                        "tfprune's prune + retrain stages.")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="Reuse finished tfprune stages.")
    parser.add_argument("--tfmot_child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--arrays", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch_size", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--learning_rate", type=float, default=5e-4, help=argparse.SUPPRESS)
    parser.add_argument("--export_batch_size", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tfmot_child:
        return tfmot_child(args)

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    from absl import flags

    import tfprune
    from benchmarks import common
    from tfprune import cli, data

    OUT.mkdir(parents=True, exist_ok=True)
    if args.tfprune_run:
        run = Path(args.tfprune_run)
        baseline_path = run / "baseline.keras"
        settings = json.loads((run / "report.json").read_text())["config"]
        epochs = settings["prune_epochs"] + settings["retrain_epochs"]
        batch_size, learning_rate = settings["prune_batch_size"], settings["prune_learning_rate"]
        export_batch = settings.get("export_batch_size")
        tfprune_note = f"run folder {run} ({args.flagfile})"
    else:
        if args.baseline:
            baseline_path = Path(args.baseline)
        else:
            common.trained_lenet5()
            baseline_path = common.OUT / "lenet5_e8_s0.keras"
        # tfprune: the paper flagfile, starting from this baseline (no baseline training).
        flags.FLAGS([sys.argv[0], f"--flagfile={args.flagfile}", f"--model={baseline_path}",
                     "--baseline_epochs=0", f"--export_dir={OUT / 'tfprune'}",
                     f"--seed={args.seed}", "--bench_runs=200", "--verbose=2"]
                    + (["--resume"] if args.resume else []))
        config = cli.config_from_flags()
        start = time.perf_counter()
        tfprune.pipeline.run(config)
        run = OUT / "tfprune"
        epochs = config.prune_epochs + config.retrain_epochs
        batch_size, learning_rate = config.prune_batch_size, config.prune_learning_rate
        export_batch = config.export_batch_size
        tfprune_note = f"{args.flagfile} ({time.perf_counter() - start:.0f} s)"
    baseline = keras.models.load_model(baseline_path)

    # tfmot: same baseline weights, same epochs as tfprune's prune + retrain stages.
    x_train, y_train = data.mnist_arrays("train")
    tfmot_path = OUT / "tfmot.tflite"
    with tempfile.TemporaryDirectory() as tmp:
        weights, arrays = Path(tmp) / "w.npz", Path(tmp) / "mnist.npz"
        np.savez(weights, **{f"w{i}": w for i, w in enumerate(baseline.get_weights())})
        np.savez(arrays, x_train=np.round(x_train[..., :] * 255).astype("uint8"),
                 y_train=y_train)
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
        proc = subprocess.run(
            [sys.executable, __file__, "--tfmot_child", f"--weights={weights}",
             f"--arrays={arrays}", f"--out={tfmot_path}",
             f"--tfmot_sparsity={args.tfmot_sparsity}",
             f"--epochs={args.tfmot_epochs or epochs}", f"--batch_size={batch_size}",
             f"--learning_rate={learning_rate}", f"--seed={args.seed}"]
            + ([f"--export_batch_size={export_batch}"] if export_batch else []),
            env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"tfmot subprocess failed:\n{proc.stderr[-3000:]}")
    tfmot_info = json.loads(proc.stdout.strip().splitlines()[-1])

    test = data.mnist("test", batch_size=500)
    files = {"baseline (float32)": run / "baseline.tflite",
             "tfmot int8 + sparse": tfmot_path,
             "tfmot dynamic + sparse": tfmot_path.with_name("tfmot_dynamic.tflite"),
             "tfmot int8, dense encoding": tfmot_path.with_name("tfmot_int8_dense.tflite"),
             "tfprune": run / "compressed.tflite"}
    searched_note = ""
    if args.searched_run:
        from tfprune.pipeline.runner import file_sha256

        searched = Path(args.searched_run)
        plan = json.loads((searched / "search.json").read_text())
        files["tfprune, hand-tuned"] = files.pop("tfprune")
        files[f"tfprune, searched {plan['name']}"] = searched / "compressed.tflite"
        same = file_sha256(searched / "baseline.tflite") == file_sha256(run / "baseline.tflite")
        searched_note = (f"searched: {searched} ({plan['note']}); its baseline.tflite is "
                         f"{'the same file' if same else 'ANOTHER file'} as {run}'s")
    comparison = tfprune.bench.compare(*[str(p) for p in files.values()], threads=1,
                                       batch_size=1, runs=args.runs, warmup=50,
                                       delegates=("xnnpack",))
    rows = []
    base_raw = None
    for i, (label, path) in enumerate(files.items()):
        raw, gz = tfprune.bench.file_sizes(path)
        base_raw = base_raw or raw
        timing = comparison.timing(i)
        rows.append((label, f"{raw:,}", f"{base_raw / raw:.1f}x", f"{gz:,}",
                     f"{tfprune.export.evaluate(path, test):.2%}",
                     f"{timing.median_us:.1f}", f"{timing.speedup:.2f}x",
                     timing.delegate_used))
    head = ("model", ".tflite bytes", "smaller", "gzip bytes", ".tflite test acc",
            "median µs", "speedup", "ran")
    print()
    print(f"LeNet-5 (Caffe, {baseline.count_params():,} params) on MNIST, from {baseline_path}")
    print(f"tfmot: {args.tfmot_epochs or epochs} epochs of prune_low_magnitude, "
          f"PolynomialDecay 0 -> {args.tfmot_sparsity} "
          f"(kernels {tfmot_info['kernel_sparsity']:.1%} zero), strip_pruning, int8 + sparse; "
          f"{tfmot_info['seconds']:.0f} s")
    print(f"tfprune: {tfprune_note}")
    if searched_note:
        print(searched_note)
    print(f"latency: LiteRT, XNNPACK, 1 thread, batch 1, {args.runs} interleaved rounds "
          f"(medians; speedup = median per-round baseline time / this one's); "
          f"machine: {common.machine()}")
    common.print_table(head, rows)
    print("\ncommand: python benchmarks/vs_tfmot.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
