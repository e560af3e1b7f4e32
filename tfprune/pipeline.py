"""The stages end to end: baseline, prune, merge, retrain, shrink, export, verify, benchmark.

`run(config)` takes a `PipelineConfig` (what the command line builds from its flags; tests
build one directly), checks everything it can before any long work, then runs the stages
in order. Each stage writes its outputs atomically into the run folder and then records
itself in `stages.json` with a hash of the settings that shaped it (chained with the hash
of the stage before) and the SHA-256 of each output. With `resume=True`, a stage whose
record matches and whose outputs are intact is skipped, so an interrupted run loses
nothing it had finished.
"""

import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from tfprune import atomic
from tfprune.errors import TfpruneError
from tfprune.export import QUANTIZE_MODES

STAGES = ("baseline", "prune", "merge", "retrain", "shrink", "export", "verify", "benchmark",
          "report")
GRANULARITIES = ("weight", "block", "n:m", "filter")
_PER_LAYER = (*GRANULARITIES, "none")  # per layer only: "none" leaves the layer unpruned
MERGES = ("none", "exact", "approximate")
SCHEDULES = ("polynomial", "constant")
POOL_KERNELS = ("grown", "original")
POOL_ACTIVATIONS = ("relu", "none")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
LR_SCHEDULES = ("constant", "cosine")
RECORD = "stages.json"

# The settings that shape each stage's output; a stage's hash also covers the stage before.
STAGE_KEYS = {
    "baseline": ("model", "dataset", "train_limit", "baseline_epochs", "baseline_batch_size",
                 "optimizer", "lr_schedule", "baseline_learning_rate", "seed"),
    "prune": ("prune_epochs", "prune_batch_size", "prune_learning_rate", "schedule",
              "initial_sparsity", "final_sparsity", "begin_step", "end_step", "power",
              "frequency", "granularity", "layer_sparsity"),
    "merge": ("merge", "pool_kernel", "pool_activation"),
    "retrain": ("retrain_epochs", "retrain_batch_size", "retrain_learning_rate"),
    "shrink": ("shrink_threshold",),
    "export": ("quantize", "sparse", "representative_size", "export_batch_size", "int8_io"),
    "verify": ("test_limit",),
    "benchmark": ("bench_threads", "bench_runs", "bench_warmup", "bench_batch_size"),
    "report": (),
}


