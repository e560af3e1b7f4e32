"""Recovery on BatchNorm CNNs: the validation accuracy after each stage, with and without
each of the three recovery defaults (issue 20), measured one by one.

    python benchmarks/recovery.py                       # both models, every variant
    python benchmarks/recovery.py --models=residual --variants=defaults,before --seeds=0,1,2

Models (trained by the first run of each, on MNIST written out as PNG files and read at
32x32 RGB; the other variants start from that run's baseline file):

- `residual`: a small residual CNN of the kind users bring (its own Rescaling, Conv-BN-ReLU,
  a residual block, a separable conv; 18,106 parameters), trained 15 epochs on 10,000
  training images (and measured on 10,000 test images);
- `residual_m999`: the same with keras.applications' BatchNorm momentum, 0.999, whose moving
  statistics follow the weights over a thousand steps;
- `mobilenet_v2`: `tfprune.models.mobilenet_v2` (keras.applications MobileNetV2, alpha 0.35),
  trained with the zoo default of 8 epochs on all of MNIST (`export/mnist_images`, as the
  README makes it).

Each is compressed with `--final_sparsity=0.5 --granularity=filter` and otherwise the
defaults. Variants:

- `defaults`: mask updates sized to the run, adaptive BatchNorm, merging after retraining,
  the recovery budget chosen by the tool;
- `no_frequency`: the old `--frequency=100`;
- `no_batchnorm`: `--batchnorm_images=0`;
- `no_fold_after`: `--nofold_after_retrain` (merge before retraining);
- `no_budget`: the old fixed budget, `--prune_epochs=4 --retrain_epochs=2`;
- `old_rates`: the old learning rates (prune 5e-4, retrain 2e-4);
- `before`: all of these at once: the defaults before issue 20.

It prints one row per model and variant: validation accuracy after each stage, the
`.tflite` test accuracy of baseline and compressed file and the paired difference, the
speedup, the time of the prune and retrain stages against the baseline's training, and the
verdict. Runs go to `export/recovery/<model>_<variant>` and are resumed when run again.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import print_table  # noqa: E402

OUT = ROOT / "export" / "recovery"
IMAGES = {"residual": (OUT / "mnist_png_10k", 10000),
          "residual_m999": (OUT / "mnist_png_10k", 10000),
          "mobilenet_v2": (ROOT / "export" / "mnist_images", None)}
VARIANTS = {
    "defaults": [],
    "no_frequency": ["--frequency=100"],
    "no_batchnorm": ["--batchnorm_images=0"],
    "no_fold_after": ["--nofold_after_retrain"],
    "no_budget": ["--prune_epochs=4", "--retrain_epochs=2"],
    "old_rates": ["--prune_learning_rate=0.0005", "--retrain_learning_rate=0.0002"],
    "before": ["--frequency=100", "--batchnorm_images=0", "--nofold_after_retrain",
               "--prune_epochs=4", "--retrain_epochs=2", "--prune_learning_rate=0.0005",
               "--retrain_learning_rate=0.0002"],
}
MODELS = {"residual": ["--baseline_epochs=15"], "residual_m999": ["--baseline_epochs=15"],
          "mobilenet_v2": []}
COMMON = ["--final_sparsity=0.5", "--granularity=filter", "--verbose=2", "--resume"]


def residual_cnn(momentum=0.99):
    """The small residual CNN with BatchNorm and a separable conv, 32x32 RGB (~18k params);
    `momentum`: its BatchNorms' (Keras' default, or keras.applications' 0.999)."""
    import keras
    from keras import layers

    def conv_bn(x, filters, kernel, strides, name, relu=True, separable=False):
        conv = layers.SeparableConv2D if separable else layers.Conv2D
        x = conv(filters, kernel, strides=strides, padding="same", use_bias=False,
                 name=f"{name}_conv")(x)
        x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x) if relu else x

    inputs = keras.Input((32, 32, 3), name="image")
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = conv_bn(x, 16, 3, 2, "stem")
    y = conv_bn(x, 16, 3, 1, "res_a")
    y = conv_bn(y, 16, 3, 1, "res_b", relu=False)
    x = layers.ReLU(name="res_relu")(layers.Add(name="res_add")([x, y]))
    x = conv_bn(x, 32, 3, 2, "sep", separable=True)
    x = conv_bn(x, 40, 3, 2, "head")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(10, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="residual_cnn")


