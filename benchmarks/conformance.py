"""The conformance table: keras.applications image classifiers through the whole pipeline.

Each model is built with random weights (random BatchNorm statistics too, so that no
channel is trivially zero), 10 classes, no softmax, at a small input, and then:

1. **merge**: `tfprune.fuse`, its outputs checked against the model's;
2. **prune + shrink**: half of every channel group zeroed (`prune(..., "filter")`, the masks
   set once as `UpdatePruningStep` would), stripped, shrunk (`shrink` checks itself), then
   merged; its outputs checked against the stripped model's;
3. **export**: the merged baseline and the merged, shrunk model as float32 `.tflite` files,
   each run on LiteRT and checked against its Keras model;
4. **speed**: both files timed together on LiteRT + XNNPACK (`bench.compare`, 1 thread,
   batch 1): the speedup at half of every channel group.

A model with nested models (ConvNeXt) is flattened first (`tfprune.graph.flatten`). A model
that fails a step is a row saying which step and why. Differences are relative:
the largest absolute difference over the largest absolute reference output.

    python benchmarks/conformance.py                     # every model, the README table
    python benchmarks/conformance.py --models=ResNet50,MobileNetV3Small --runs=100 --update

Writes benchmarks/out/conformance.json and prints the Markdown table.
"""

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfprune  # noqa: E402
from tfprune import atomic, bench, export  # noqa: E402
from tfprune.graph import ChannelGroups, LayerGraph, flatten  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"

# name -> (family, input side, constructor arguments); the smallest input each takes.
# Keras 3's keras.applications has no RegNet (tf.keras had), so the table has none.
MODELS = {
    "MobileNet": ("MobileNet", 32, {"alpha": 0.25}),
    "MobileNetV2": ("MobileNet", 32, {"alpha": 0.35}),
    "MobileNetV3Small": ("MobileNet", 32, {"alpha": 0.75}),
    "MobileNetV3Large": ("MobileNet", 32, {"alpha": 0.75}),
    "EfficientNetB0": ("EfficientNet", 32, {}),
    "EfficientNetV2B0": ("EfficientNet", 32, {}),
    "ResNet50": ("ResNet", 32, {}),
    "ResNet50V2": ("ResNet", 32, {}),
    "DenseNet121": ("DenseNet", 32, {}),
    "NASNetMobile": ("NASNet", 32, {}),
    "ConvNeXtTiny": ("ConvNeXt", 32, {}),
    "Xception": ("Xception", 71, {}),
    "InceptionV3": ("Inception", 75, {}),
    "InceptionResNetV2": ("Inception", 75, {}),
    "VGG16": ("VGG", 32, {}),
}

TOLERANCE = 1e-4  # relative, float32 through several hundred layers


def build(name, seed=0):
    """The keras.applications model `name`, random weights and BatchNorm statistics."""
    _, side, kwargs = MODELS[name]
    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, name)(
        input_shape=(side, side, 3), weights=None, classes=10, classifier_activation=None,
        **kwargs)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([_bn_value(w, rng) for w in layer.weights])
    return model


def _bn_value(variable, rng):
    name = variable.path.rsplit("/", 1)[-1]
    if name in ("gamma", "moving_variance"):
        return rng.uniform(0.5, 1.5, variable.shape)
    return rng.normal(0, 0.1, variable.shape)