@dataclasses.dataclass
class PipelineConfig:
    """Everything a run needs; the command-line flags map one to one onto these fields.

    Attributes:
        model: String, a zoo name (`"lenet5"`, `"lenet5_classic"`) or a `.keras` path.
        dataset: String, `"mnist"`.
        data_dir: Folder of the dataset files, or `None` (see `tfprune.data`).
        train_limit: Integer or `None`, train on the first `train_limit` images only.
        test_limit: Integer or `None`, evaluate on the first `test_limit` images only.
        baseline_epochs: Integer or `None`: epochs to train the baseline; `None` means 8
            for a zoo model and 0 (use as is) for a loaded file.
        prune_epochs, retrain_epochs: Integers, epochs of the prune and retrain stages.
        baseline_batch_size, prune_batch_size, retrain_batch_size: Integers.
        optimizer: String, one of `OPTIMIZERS`.
        lr_schedule: String, `"cosine"` (each stage's rate decays to 0 over its epochs) or
            `"constant"`.
        baseline_learning_rate, prune_learning_rate, retrain_learning_rate: Floats.
        schedule: String, `"polynomial"` or `"constant"`.
        initial_sparsity, final_sparsity: Floats in [0, 1); the constant schedule uses
            `final_sparsity`.
        begin_step: Integer, the step pruning starts.
        end_step: Integer, the step the polynomial schedule reaches `final_sparsity`; `-1`
            means three quarters of the prune stage's steps.
        power: Float, the polynomial schedule's exponent.
        frequency: Integer, steps between mask updates.
        granularity: String: one granularity for every layer (`"weight"`, `"block"`,
            `"n:m"`, `"filter"`) or `"Conv2D:filter,Dense:weight,ip2:none"` per layer class
            or name (`none`: leave unpruned). With `"filter"`, `tfprune.prune` prunes the
            output layer by weight, so no class is lost.
        layer_sparsity: String, per-layer final sparsities that replace `final_sparsity`
            for the named layers, e.g. `"conv1:0.6,conv2:0.6,ip1:0.8"`; defaults to `""`.
        merge: String, which merges: `"none"`, `"exact"` or `"approximate"`.
        pool_kernel: String, how an approximate conv -> pooling merge starts: `"grown"`
            (kernel k+p-1, from the exact average-pool merge) or `"original"` (kernel k).
        pool_activation: String, the activation a merged max pool leaves on a linear conv
            (`"relu"`; `"none"` leaves the conv linear).
        shrink_threshold: Float, filters whose largest magnitude is at most this go.
        quantize: Tuple of strings from `QUANTIZE_MODES`; the first makes
            `compressed.tflite`, others `compressed_<mode>.tflite`.
        sparse: Boolean, ask the converter for its sparse encoding.
        representative_size: Integer, training images used to calibrate int8.
        export_batch_size: Integer or `None`: fix the `.tflite` files' batch dimension
            (1 drops the shape ops a dynamic Flatten needs); `None` keeps it dynamic.
        int8_io: Boolean, with int8: integer input and output too (no (de)quantize ops).
        bench_threads, bench_runs, bench_warmup, bench_batch_size: Integers for the
            latency A/B of `baseline.tflite` against `compressed.tflite`.
        export_dir: Folder the run writes (created if missing).
        seed: Integer, seeds Python, NumPy and the backend.
        tensorboard_dir: Folder or `None`: write TensorBoard pruning summaries (per-layer sparsity
            and its target) there during the prune stage.
        resume: Boolean, skip finished stages whose outputs exist and match.
        unsafe_load: Boolean, load `.keras` files with `safe_mode=False` (runs their
            lambdas: only for files you trust).
        stop_after: String or `None`, stop after this stage (for tests and debugging).
        verbose: Integer, Keras `fit` verbosity (1 = progress bars).
        plots: Boolean, draw the PNG plots.
    """

    model: str = "lenet5"
    dataset: str = "mnist"
    data_dir: str = None
    train_limit: int = None
    test_limit: int = None
    baseline_epochs: int = None
    prune_epochs: int = 4
    retrain_epochs: int = 2
    baseline_batch_size: int = 128
    prune_batch_size: int = 128
    retrain_batch_size: int = 128
    optimizer: str = "adam"
    lr_schedule: str = "cosine"
    baseline_learning_rate: float = 1e-3
    prune_learning_rate: float = 5e-4
    retrain_learning_rate: float = 2e-4
    schedule: str = "polynomial"
    initial_sparsity: float = 0.0
    final_sparsity: float = 0.8
    begin_step: int = 0
    end_step: int = -1
    power: float = 3.0
    frequency: int = 100
    granularity: str = "filter"
    layer_sparsity: str = ""
    merge: str = "exact"
    pool_kernel: str = "grown"
    pool_activation: str = "relu"
    shrink_threshold: float = 0.0
    quantize: tuple = ("int8",)
    sparse: bool = True
    representative_size: int = 500
    export_batch_size: int = None
    int8_io: bool = False
    bench_threads: int = 1
    bench_runs: int = 300
    bench_warmup: int = 30
    bench_batch_size: int = 1
    export_dir: str = "export/run"
    seed: int = 0
    tensorboard_dir: str = None
    resume: bool = False
    unsafe_load: bool = False
    stop_after: str = None
    verbose: int = 1
    plots: bool = True

    def __post_init__(self):
        if isinstance(self.quantize, str):
            self.quantize = tuple(m.strip() for m in self.quantize.split(",") if m.strip())
        self.quantize = tuple(self.quantize)

    def validate(self):
        """Raises `TfpruneError` on the first setting that cannot work (cheap checks only)."""
        _one_of("dataset", self.dataset, ("mnist",))
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        _one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _one_of("schedule", self.schedule, SCHEDULES)
        _one_of("merge", self.merge, MERGES)
        _one_of("pool_kernel", self.pool_kernel, POOL_KERNELS)
        _one_of("pool_activation", self.pool_activation, POOL_ACTIVATIONS)
        if not self.quantize:
            raise TfpruneError("Expected at least one export mode. Received: quantize=()")
        for mode in self.quantize:
            _one_of("quantize", mode, QUANTIZE_MODES)
        if self.stop_after is not None:
            _one_of("stop_after", self.stop_after, STAGES)
        parse_granularity(self.granularity)
        parse_layer_sparsity(self.layer_sparsity)
        if self.export_batch_size is not None:
            _at_least("export_batch_size", self.export_batch_size, 1)
            if self.bench_batch_size != self.export_batch_size:
                raise TfpruneError(
                    "The benchmark batch must be the exported files' fixed batch. Received: "
                    f"bench_batch_size={self.bench_batch_size}, "
                    f"export_batch_size={self.export_batch_size}")
        for name in ("initial_sparsity", "final_sparsity"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise TfpruneError(f"Expected {name} in [0, 1). Received: {name}={value}")
        if self.schedule == "polynomial" and self.initial_sparsity > self.final_sparsity:
            raise TfpruneError(
                "Expected initial_sparsity <= final_sparsity. Received: "
                f"initial_sparsity={self.initial_sparsity}, final_sparsity={self.final_sparsity}")
        for name in ("prune_epochs", "retrain_epochs", "begin_step", "representative_size",
                     "bench_warmup"):
            _at_least(name, getattr(self, name), 0)
        if self.baseline_epochs is not None:
            _at_least("baseline_epochs", self.baseline_epochs, 0)
        for name in ("baseline_batch_size", "prune_batch_size", "retrain_batch_size",
                     "frequency", "bench_threads", "bench_runs", "bench_batch_size"):
            _at_least(name, getattr(self, name), 1)
        for name in ("train_limit", "test_limit"):
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 1)
        for name in ("baseline_learning_rate", "prune_learning_rate", "retrain_learning_rate"):
            if not getattr(self, name) > 0:
                raise TfpruneError(f"Expected {name} > 0. Received: {name}={getattr(self, name)}")
        if self.shrink_threshold < 0:
            raise TfpruneError("Expected shrink_threshold >= 0. Received: "
                               f"shrink_threshold={self.shrink_threshold}")
        if self.end_step != -1 and self.end_step <= self.begin_step:
            raise TfpruneError(
                "Expected end_step > begin_step (or -1 for automatic). Received: "
                f"begin_step={self.begin_step}, end_step={self.end_step}")
        return self