def model_flag(name):
    """The `--model` of the first run of `name`: a zoo name, or the residual CNN's file."""
    if not name.startswith("residual"):
        return name
    path = OUT / f"{name}_cnn.keras"
    if not path.exists():
        from tfprune import atomic

        with atomic.atomic_path(path, make_parents=True) as tmp:
            residual_cnn(0.999 if name == "residual_m999" else 0.99).save(tmp)
    return str(path)


def images(model):
    """The `--dataset` flag of `model`'s runs; the PNG folder is written once."""
    folder, limit = IMAGES[model]
    if not folder.exists():
        from tfprune import data

        data.export_folder("mnist", folder, limit=limit)
    return f"--dataset=folder:{folder}"


def run(model, variant, seed=0):
    """Runs (or resumes) one variant; returns its folder."""
    suffix = f"_s{seed}" if seed else ""
    folder = OUT / f"{model}_{variant}{suffix}"
    first = OUT / f"{model}_defaults{suffix}"
    flags = [images(model), f"--export_dir={folder}", *COMMON, f"--seed={seed}",
             *VARIANTS[variant]]
    if variant == "defaults":
        flags += [f"--model={model_flag(model)}", *MODELS[model]]
    else:  # the same baseline, trained once by the defaults run
        flags += [f"--model={first / 'baseline.keras'}", "--baseline_epochs=0"]
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "tfprune", *flags], cwd=ROOT)
    print(f"[recovery] {model} {variant}: exit {done.returncode} in {time.time() - start:.0f} s",
          flush=True)
    return folder, done.returncode


def row(model, variant, seed, folder, code, baseline_seconds):
    records = json.loads((folder / "stages.json").read_text())
    report = json.loads((folder / "report.json").read_text()) if (
        folder / "report.json").exists() else {}

    def val(stage):
        value = (records.get(stage, {}).get("result") or {}).get("val_accuracy")
        return "-" if value is None else f"{value:.2%}"

    summary = report.get("summary", {})
    base = (summary.get("baseline") or {}).get("accuracy")
    comp = (summary.get("compressed") or {}).get("accuracy")
    seconds = sum(records.get(s, {}).get("seconds", 0) for s in ("prune", "retrain"))
    prune = records.get("prune", {}).get("result") or {}
    retrain = records.get("retrain", {}).get("result") or {}
    return {
        "model": model, "variant": variant, "seed": str(seed),
        "baseline": val("baseline"), "pruned": val("prune"),
        "retrained": val("retrain"), "compressed": val("shrink"),
        "prune epochs / updates": f"{prune.get('epochs', '-')} / {prune.get('updates', '-')}",
        "retrain epochs": (f"{retrain.get('best_epoch')} of {retrain.get('epochs_run')}"
                           if retrain.get("early_stopping") else str(retrain.get("epochs", "-"))),
        ".tflite test": ("-" if comp is None else
                         f"{base:.2%} -> {comp:.2%} ({100 * (comp - base):+.2f} pp)"),
        "speedup": (f"{summary['speedup']:.2f}x" if summary.get("speedup") else "-"),
        "prune+retrain s / baseline s": (f"{seconds:.0f} / {baseline_seconds:.0f}"
                                         if baseline_seconds else f"{seconds:.0f} / -"),
        "verdict": "exit 0" if code == 0 else f"exit {code}",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0",
                        help="seeds to run each variant with (each seed trains its baseline)")
    args = parser.parse_args()
    rows = []
    for model in args.models.split(","):
        for seed in map(int, args.seeds.split(",")):
            baseline_seconds = None
            for variant in args.variants.split(","):
                folder, code = run(model, variant, seed)
                if variant == "defaults":
                    records = json.loads((folder / "stages.json").read_text())
                    baseline_seconds = records["baseline"]["seconds"]
                rows.append(row(model, variant, seed, folder, code, baseline_seconds))
    head = list(rows[0])
    print_table(head, [[r[k] for k in head] for r in rows])


if __name__ == "__main__":
    main()
