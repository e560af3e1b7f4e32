"""A latency lookup table: a model's LiteRT time as the sum of its layers' times.

Timing whole files makes a search follow the machine's load: a proposal that is 3% faster
in one session is 3% slower in the next, and the path changes. NetAdapt, HALP and nn-Meter
predict latency from a table of the model's own operations instead; so does this module.
Each layer of a (compressed) Keras model is exported alone, with its input shapes, weights
and the export's quantization mode, and timed on the interpreter (many interleaved rounds
after a warm-up), together with a file that does almost nothing: a layer's entry is its
time less that overhead, and a model's prediction is the overhead plus its
layers' entries. The widths a search tries are a grid (stair steps), so entries repeat.
A layer's time is the 10th percentile of its rounds, not the median: other work on the
machine only adds time, and the low percentile moves least with it (in two runs of
`flags/lenet5_auto.flags` on a loaded machine, the 10th-90th percentile of the entries'
ratios was 0.93-1.07 for the 10th percentile, 0.82-1.08 for the median).

Entries are kept on disk (`$TFPRUNE_CACHE_DIR`, else `~/.cache/tfprune`, file
`latency_table.json`) under a key of everything they depend on: the layer's class, config
and shapes, the quantization mode, threads, batch and delegate, and the runtime (LiteRT,
TensorFlow, CPU). A second search, a resumed one, or one for another target reads the same
numbers, so the same flags and seed give the same widths whatever else the machine is doing.

The prediction is approximate: XNNPACK runs a whole file as one delegated graph and a layer
alone as its own, and caches differ. `Costs` times the files of the candidates it checks
and reports the table's error on them.
"""

import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

from tfprune import atomic

FORMAT = "tfprune-latency-table-2"
FILE = "latency_table.json"
# Layers that run nothing at inference: no entry, no file.
_NOTHING = ("InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise",
            "GaussianDropout", "AlphaDropout", "ActivityRegularization")


def cache_dir():
    """Where tfprune keeps what it measured once: `$TFPRUNE_CACHE_DIR` or `~/.cache/tfprune`."""
    return Path(os.environ.get("TFPRUNE_CACHE_DIR") or Path.home() / ".cache" / "tfprune")


class LatencyTable:
    """Predicts a Keras model's LiteRT latency (µs) from per-layer entries timed once.

    Args:
        threads: Integer, interpreter threads, defaults to `1`.
        batch_size: Integer, the batch timed (and fixed in each layer's file), defaults
            to `1`.
        runs: Integer, interleaved rounds timing new entries, defaults to `2000`.
        warmup: Integer, untimed rounds first, defaults to `200`.
        path: The table's JSON file, defaults to `cache_dir() / "latency_table.json"`;
            `False` keeps the entries in memory only.
        log: Function taking a line of progress, or `None`.

    Example:

    >>> from tfprune.search.latency_table import LatencyTable
    >>> table = LatencyTable(runs=50, warmup=5, path=False)
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
    ...                           keras.layers.Flatten(), keras.layers.Dense(10)])
    >>> table.predict(model, "dynamic") > 0
    True
    >>> len(table.entries)  # the overhead, the conv, the flatten and the dense layer
    4
    """

    def __init__(self, threads=1, batch_size=1, runs=2000, warmup=200, path=None, log=None):
        self.threads, self.batch_size = int(threads), int(batch_size)
        self.runs, self.warmup, self.log = int(runs), int(warmup), log
        self.path = None if path is False else Path(path or cache_dir() / FILE)
        self.runtime = _runtime(self.threads, self.batch_size)
        self.entries = _read(self.path).get(self.runtime, {}) if self.path else {}
        self.timed = 0  # entries timed by this table (not read from the file)

    def predict(self, model, quantize="none"):
        """The model's predicted latency in µs: the overhead plus its layers' entries,
        timing the layers not in the table yet (in one interleaved session)."""
        return self.predict_many([model], quantize)[0]

    def predict_many(self, models, quantize="none"):
        """`predict` of each model, the entries missing from all of them timed together."""
        blocks = [_blocks(model, quantize, self.batch_size) for model in models]
        overhead = _overhead(quantize, self.batch_size)
        missing = {key: block for key, block in [overhead, *(b for bs in blocks for b in bs)]
                   if key not in self.entries}
        if missing:
            self._time(missing, overhead)
        base = self.entries[overhead[0]]["us"]
        return [base + sum(self.entries[key]["net_us"] for key, _ in bs) for bs in blocks]

    def kept(self, kind, models, quantize):
        """What `keep` kept of this `kind` for these models (a baseline and a candidate:
        a `"calibration"`, a `"whole"` file's figures), or `None`."""
        return self.entries.get(_models_key(kind, models, quantize, self.batch_size))

    def keep(self, kind, models, quantize, figures):
        """Keeps `figures` (a dict of floats) measured on whole files of these models beside
        the entries: the next search of the same model reads them instead of timing the
        files again, and takes the same decisions."""
        self.entries[_models_key(kind, models, quantize, self.batch_size)] = dict(figures)
        if self.path:
            self._save()

    def _time(self, missing, overhead):
        """Times the missing entries beside the overhead file, in one session: an entry is
        its 10th percentile less the overhead's (never below 0)."""
        from tfprune import bench

        blocks = {overhead[0]: overhead[1], **missing}
        with tempfile.TemporaryDirectory(prefix="tfprune-table-") as folder:
            files = [block.export(Path(folder) / f"{i}.tflite")
                     for i, block in enumerate(blocks.values())]
            if self.log:
                self.log(f"latency table: timing {len(missing)} layer file(s) alone, "
                         f"{self.runs} interleaved rounds")
            timing = bench.compare(*files, threads=self.threads, batch_size=self.batch_size,
                                   runs=self.runs, warmup=self.warmup, delegates=("xnnpack",))
        base = timing.timing(0).p10_us
        for i, (key, block) in enumerate(blocks.items()):
            t = timing.timing(i)
            if key in missing:
                self.entries[key] = {"us": t.p10_us, "net_us": max(t.p10_us - base, 0.0),
                                     "median_us": t.median_us, "p90_us": t.p90_us,
                                     "layer": block.describe, "ran": t.delegate_used}
        self.timed += len(missing)
        if self.path:
            self._save()

    def _save(self):
        """Merges this table's entries into the file (another process may have added some)."""
        data = _read(self.path)
        data.setdefault(self.runtime, {}).update(self.entries)
        self.entries = data[self.runtime]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.path, json.dumps({"format": FORMAT, "tables": data}, indent=0,
                                                sort_keys=True))