def _one_of(name, value, allowed):
    if value not in allowed:
        raise TfpruneError(f"Unknown {name}. Expected one of {list(allowed)}. "
                           f"Received: {name}={value!r}")


def _at_least(name, value, low):
    if not isinstance(value, (int, np.integer)) or value < low:
        raise TfpruneError(f"Expected {name} to be an integer >= {low}. Received: {name}={value!r}")


def parse_granularity(spec):
    """Parses a granularity setting.

    Args:
        spec: String: one granularity (`"filter"`), or comma-separated `key:granularity`
            pairs where the key is a layer class or layer name
            (`"Conv2D:filter,Dense:n:m,ip2:none"`), or a dict already.

    Returns:
        The string, or a dict `{layer class or name: granularity or None}` (`None`: do
        not prune that layer), as `tfprune.prune` takes it.

    Raises:
        TfpruneError: an unknown granularity or a malformed pair.
    """
    if isinstance(spec, dict):
        for value in spec.values():
            _one_of("granularity", "none" if value is None else value, _PER_LAYER)
        return dict(spec)
    spec = (spec or "").strip()
    if spec in GRANULARITIES:
        return spec
    result = {}
    for part in spec.split(","):
        key, sep, value = part.strip().partition(":")
        if not sep or not key or not value:
            raise TfpruneError(
                "Expected a granularity (one of "
                f"{list(GRANULARITIES)}) or pairs like 'Conv2D:filter,Dense:weight'. "
                f"Received: granularity={spec!r}")
        _one_of("granularity", value.strip(), _PER_LAYER)
        result[key.strip()] = None if value.strip() == "none" else value.strip()
    return result


def parse_layer_sparsity(spec):
    """Parses `"conv1:0.6,ip1:0.8"` into `{"conv1": 0.6, "ip1": 0.8}` (empty: `{}`).

    Raises:
        TfpruneError: a malformed pair or a sparsity outside [0, 1).
    """
    result = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        name, _, value = part.strip().rpartition(":")
        try:
            sparsity = float(value)
        except ValueError:
            sparsity = None
        if not name or sparsity is None or not 0.0 <= sparsity < 1.0:
            raise TfpruneError("Expected layer_sparsity like 'conv1:0.6,ip1:0.8' with "
                               f"sparsities in [0, 1). Received: layer_sparsity={spec!r}")
        result[name] = sparsity
    return result


