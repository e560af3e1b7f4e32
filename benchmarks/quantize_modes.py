"""Every quantization mode on LeNet-5, baseline and compressed: bytes, accuracy, speed, and
where the time goes.

    python benchmarks/quantize_modes.py [--runs=2000] [--warmup=200] [--profile_runs=500]
        [--compressed=export/lenet5_paper/compressed.keras]

1. The trained Caffe LeNet-5 (`common.trained_lenet5()`, 8 epochs of Adam on MNIST) and,
   if the file exists, the compressed LeNet-5 of `flags/lenet5_paper.flags` (16-32-64).
2. Each model exported (batch 1, as the pipeline's benchmark) in every mode of
   `tfprune.export.to_tflite`: float32, float16, dynamic range (int8 weights), full int8
   (float I/O and int8 I/O), and int4 in each of its forms (`tfprune.int4`: mixed, the
   default; dynamic; weight-only). And, to test why full int8 is slower than dynamic range
   here, one file outside tfprune's modes: full int8 but for the first conv, which stays
   float (litert-quantizer's static int8 recipe on every op but that conv, calibrated on
   the same 500 training images; int8 I/O, as that recipe makes).
3. For each file: size raw and gzipped, accuracy of the `.tflite` file on the 10,000 MNIST
   test images (LiteRT), latency on XNNPACK and on the builtin kernels (all files of a
   model interleaved in one process, 1 thread, batch 1: median µs and the per-round
   speedup over the model's float32 file), and its profile on XNNPACK
   (`tfprune.bench.profile`): where the time goes by op, the edge (de)quantize ops, what
   ran on the builtin kernels.

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

from tfprune import atomic, bench, export  # noqa: E402
from tfprune.bench.profiler import summary_line  # noqa: E402

OUT = common.OUT / "quantize_modes"
ROOT = Path(__file__).resolve().parents[1]
# (label, to_tflite keyword arguments)
MODES = (
    *common.EXPORT_MODES,
    ("int4 mixed", {"quantize": "int4", "int4_form": "mixed"}),
    ("int4 dynamic", {"quantize": "int4", "int4_form": "dynamic"}),
    ("int4 weight-only", {"quantize": "int4", "int4_form": "weight_only"}),
    ("int8, first conv float (int8 I/O)", None),
)


def int8_but_first_conv(model, path, representative):
    """Full int8 (litert-quantizer's static a8w8) on every op but the first conv's."""
    from ai_edge_litert import interpreter as litert
    from litert_quantizer import Quantizer

    float_path = path.with_name(path.stem + "_float_input.tflite")
    export.to_tflite(model, float_path, batch_size=1)
    signature = litert.Interpreter(model_path=str(float_path)).get_signature_list()
    key = next(iter(signature))
    name = signature[key]["inputs"][0]
    first = next(layer.name for layer in model.layers
                 if isinstance(layer, keras.layers.Conv2D))
    quantizer = Quantizer(str(float_path))
    quantizer.add_static_config(f"^(?!.*/{re.escape(first)}_?\\d*/).*$", "*", 8, 8)
    images = np.concatenate([np.asarray(x) for x, _ in representative])
    ranges = quantizer.calibrate({key: [{name: images[i:i + 1]} for i in range(len(images))]})
    result = quantizer.quantize(ranges, enable_progress_report=False)
    atomic.write_bytes(path, bytes(result.quantized_model))


def measure(name, model, args, test, representative):
    """Rows of one model: every mode exported, evaluated, timed together and profiled."""
    rows = []
    for label, kwargs in MODES:
        path = OUT / f"{name}_{re.sub(r'[^a-z0-9]+', '_', label.lower()).strip('_')}.tflite"
        if kwargs is None:
            int8_but_first_conv(model, path, representative)
        else:
            export.to_tflite(model, path, representative_data=representative, batch_size=1,
                             **kwargs)
        info = export.inspect(path)
        rows.append({"model": name, "mode": label, "path": str(path), "bytes": info.size_raw,
                     "gzip_bytes": info.size_gzip, "ops": info.ops,
                     "accuracy": export.evaluate(path, test)})
        print(f"{name} {label}: {info.size_raw:,} bytes, accuracy {rows[-1]['accuracy']:.2%}",
              file=sys.stderr)
    common.time_rows(rows, runs=args.runs, warmup=args.warmup)
    for row in rows:
        profile = bench.profile(row["path"], runs=args.profile_runs, warmup=args.warmup)
        row["profile"] = profile.to_dict()
        row["profile_summary"] = summary_line(profile)
        print(profile, file=sys.stderr)
    return rows


def markdown(rows, keras_acc, args):
    lines = [
        "LeNet-5 on MNIST, each quantization mode. Accuracy: the .tflite file on the 10,000 "
        "test images (Keras: " + ", ".join(f"{k} {v:.2%}" for k, v in keras_acc.items())
        + f"). Latency: LiteRT, 1 thread, batch 1, {args.runs} interleaved rounds after "
        f"{args.warmup} warm-up, median µs (speedup over the model's float32 file, per-round "
        "median). Where the time goes: `tfprune.bench.profile` on XNNPACK (each op alone, "
        f"{args.profile_runs} rounds), the three largest ops' shares, the edge (de)quantize "
        f"ops, the ops left to the builtin kernels. Machine: {common.machine()}.",
        "",
        "| model | mode | bytes | smaller | accuracy | XNNPACK µs (speedup) | builtin µs "
        "(speedup) | where the time goes (XNNPACK) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    floats = {r["model"]: r["bytes"] for r in rows if r["mode"] == "float32"}
    notes = []
    for r in rows:
        cells = common.timing_cells(r, notes)
        lines.append(f"| {r['model']} | {r['mode']} | {r['bytes']:,} | "
                     f"{floats[r['model']] / r['bytes']:.1f}x | {r['accuracy']:.2%} | "
                     f"{cells[0]} | {cells[1]} | {r['profile_summary']} |")
    return "\n".join(lines + ([""] + notes if notes else []))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--profile_runs", type=int, default=500)
    parser.add_argument("--compressed", default=str(ROOT / "export/lenet5_paper/compressed.keras"))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    models = {"baseline": common.trained_lenet5()}
    if Path(args.compressed).is_file():
        models["compressed"] = keras.models.load_model(args.compressed)
    else:
        print(f"no compressed model at {args.compressed}: baseline only", file=sys.stderr)
    test = common.mnist("test", batch_size=500)
    keras_acc = {name: common.compile_classifier(m).evaluate(test, verbose=0)[1]
                 for name, m in models.items()}
    representative = common.mnist("train", batch_size=100, limit=500)
    rows = []
    for name, model in models.items():
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


if __name__ == "__main__":
    main()