class _Block:
    """One layer alone: a Keras model of that layer at its input shapes, with its weights."""

    def __init__(self, layer, shapes, quantize, batch_size):
        self.layer, self.shapes, self.quantize = layer, shapes, quantize
        self.batch_size = batch_size
        self.describe = f"{type(layer).__name__} {' '.join(map(str, shapes))}"

    def model(self):
        import keras

        # One input (a file takes one): a layer of several inputs (a residual `Add`, an SE
        # gate's `Multiply`, a `Concatenate`) gets it at every input of its shape, and
        # constants at the others: the same op and shapes, its time the same.
        first = keras.Input(self.shapes[0][1:], batch_size=self.batch_size)
        rng = np.random.default_rng(0)
        args = [first if shape == self.shapes[0] else
                keras.ops.convert_to_tensor(rng.standard_normal(shape, dtype="float32"))
                for shape in self.shapes]
        clone = type(self.layer).from_config(self.layer.get_config())
        outputs = clone(args[0] if len(args) == 1 else args)
        clone.set_weights(self.layer.get_weights())
        return keras.Model(first, outputs)

    def export(self, path):
        from tfprune import tflite

        model = self.model()
        data = None
        if self.quantize == "int8":  # calibration: any inputs do for timing
            rng = np.random.default_rng(0)
            data = [rng.standard_normal(self.shapes[0], dtype="float32") for _ in range(4)]
        return tflite.to_tflite(model, path, quantize=self.quantize, batch_size=self.batch_size,
                                representative_data=data, int8_io=self.quantize == "int8")


def _blocks(model, quantize, batch_size):
    """`(key, _Block)` for each layer of `model` that runs something."""
    result = []
    for layer in model.layers:
        if type(layer).__name__ in _NOTHING:
            continue
        inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        shapes = [tuple(int(d or batch_size) for d in (batch_size, *t.shape[1:]))
                  for t in inputs]
        config = {k: v for k, v in layer.get_config().items() if k not in ("name", "trainable")}
        key = _digest([type(layer).__name__, config, shapes, quantize,
                       [list(w.shape) for w in layer.get_weights()]])
        result.append((key, _Block(layer, shapes, quantize, batch_size)))
    return result


def _models_key(kind, models, quantize, batch_size):
    """What a figure of whole files depends on: every layer of the models (the first in
    float, the others in `quantize`), as their entries' keys."""
    keys = [[key for key, _ in _blocks(model, quantize if i else "none", batch_size)]
            for i, model in enumerate(models)]
    return f"{kind}:" + _digest([keys, quantize])


def _overhead(quantize, batch_size):
    """The file that does almost nothing (one ReLU on 8 numbers): invoking a file costs."""
    import keras

    layer = keras.layers.ReLU(name="overhead")
    keras.Sequential([keras.Input((8,)), layer])
    return f"overhead:{quantize}:{batch_size}", _Block(layer, [(batch_size, 8)], quantize,
                                                       batch_size)


def _runtime(threads, batch_size):
    """What every entry depends on beyond its layer: runtime versions, CPU, settings."""
    import tensorflow as tf

    from tfprune.compat import litert_version

    return (f"litert {litert_version()}, tensorflow {tf.__version__}, {_cpu()}, "
            f"threads={threads}, batch={batch_size}, delegate=xnnpack")


def _cpu():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read(path):
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a damaged cache is measured again, not trusted
    return data.get("tables", {}) if data.get("format") == FORMAT else {}


def _digest(value):
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]