# ----------------------------------------------------------------------------- the run


def run(config):
    """Runs the pipeline and returns the report (the dict written to `report.json`).

    Args:
        config: A `PipelineConfig`.

    Returns:
        The report (the dict written to `report.json`, see `tfprune.report.build`), or
        `None` when `config.stop_after` stopped the run before the report.

    Raises:
        TfpruneError: bad settings, model, data or export folder — raised before any
            training starts.
    """
    return _Run(config).execute()


class _Run:
    """One run: the checked inputs, the run folder, and the stage records."""

    def __init__(self, config):
        self.config = config.validate()
        self.folder = Path(config.export_dir)
        atomic.check_writable(self.folder)
        if config.tensorboard_dir:
            atomic.check_writable(config.tensorboard_dir)
        import keras

        keras.utils.set_random_seed(config.seed)
        self.baseline_model = _load_model(config)  # fails fast on a bad file
        self.model_sha = _file_sha(config.model) if _is_path(config.model) else None
        self.train, self.test = _load_data(config)
        _check_fits(self.baseline_model, self.train)
        unknown = set(parse_layer_sparsity(config.layer_sparsity)) - {
            layer.name for layer in self.baseline_model.layers}
        if unknown:
            raise TfpruneError(f"layer_sparsity names layers the model does not have: "
                               f"{sorted(unknown)}. Received: layer_sparsity="
                               f"{config.layer_sparsity!r}")
        self.records = _read_records(self.folder) if config.resume else {}
        self.results = {}
        self.models = {}
        self.report = None

    def execute(self):
        previous = ""
        for stage in STAGES:
            digest = self._hash(stage, previous)
            previous = digest
            record = self.records.get(stage)
            if self.config.resume and self._intact(record, digest) and stage != "report":
                self.results[stage] = record["result"]
                _log(stage, record["seconds"], "skipped (resumed): " + record["figure"])
            else:
                start = time.perf_counter()
                outputs, result, figure = getattr(self, "_" + stage)()
                seconds = time.perf_counter() - start
                self.results[stage] = result
                self.records[stage] = {
                    "hash": digest, "seconds": round(seconds, 2), "figure": figure,
                    "outputs": {name: _file_sha(self.folder / name) for name in outputs},
                    "result": result,
                }
                atomic.write_text(self.folder / RECORD,
                                  json.dumps(self.records, indent=1, default=_jsonable))
                _log(stage, seconds, figure)
            if stage == self.config.stop_after:
                break
        return self.report

    def _hash(self, stage, previous):
        settings = {key: getattr(self.config, key) for key in STAGE_KEYS[stage]}
        if stage == "baseline":
            settings["model_sha256"] = self.model_sha
            settings["baseline_epochs"] = _baseline_epochs(self.config)
        text = json.dumps([previous, stage, settings], sort_keys=True, default=_jsonable)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _intact(self, record, digest):
        if not record or record.get("hash") != digest:
            return False
        for name, sha in record.get("outputs", {}).items():
            path = self.folder / name
            if not path.is_file() or _file_sha(path) != sha:
                return False
        return True

    # ---- models held between stages (loaded from the run folder when a stage was skipped)

    def _model(self, name):
        if name not in self.models:
            import keras

            self.models[name] = keras.models.load_model(self.folder / f"{name}.keras")
        return self.models[name]

    def _save(self, name, model):
        with atomic.atomic_path(self.folder / f"{name}.keras") as tmp:
            model.save(tmp)
        self.models[name] = model
        return f"{name}.keras"

    def _evaluate(self, model):
        x, y = self.test  # called eagerly: `predict` would retrace for every new model
        correct = sum(int(np.sum(np.argmax(np.asarray(model(x[i:i + 1000], training=False)),
                                           axis=-1) == y[i:i + 1000]))
                      for i in range(0, len(y), 1000))
        return correct / len(y)

    def _describe(self, model):
        """Parameter, non-zero and MAC counts and Keras test accuracy of a stage's model."""
        return {"keras_accuracy": self._evaluate(model), **_counts(model),
                "layers": _layer_table(model)}

    # ---- the stages: each returns (output file names, result dict, key figure)

    def _baseline(self):
        config = self.config
        model = self.baseline_model
        epochs = _baseline_epochs(config)
        if epochs:
            _compile(model, config, config.baseline_learning_rate,
                     _steps(self.train, config.baseline_batch_size, epochs))
            _fit(model, self.train, epochs, config.baseline_batch_size, config)
        outputs = [self._save("baseline", model)]
        result = self._describe(model)
        result["epochs"] = epochs
        return outputs, result, (f"test accuracy {result['keras_accuracy']:.2%}, "
                                 f"{result['params']:,} params")

    def _prune(self):
        import tfprune

        config = self.config
        model = self._model("baseline")
        steps = _steps(self.train, config.prune_batch_size, config.prune_epochs)
        end_step = config.end_step
        if end_step == -1:  # 3/4 of the steps, on a mask update so the final sparsity is hit
            updates = max(1, round((0.75 * steps - config.begin_step) / config.frequency))
            end_step = config.begin_step + updates * config.frequency

        def schedule(final):
            if config.schedule == "constant":
                return tfprune.ConstantSparsity(final, begin_step=config.begin_step,
                                                frequency=config.frequency)
            return tfprune.PolynomialDecay(
                initial_sparsity=min(config.initial_sparsity, final), final_sparsity=final,
                begin_step=config.begin_step, end_step=end_step, power=config.power,
                frequency=config.frequency)

        granularity = parse_granularity(config.granularity)
        wrapped = tfprune.prune(model, schedule(config.final_sparsity), granularity=granularity)
        overrides = parse_layer_sparsity(config.layer_sparsity)
        for layer in wrapped.layers:  # per-layer targets: the wrapper reads its own schedule
            inner = getattr(layer, "layer", None)
            if isinstance(layer, tfprune.PruneLowMagnitude) and inner.name in overrides:
                layer.schedule = schedule(overrides[inner.name])
        _compile(wrapped, config, config.prune_learning_rate, steps)
        callbacks = [tfprune.UpdatePruningStep()]
        if config.tensorboard_dir:
            callbacks.append(tfprune.PruningSummaries(config.tensorboard_dir))
        if config.prune_epochs:
            _fit(wrapped, self.train, config.prune_epochs, config.prune_batch_size, config,
                 callbacks=callbacks)
        pruned = tfprune.strip(wrapped)
        outputs = [self._save("pruned", pruned)]
        result = self._describe(pruned)
        result.update(end_step=end_step, steps=steps, granularity=granularity)
        return outputs, result, (f"test accuracy {result['keras_accuracy']:.2%}, "
                                 f"{result['nonzeros']:,}/{result['params']:,} non-zero")

    def _merge(self):
        model = self._model("pruned")
        if self.config.merge == "none":
            merged = _clone(model)
        else:
            import tfprune

            merged = tfprune.fuse(model, approximate=self.config.merge == "approximate",
                                  pool_kernel=self.config.pool_kernel,
                                  pool_activation=None if self.config.pool_activation == "none"
                                  else self.config.pool_activation)
        outputs = [self._save("merged", merged)]
        result = self._describe(merged)
        result["layer_count"] = len(merged.layers)
        return outputs, result, (f"{len(model.layers)} -> {len(merged.layers)} layers, "
                                 f"test accuracy {result['keras_accuracy']:.2%}")

    def _retrain(self):
        config = self.config
        model = _clone(self._model("merged"))
        if config.retrain_epochs:
            with hold_zeros(model):
                _compile(model, config, config.retrain_learning_rate,
                         _steps(self.train, config.retrain_batch_size, config.retrain_epochs))
                _fit(model, self.train, config.retrain_epochs, config.retrain_batch_size,
                     config)
        outputs = [self._save("retrained", model)]
        result = self._describe(model)
        return outputs, result, (f"test accuracy {result['keras_accuracy']:.2%}, "
                                 f"{result['nonzeros']:,} non-zero")

    def _shrink(self):
        import tfprune

        model = self._model("retrained")
        shrunk = tfprune.shrink(model, threshold=self.config.shrink_threshold)
        outputs = [self._save("compressed", shrunk)]
        result = self._describe(shrunk)
        return outputs, result, (f"{result['params']:,} params, {result['macs']:,} MACs, "
                                 f"test accuracy {result['keras_accuracy']:.2%}")

    def _export(self):
        from tfprune import bench, export

        config = self.config
        rep = self.train[0][:config.representative_size]
        files = {"baseline.tflite": ("baseline", "none", False)}
        for i, mode in enumerate(config.quantize):
            name = "compressed.tflite" if i == 0 else f"compressed_{mode}.tflite"
            files[name] = ("compressed", mode, config.sparse)
        result = {}
        for name, (model_name, mode, sparse) in files.items():
            export.to_tflite(self._model(model_name), self.folder / name, quantize=mode,
                             sparse=sparse, representative_data=rep,
                             int8_io=config.int8_io and mode == "int8",
                             batch_size=config.export_batch_size)
            raw, gz = bench.file_sizes(self.folder / name)
            result[name] = {"model": model_name, "quantize": mode, "sparse": sparse,
                            "bytes": raw, "gzip_bytes": gz}
        base, comp = result["baseline.tflite"], result["compressed.tflite"]
        return list(files), result, (f"{base['bytes']:,} -> {comp['bytes']:,} bytes "
                                     f"({base['bytes'] / comp['bytes']:.1f}x smaller)")

    def _verify(self):
        from tfprune import export

        test = self._test_dataset()
        result = {name: float(export.evaluate(self.folder / name, test))
                  for name in self.records["export"]["outputs"]}
        base, comp = result["baseline.tflite"], result["compressed.tflite"]
        return [], result, (f".tflite test accuracy {base:.2%} -> {comp:.2%} "
                            f"({100 * (comp - base):+.2f} pp)")

    def _benchmark(self):
        from tfprune import bench

        config = self.config
        comparison = bench.compare(
            str(self.folder / "baseline.tflite"), str(self.folder / "compressed.tflite"),
            threads=config.bench_threads, batch_size=config.bench_batch_size,
            runs=config.bench_runs, warmup=config.bench_warmup, delegates=("xnnpack",))
        base, comp = comparison.timing(0), comparison.timing(1)
        result = _jsonable(comparison.to_dict())
        # The per-round ratio's median: slow spells of a shared machine cancel out.
        result.update(baseline_median_us=1000 * base.median_ms,
                      compressed_median_us=1000 * comp.median_ms,
                      speedup=1.0 / comp.ratio_median,
                      delegates_used=[base.delegate_used, comp.delegate_used],
                      cpu_count=os.cpu_count(), load_average=list(os.getloadavg()))
        return [], result, (f"latency {1000 * base.median_ms:.1f} -> "
                            f"{1000 * comp.median_ms:.1f} us ({result['speedup']:.1f}x faster, "
                            f"{config.bench_threads} thread(s), {comp.delegate_used})")

    def _report(self):
        from tfprune import report

        data = self.report = report.build(self.config, self.results, self.records)
        outputs = report.write(self.folder, data, plots=self.config.plots)
        summary = data["summary"]
        return outputs, {"written": outputs}, (
            f"{summary['size_ratio']:.1f}x smaller, {summary['speedup']:.1f}x faster, "
            f"accuracy {100 * summary['accuracy_delta']:+.2f} pp -> "
            f"{self.folder / 'report.md'}")

    def _test_dataset(self):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices(self.test).batch(256)