def rel_err(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def tflite_outputs(path, x):
    """What LiteRT computes from `x`, one example at a time (the file's batch is 1)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outs = []
    for example in x:
        interpreter.set_tensor(inp["index"], example[None])
        interpreter.invoke()
        outs.append(interpreter.get_tensor(out["index"])[0])
    return np.stack(outs)


def nodes(model):
    return len(LayerGraph.from_model(model).layers())


def check(name, export_files=True, runs=200, folder=None):
    """One row of the table: a dict of figures, or of figures up to the step that failed.

    Args:
        name: A key of `MODELS`.
        export_files: Boolean, defaults to `True`: export, verify and time the files.
        runs: Integer, timed rounds (0: no timing), defaults to `200`.
        folder: Where the `.tflite` files go, defaults to a temporary folder.
    """
    row = {"model": name, "family": MODELS[name][0]}
    step = "build"
    try:
        started = time.time()
        model = build(name)
        side = MODELS[name][1]
        x = np.random.default_rng(1).uniform(0, 255, (2, side, side, 3)).astype("float32")
        expected = np.asarray(model(x))
        if any(isinstance(layer, keras.Model) for layer in model.layers):
            step = "flatten"
            model = flatten(model)  # ConvNeXt's stem and head are models of their own
            row["flattened"] = True
        step = "merge"
        fused = tfprune.fuse(model)
        row.update(nodes=nodes(model), merged_nodes=nodes(fused),
                   merge_err=rel_err(fused(x), expected))
        step = "prune + shrink"
        stripped, small = _prune_shrink(model)
        reference = np.asarray(stripped(x))
        small = tfprune.fuse(small)
        row.update(params=model.count_params(), shrunk_params=small.count_params(),
                   macs=bench.count(model).macs, shrunk_macs=bench.count(small).macs,
                   shrink_err=rel_err(small(x), reference),
                   barriers=_barriers(stripped))
        if export_files:
            step = "export"
            folder = Path(folder or tempfile.mkdtemp(prefix="conformance-"))
            paths = [folder / f"{name}_{kind}.tflite" for kind in ("base", "small")]
            export.to_tflite(fused, paths[0], batch_size=1)
            export.to_tflite(small, paths[1], batch_size=1)
            row.update(tflite_err=max(rel_err(tflite_outputs(paths[0], x), expected),
                                      rel_err(tflite_outputs(paths[1], x), reference)))
            if runs:
                step = "benchmark"
                timing = bench.compare(*paths, runs=runs, warmup=max(runs // 10, 5),
                                       delegates=("xnnpack",))
                row.update(base_us=timing.timing(0).median_us,
                           small_us=timing.timing(1).median_us,
                           speedup=timing.timing(1).speedup)
        row["seconds"] = round(time.time() - started, 1)
    except Exception as error:  # a row that says why, not a crash of the whole table
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        row["failed"] = f"{step}: {type(error).__name__}: {first}"
        row["traceback"] = traceback.format_exc(limit=3)
    return row


def _prune_shrink(model):
    """The model with half of every channel group zeroed and stripped, and it shrunk."""
    pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, 0), granularity="filter")
    groups = tfprune.pruning.groups.FilterGroups(pruned)
    groups.update({wrapper: 0.5 for wrapper in groups.wrappers})
    stripped = tfprune.strip(pruned)
    return stripped, tfprune.shrink(stripped)


def _barriers(model):
    """How many nodes stop the channel analysis (their channels are kept), and why, by kind."""
    found = ChannelGroups(LayerGraph.from_model(model)).barriers
    kinds = {}
    for reason in found.values():
        kinds.setdefault(_barrier_kind(reason), reason)
    return {"count": len(found), "kinds": sorted(kinds), "examples": list(kinds.values())}


def _barrier_kind(reason):
    """'LayerNormalization', 'grouped Conv2D', 'softmax', ... from a barrier's reason."""
    for words, kind in (("grouped convolution", "grouped conv"), ("softmax", "softmax"),
                        ("does not know", None), ("mixes channels", None)):
        if words in reason:
            return kind or reason.split(" ", 1)[0]
    return reason.split(" ", 1)[0]


def _ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def table(rows):
    """The Markdown table of `rows`."""
    head = ["model", "input", "merge: nodes, max rel. diff", "prune 50% + shrink: params, MACs",
            "shrink max rel. diff", ".tflite max rel. diff", "LiteRT XNNPACK speedup",
            "channels kept at"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        side = MODELS[row["model"]][1]
        cells = [row["model"] + (" (flattened)" if row.get("flattened") else ""),
                 f"{side}x{side}"]
        if "merge_err" in row:
            cells.append(f"{row['nodes']} -> {row['merged_nodes']}, {row['merge_err']:.1e}")
        if "shrink_err" in row:
            cells.append(f"{row['params']:,} -> {row['shrunk_params']:,} "
                         f"({_ratio(row['params'], row['shrunk_params'])}); MACs "
                         f"{_ratio(row['macs'], row['shrunk_macs'])} fewer")
            cells.append(f"{row['shrink_err']:.1e}")
        if "tflite_err" in row:
            cells.append(f"{row['tflite_err']:.1e}")
        if "speedup" in row:
            cells.append(f"{row['speedup']:.2f}x ({row['base_us']:.0f} -> "
                         f"{row['small_us']:.0f} µs)")
        if "failed" in row:
            cells.append(f"**fails at {row['failed']}**")
        elif "barriers" in row:
            cells += [""] * (len(head) - 1 - len(cells))
            kinds = row["barriers"]["kinds"]
            cells.append(f"{row['barriers']['count']}: {', '.join(kinds)}" if kinds else "-")
        cells += [""] * (len(head) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help="Comma-separated keras.applications names (default: all).")
    parser.add_argument("--runs", type=int, default=200, help="Timed rounds per model.")
    parser.add_argument("--out", default=str(OUT / "conformance.json"))
    parser.add_argument("--update", action="store_true",
                        help="Keep the other models' rows already in --out.")
    args = parser.parse_args(argv)
    names = args.models.split(",")
    for name in names:
        if name not in MODELS:
            parser.error(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    out = Path(args.out)
    rows = {r["model"]: r for r in json.loads(out.read_text())} if (
        args.update and out.exists()) else {}
    for name in names:
        rows[name] = check(name, runs=args.runs)
        print(json.dumps({k: v for k, v in rows[name].items() if k != "traceback"}),
              file=sys.stderr, flush=True)
    rows = [rows[name] for name in MODELS if name in rows]
    with atomic.atomic_path(out, make_parents=True) as tmp:
        Path(tmp).write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0 if not any("failed" in row for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
