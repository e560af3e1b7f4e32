"""Every quantization mode on LeNet-5 and mobilenet_tiny, baseline and compressed: bytes,
accuracy, speed on XNNPACK and the builtin kernels, the TFLM arena, and where the time goes.

    python benchmarks/quantize_modes.py [--runs=2000] [--warmup=200] [--profile_runs=500]
        [--lenet5=export/lenet5_paper] [--mobilenet=export/mobilenet_tiny_mnist]
        [--models=lenet5,mobilenet_tiny]

1. `baseline.keras` and `compressed.keras` of a run folder of each model: LeNet-5 from
   `flags/lenet5_paper.flags` (Caffe 20-50-500 and its 16-32-64; without the folder, the
   Caffe LeNet-5 of `common.trained_lenet5()`), mobilenet_tiny from
   `flags/mobilenet_tiny_mnist.flags`, on MNIST made to fit it (32x32 RGB,
   `tfprune.data.load("mnist", model)`).
2. Each model exported (batch 1, as the pipeline's benchmark) in every mode of
   `tfprune.export.to_tflite`: float32, float16, dynamic range (int8 weights), full int8
   (float I/O and int8 I/O), full int8 with `float_layers="auto"` (the convolutions on at
   most 3 input channels left float by the converter's selective quantization; both I/O),
   and int4 in each of its forms (`tfprune.tflite.int4`: mixed, the default; dynamic;
   weight-only). int8 is calibrated on 500 training images.
3. For each file: size raw and gzipped, accuracy of the `.tflite` file on the 10,000 test
   images (LiteRT) with its paired change against the model's float32 file (Newcombe's
   95% interval, `tfprune.stats.paired`), latency on XNNPACK and on the builtin kernels
   (all files of a model interleaved in one process, 1 thread, batch 1: median µs and the
   per-round speedup over the model's float32 file), the tensor arena TFLite Micro
   measures for the files it runs (`tfprune.micro.measure_arena`; "—" where it has no
   kernels for the file), and its profile on XNNPACK (`tfprune.bench.profile`): where the
   time goes by op, the edge (de)quantize ops, what ran on the builtin kernels.

Prints one markdown table and writes `benchmarks/out/quantize_modes/results.json`.
"""

import argparse
import json
import os
import platform
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfprune import atomic, bench, export, micro, stats  # noqa: E402
from tfprune import data as datasets  # noqa: E402
from tfprune.bench.profiler import summary_line  # noqa: E402
from tfprune.errors import TfpruneError  # noqa: E402

OUT = common.OUT / "quantize_modes"
ROOT = Path(__file__).resolve().parents[1]
# (label, to_tflite keyword arguments)
MODES = (
    *common.EXPORT_MODES,
    ("int8, float_layers=auto", {"quantize": "int8", "float_layers": "auto"}),
    ("int8, float_layers=auto (int8 I/O)", {"quantize": "int8", "float_layers": "auto",
                                            "int8_io": True}),
    ("int4 mixed", {"quantize": "int4", "int4_form": "mixed"}),
    ("int4 dynamic", {"quantize": "int4", "int4_form": "dynamic"}),
    ("int4 weight-only", {"quantize": "int4", "int4_form": "weight_only"}),
)


def measure(name, model, args, test, representative):
    """Rows of one model: every mode exported, evaluated, timed together and profiled."""
    rows, base = [], None
    for label, kwargs in MODES:
        stem = re.sub(r"[^a-z0-9]+", "_", f"{name} {label}".lower()).strip("_")
        path = OUT / f"{stem}.tflite"
        export.to_tflite(model, path, representative_data=representative, batch_size=1,
                         **kwargs)
        info = export.inspect(path)
        right = export.correct(path, *test)
        base = right if base is None else base
        rows.append({"model": name, "mode": label, "path": str(path), "bytes": info.size_raw,
                     "gzip_bytes": info.size_gzip, "ops": info.ops,
                     "accuracy": float(np.mean(right)),
                     **stats.paired(base, right).to_dict(), "tflm_arena": arena(path)})
        print(f"{name} {label}: {info.size_raw:,} bytes, accuracy {rows[-1]['accuracy']:.2%}",
              file=sys.stderr)
    common.time_rows(rows, runs=args.runs, warmup=args.warmup)
    for row in rows:
        profile = bench.profile(row["path"], runs=args.profile_runs, warmup=args.warmup)
        row["profile"] = profile.to_dict()
        row["profile_summary"] = summary_line(profile)
        print(profile, file=sys.stderr)
    return rows