# ----------------------------------------------------------------------------- helpers


def _log(stage, seconds, figure):
    print(f"[tfprune] {stage:<9} {seconds:7.1f}s  {figure}", flush=True)


def _is_path(model):
    return model.endswith(".keras") or "/" in model or model.endswith(".h5")


def _baseline_epochs(config):
    """The epochs the baseline trains: as asked, or 8 for a zoo model and 0 for a loaded one."""
    if config.baseline_epochs is not None:
        return config.baseline_epochs
    return 0 if _is_path(config.model) else 8


def _file_sha(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_model(config):
    """The zoo model (built) or the `.keras` file (loaded), or a one-line `TfpruneError`."""
    import keras

    from tfprune import models

    if not _is_path(config.model):
        return models.get(config.model)
    path = Path(config.model)
    if path.suffix != ".keras":
        raise TfpruneError("Expected a .keras file (Keras 3 format; re-save legacy .h5 models "
                           f"with model.save('name.keras')). Received: model={config.model!r}")
    if not path.is_file():
        raise TfpruneError(
            f"Model file not found: check the path. Received: model={config.model!r}")
    try:
        model = keras.models.load_model(path, safe_mode=not config.unsafe_load, compile=False)
    except Exception as e:  # zip, JSON and deserialisation errors all mean "not a model"
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise TfpruneError(f"Cannot load {config.model!r} as a Keras model ({first}): pass a "
                           "file written by model.save('name.keras') (add --unsafe_load only "
                           "for a trusted file with Lambda layers).") from e
    if not isinstance(model, keras.Model):
        raise TfpruneError(f"Expected a Keras model file. Received: model={config.model!r}")
    return model


def _load_data(config):
    from tfprune import data

    if config.dataset != "mnist":
        raise TfpruneError(f"Unknown dataset. Received: dataset={config.dataset!r}")
    x, y = data.mnist_arrays("train", config.data_dir)
    xt, yt = data.mnist_arrays("test", config.data_dir)
    return (x[:config.train_limit], y[:config.train_limit]), \
        (xt[:config.test_limit], yt[:config.test_limit])


def _check_fits(model, train):
    """The dataset's images and classes must match the model's input and output."""
    x, y = train
    want = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    got = tuple(x.shape[1:])
    if want is None or len(want) != len(got) or any(
            w is not None and w != g for w, g in zip(want, got, strict=True)):
        raise TfpruneError(
            f"The dataset's images do not fit the model's input: the model expects "
            f"{model.input_shape}, the dataset gives {(None, *got)}. Received: "
            f"model input={model.input_shape}")
    classes = int(np.max(y)) + 1
    units = model.output_shape[-1]
    if units != classes:
        raise TfpruneError(f"The model has {units} outputs but the dataset has {classes} "
                           f"classes. Received: model output={model.output_shape}")


def _optimizer(config, learning_rate, steps):
    import keras

    if config.lr_schedule == "cosine" and steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    return {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD,
            "rmsprop": keras.optimizers.RMSprop}[config.optimizer](learning_rate)


def _compile(model, config, learning_rate, steps):
    import keras

    last = model.layers[-1]
    last = getattr(last, "layer", last)  # a pruning wrapper: the layer inside
    from_logits = getattr(getattr(last, "activation", None), "__name__", "") != "softmax"

    model.compile(optimizer=_optimizer(config, learning_rate, steps),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
                  metrics=["accuracy"])


def _steps(train, batch_size, epochs):
    return math.ceil(len(train[1]) / batch_size) * epochs


def _fit(model, train, epochs, batch_size, config, callbacks=()):
    x, y = train
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True,
              callbacks=list(callbacks), verbose=config.verbose)


