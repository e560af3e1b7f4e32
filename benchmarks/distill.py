"""Distillation alone: the same widths, epochs and seed, trained with and without a teacher.

    python benchmarks/distill.py                       # 16-24-48, the paper recipe otherwise
    python benchmarks/distill.py --layer_sparsity=conv1:0.2,conv2:0.52,ip1:0.936 --seeds=0,1

Each seed runs `flags/lenet5_paper.flags` with `--layer_sparsity` fixed (16-24-48 units by
default: 48.3x smaller but 0.15 pp less accurate without distillation in the README), once
with `--nodistill` and once with `--distill` (the baseline as teacher in the prune and
retrain stages, `--distill_temperature`, `--distill_weight`). The distilled run resumes from
the other's folder copy, so both start from the same baseline file (its SHA-256 is
printed); then one table gives, per run, the `.tflite` test accuracy of baseline and
compressed file (10,000 images) and the drop, with the Keras validation accuracy after
retraining. Run folders go to `benchmarks/out/distill/`.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "distill"


def run(flagfile, folder, overrides, resume=False):
    """Runs the pipeline with `flagfile` and `overrides` into `folder`; returns the report."""
    from absl import flags

    import tfprune
    from tfprune import cli

    flags.FLAGS.unparse_flags()
    flags.FLAGS([sys.argv[0], f"--flagfile={flagfile}", f"--export_dir={folder}", *overrides]
                + (["--resume"] if resume else []))
    return tfprune.pipeline.run(cli.config_from_flags().validate())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flagfile", default=str(ROOT / "flags" / "lenet5_paper.flags"))
    parser.add_argument("--layer_sparsity", default="conv1:0.2,conv2:0.52,ip1:0.904",
                        help="The fixed widths (default 16-24-48 of 20-50-500).")
    parser.add_argument("--seeds", default="0", help="Comma-separated seeds.")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--weight", type=float, default=0.5)
    parser.add_argument("--resume", action="store_true", help="Reuse finished stages.")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from benchmarks import common
    from tfprune.pipeline.runner import file_sha256

    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        common_flags = [f"--layer_sparsity={args.layer_sparsity}", f"--seed={seed}",
                        "--verbose=0"]
        plain, taught = OUT / f"s{seed}_plain", OUT / f"s{seed}_distilled"
        start = time.perf_counter()
        reports = {"no": run(args.flagfile, plain, common_flags + ["--nodistill"],
                             args.resume)}
        seconds = {"no": time.perf_counter() - start}
        if not (args.resume and (taught / "stages.json").is_file()):
            taught.mkdir(parents=True, exist_ok=True)  # the same baseline: resume from it
            for name in ("baseline.keras", "stages.json"):
                shutil.copy(plain / name, taught / name)
        start = time.perf_counter()
        reports["yes"] = run(args.flagfile, taught, common_flags + [
            "--distill", f"--distill_temperature={args.temperature}",
            f"--distill_weight={args.weight}"], resume=True)
        seconds["yes"] = time.perf_counter() - start
        same = file_sha256(plain / "baseline.keras") == file_sha256(taught / "baseline.keras")
        for key, report in reports.items():
            s = report["summary"]
            kept = "-".join(str(r["units_kept"]) for r in report["layers"][:-1])
            retrained = next(r for r in report["stages"] if r["stage"] == "retrain")
            rows.append((str(seed), key, kept, f"{s['size_ratio']:.1f}x",
                         f"{s['baseline']['accuracy']:.2%}", f"{s['compressed']['accuracy']:.2%}",
                         f"{100 * s['accuracy_delta']:+.2f}",
                         f"{retrained['val_accuracy']:.2%}", f"{seconds[key]:.0f}",
                         "same" if same else "DIFFERENT"))
    head = ("seed", "distilled", "units kept", "smaller", "baseline test acc",
            "compressed test acc", "drop (pp)", "retrained val acc", "seconds", "baseline")
    print()
    print(f"LeNet-5 on MNIST, {args.flagfile} with --layer_sparsity={args.layer_sparsity}; "
          f"distillation: T={args.temperature:g}, weight {args.weight:g} (prune and retrain "
          f"stages); test accuracy of the .tflite files on 10,000 images; machine: "
          f"{common.machine()}")
    common.print_table(head, rows)
    (OUT / "table.json").write_text(json.dumps({"head": head, "rows": rows}, indent=1))
    print("\ncommand: python benchmarks/distill.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