def arena(path):
    """The tensor arena TFLM measures for the file, or None where TFLM cannot run it."""
    if micro.available() or micro.problems(path):  # available(): the reason it is not, or ""
        return None
    try:
        return micro.measure_arena(path).total
    except TfpruneError:  # TFLM refuses it when it loads (int4 DEQUANTIZE, which the op
        return None       # check does not catch)


def markdown(rows, keras_acc, args):
    lines = [
        "Each model in each quantization mode. Accuracy: the .tflite file on the 10,000 "
        "test images, and its change against the model's float32 file (paired 95% interval) "
        "(Keras: " + ", ".join(f"{k} {v:.2%}" for k, v in keras_acc.items())
        + f"). Latency: LiteRT, 1 thread, batch 1, {args.runs} interleaved rounds after "
        f"{args.warmup} warm-up, median µs (speedup over the model's float32 file, per-round "
        "median). Where the time goes: `tfprune.bench.profile` on XNNPACK (each op alone, "
        f"{args.profile_runs} rounds), the three largest ops' shares, the edge (de)quantize "
        "ops, the ops left to the builtin kernels. TFLM arena: bytes TFLite Micro's "
        "recording allocator reports (— where TFLM has no kernels for the file). "
        f"Machine: {common.machine()}.",
        "",
        "| model | mode | bytes | smaller | accuracy | change (95% CI) | XNNPACK µs (speedup) "
        "| builtin µs (speedup) | TFLM arena | where the time goes (XNNPACK) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    floats = {r["model"]: r["bytes"] for r in rows if r["mode"] == "float32"}
    notes = []
    for r in rows:
        cells = common.timing_cells(r, notes)
        lines.append(f"| {r['model']} | {r['mode']} | {r['bytes']:,} | "
                     f"{floats[r['model']] / r['bytes']:.1f}x | {r['accuracy']:.2%} | "
                     f"{stats.change_text(r['drop_pp'], r['drop_ci_pp'])} | "
                     f"{cells[0]} | {cells[1]} | "
                     f"{'—' if r['tflm_arena'] is None else format(r['tflm_arena'], ',')} | "
                     f"{r['profile_summary']} |")
    return "\n".join(lines + ([""] + notes if notes else []))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--profile_runs", type=int, default=500)
    parser.add_argument("--lenet5", default=str(ROOT / "export/lenet5_paper"))
    parser.add_argument("--mobilenet", default=str(ROOT / "export/mobilenet_tiny_mnist"))
    parser.add_argument("--models", default="lenet5,mobilenet_tiny")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows, keras_acc = [], {}
    for name, model, test, representative in cases(args):
        keras_acc[name] = float(np.mean(model.predict(test[0], verbose=0).argmax(1) == test[1]))
        rows += measure(name, model, args, test, representative)

    command = ("python benchmarks/quantize_modes.py " + " ".join(sys.argv[1:])).strip()
    table = markdown(rows, keras_acc, args)
    print(table)
    print(f"\ncommand: {command}")
    payload = {"command": command, "machine": platform.platform(),
               "cpu_count": os.cpu_count(), "keras_accuracy": keras_acc, "rows": rows,
               "args": vars(args)}
    atomic.write_text(OUT / "results.json", json.dumps(payload, indent=2, default=str) + "\n")
    atomic.write_text(OUT / "results.md", table + f"\n\ncommand: `{command}`\n")


def cases(args):
    """`(name, Keras model, (x_test, y_test), representative images)` of each model found."""
    wanted = args.models.split(",")
    if "lenet5" in wanted:
        train, test = common.mnist("train", batch_size=500, limit=500), common.mnist("test")
        xy = tuple(np.concatenate([np.asarray(t[i]) for t in test]) for i in (0, 1))
        representative = np.concatenate([np.asarray(x) for x, _ in train])
        for stem in ("baseline", "compressed"):
            path = Path(args.lenet5) / f"{stem}.keras"
            if path.is_file():
                yield f"lenet5 {stem}", keras.models.load_model(path), xy, representative
            elif stem == "baseline":  # the Caffe LeNet-5 the other benchmarks train
                yield "lenet5 baseline", common.trained_lenet5(), xy, representative
            else:
                print(f"no compressed LeNet-5 at {path}", file=sys.stderr)
    for stem in ("baseline", "compressed") if "mobilenet_tiny" in wanted else ():
        path = Path(args.mobilenet) / f"{stem}.keras"
        if not path.is_file():
            print(f"no mobilenet_tiny model at {path}", file=sys.stderr)
            continue
        model = keras.models.load_model(path)
        splits = datasets.load("mnist", model)
        yield (f"mobilenet_tiny {stem}", model, splits.test, splits.train[0][:500])


if __name__ == "__main__":
    main()