def _clone(model):
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


class hold_zeros:  # noqa: N801 (a context manager used like a function)
    """Keeps every zero in the model's kernels at zero while training inside the block.

    It sets a constraint on each kernel variable (the optimizer applies it after each
    update) and removes it on exit, so nothing of it is saved with the model.
    """

    def __init__(self, model):
        self.model = model
        self.saved = []

    def __enter__(self):
        import keras

        for layer in self.model.layers:
            for var in getattr(layer, "trainable_weights", []):
                if len(var.shape) < 2:
                    continue
                mask = keras.ops.convert_to_tensor(
                    (np.asarray(var.numpy()) != 0).astype(var.dtype))
                self.saved.append((var, var.constraint))
                var.constraint = _MaskConstraint(mask)
        return self.model

    def __exit__(self, *exc):
        for var, constraint in self.saved:
            var.constraint = constraint
        self.saved = []
        return False


class _MaskConstraint:
    def __init__(self, mask):
        self.mask = mask

    def __call__(self, w):
        return w * self.mask


def _counts(model):
    """Parameters, non-zeros and MACs of a model (from `tfprune.bench.count`)."""
    from tfprune import bench

    counts = bench.count(model)
    return {"params": int(counts.params), "nonzeros": int(counts.nonzero),
            "macs": int(counts.macs)}


def _layer_table(model):
    """Per weighted layer: its units (last kernel axis) and the fraction of zero weights."""
    rows = []
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        w = np.asarray(kernel.numpy())
        rows.append({"name": layer.name, "class": type(layer).__name__,
                     "units": int(w.shape[-1]), "weights": int(w.size),
                     "sparsity": float(np.mean(w == 0))})
    return rows


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _read_records(folder):
    path = Path(folder) / RECORD
    if not path.is_file():
        return {}
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # an unreadable record means nothing can be trusted: run everything
    return records if isinstance(records, dict) else {}
