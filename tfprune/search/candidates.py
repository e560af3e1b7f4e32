"""Candidates: a model cut to per-layer widths, compressed as the run would, and its cost.

A candidate is a dict `{layer name: units kept}` over the layers pruned whole filters at a
time. `Layers` knows those layers, their units, the sparsity that keeps a width (the prune
stage's mask keeps `keep_count(units, sparsity)` filters) and a grid of widths to search.
`Costs` measures candidates: it cuts the model's filters of least L2 norm (the prune
stage's criterion), merges and shrinks it as the run does, and writes the `.tflite` file the
run would (its size is the file's size). Its latency comes from a `LatencyTable` of the
model's layers at their widths, calibrated once against whole files (steady: the same
numbers whatever the machine's load), or, without a table, from timing the file on the
LiteRT interpreter against the baseline's, interleaved. Trained candidates' files are
always timed whole, and the table's error on them recorded. Weight values change neither
the size nor the speed of a file, so the untrained cut measures what the trained one will
cost.
"""

import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from tfprune.errors import TfpruneError
from tfprune.pruning.masks import keep_count

# The figures only timing a file measures (bytes and MACs are computed).
TIMED = ("latency_us", "speedup")


def name(widths):
    """A candidate's short name: its widths joined by dashes, `'16-24-48'`."""
    return "-".join(str(int(w)) for w in widths.values())


class Layers:
    """The layers a search may narrow (those `prune` cuts by whole filters) and their units.

    Args:
        model: A Keras model.
        granularity: As `tfprune.prune` takes it; the layers it prunes at `"filter"` are
            searched (the classifier never: `prune` keeps every class).
        step: Float in (0, 1), each grid width is at most `step` times the one above it,
            defaults to `0.85`.

    Raises:
        TfpruneError: no layer is pruned at `"filter"` granularity.

    Example:

    >>> from tfprune.search.candidates import Layers
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, name="c"),
    ...                           keras.layers.Flatten(), keras.layers.Dense(3, name="out")])
    >>> layers = Layers(model, "filter")
    >>> layers.units, layers.grid["c"]
    ({'c': 8}, [8, 7, 6, 5, 4, 3, 2, 1])
    >>> layers.sparsities({"c": 6})
    {'c': 0.25}
    """

    def __init__(self, model, granularity="filter", step=0.85):
        from tfprune import pruning
        from tfprune.handlers import REGISTRY, Depthwise
        from tfprune.pruning import masks

        chosen = pruning.plan(model, granularity)
        self.units = {}
        for layer in model.layers:
            weights = REGISTRY.prunable_weights(layer)
            # A layer that makes channels; not one whose channels follow another's (a
            # depthwise conv, a BatchNorm: pruned with the filter before them).
            if weights and not isinstance(REGISTRY.lookup(layer), Depthwise) and (
                    layer.name in chosen
                    and masks.check_granularity(chosen[layer.name])[0] == "filter"):
                weight = weights[0]
                axes = weight.out_axis if isinstance(weight.out_axis, tuple) else (
                    weight.out_axis,)
                self.units[layer.name] = math.prod(int(weight.variable.shape[a]) for a in axes)
        if not self.units:
            raise TfpruneError(
                "A search needs layers pruned as whole filters: set granularity to 'filter' "
                "for some of them (e.g. 'Conv2D:filter,Dense:filter'). Received: "
                f"granularity={granularity!r}")
        self.grid = {layer: _grid(units, step) for layer, units in self.units.items()}

    @property
    def full(self):
        """The candidate that keeps every unit."""
        return dict(self.units)

    @property
    def smallest(self):
        """The candidate that keeps one unit per layer: the smallest model there is."""
        return {layer: 1 for layer in self.units}

    def narrower(self, widths, layer, floor=1):
        """The next grid width below `widths[layer]` and at least `floor` (`floor` itself
        when the grid has none between: a back-off floor may lie off the grid), or `None`."""
        below = [w for w in self.grid[layer] if floor <= w < widths[layer]]
        return max(below) if below else (floor if floor < widths[layer] else None)

    def wider(self, widths, layer):
        """The next grid width above `widths[layer]` (at most its units), or `None`."""
        above = [w for w in self.grid[layer] if w > widths[layer]]
        return min(above) if above else None

    def sparsities(self, widths):
        """Each layer's sparsity that keeps exactly its width (0.0 at full width)."""
        result = {}
        for layer, width in widths.items():
            units = self.units[layer]
            sparsity = round(1.0 - width / units, 6)
            if keep_count(units, sparsity) != width:  # float32 rounding at the edge
                sparsity = 1.0 - (width + 0.25) / units
            result[layer] = sparsity
        return result


def _grid(units, step):
    """Widths from `units` down to 1, each at most `step` times the one before."""
    widths = [units]
    while widths[-1] > 1:
        widths.append(max(1, min(widths[-1] - 1, round(widths[-1] * step))))
    return widths


def cut(model, widths, layers, granularity, other_sparsity=0.0):
    """`model` with each searched layer cut to its width: the filters of least L2 norm zeroed.

    The other layers `prune` would wrap get `other_sparsity` at their own granularity. The
    result is a plain model (pruning wrappers stripped) with the zeros in its kernels; the
    caller's model is not changed.

    Args:
        model: A Keras model.
        widths: Dict of layer name -> units kept.
        layers: The `Layers` of `model`.
        granularity: As `tfprune.prune` takes it.
        other_sparsity: Float, the sparsity of the pruned layers not searched, defaults
            to `0.0`.

    Returns:
        A new Keras model.
    """
    import tfprune
    from tfprune.pruning.groups import FilterGroups, update_masks

    sparsity = layers.sparsities(widths)
    wrapped = tfprune.prune(model, tfprune.ConstantSparsity(other_sparsity, begin_step=0),
                            granularity=granularity)
    due = {layer: sparsity.get(layer.layer.name, other_sparsity) for layer in wrapped.layers
           if isinstance(layer, tfprune.PruneLowMagnitude)}
    update_masks(FilterGroups.of(wrapped), due)  # as the prune stage: by channel group
    with warnings.catch_warnings():  # full-width layers keep all-ones masks on purpose
        warnings.simplefilter("ignore")
        return tfprune.strip(wrapped)


class Costs:
    """Measures candidates: `.tflite` bytes, LiteRT latency and speedup, MACs.

    Every figure comes from a real file: the candidate is cut (`cut`), compressed with
    `compress` (merging and shrinking, as the run does), exported with `export`'s settings,
    and timed interleaved with the baseline's file (float32, same batch) by
    `tfprune.bench.compare` with `bench`'s settings; the speedup is the median of the
    per-round ratios. Figures are kept in `memo` (a dict, or a `Trace` section) so that a
    candidate is measured once, and a resumed search replays the same figures.

    Args:
        model: The baseline Keras model.
        layers: Its `Layers`.
        granularity: As `tfprune.prune` takes it.
        compress: Function `compress(model) -> model`, e.g. `tfprune.shrink(tfprune.fuse(m))`.
        export: Dict of `tfprune.export.to_tflite` arguments for the candidates (`quantize`,
            `sparse`, `batch_size`, `representative_data`, `int8_io`).
        bench: Dict of `tfprune.bench.compare` arguments (`threads`, `batch_size`, `runs`,
            `warmup`).
        other_sparsity: Float, see `cut`, defaults to `0.0`.
        memo: Dict-like of candidate name -> figures, defaults to a new dict.
        estimates: Dict-like of candidate name -> estimated figures (see `estimate`),
            defaults to a new dict.
        folder: Folder for the `.tflite` files (kept until `close`), defaults to a new
            temporary folder.
        timed: Boolean, measure latency (only when a latency or speed target needs it),
            defaults to `True`.
        table: A `LatencyTable` predicting the candidates' latency, or `None` to time
            every candidate's file.
    """

    def __init__(self, model, layers, granularity, compress, export, bench,
                 other_sparsity=0.0, memo=None, estimates=None, folder=None, timed=True,
                 table=None):
        self.model, self.layers, self.granularity = model, layers, granularity
        self.compress, self.other_sparsity = compress, other_sparsity
        self.export = dict(export)
        self.bench = dict(bench)
        self.memo = {} if memo is None else memo
        self.estimates = {} if estimates is None else estimates
        self.timed, self.table = timed, (table if timed else None)
        self._tmp = None if folder else tempfile.TemporaryDirectory(prefix="tfprune-search-")
        self.folder = Path(folder or self._tmp.name)
        self._baseline_file = self._full = None

    def close(self):
        """Removes the temporary folder, if `Costs` made one."""
        if self._tmp is not None:
            self._tmp.cleanup()

    def baseline_file(self):
        """The baseline's float32 `.tflite` file (exported once)."""
        from tfprune import tflite

        if self._baseline_file is None:
            path = self.folder / "baseline.tflite"
            tflite.to_tflite(self.model, path, batch_size=self.export.get("batch_size"))
            self._baseline_file = path
        return self._baseline_file

    def baseline(self):
        """The baseline's figures: its file's bytes, MACs, latency (speedup 1.0)."""
        if "baseline" not in self.memo:
            from tfprune import bench

            figures = {"bytes": os.path.getsize(self.baseline_file()),
                       "macs": int(bench.count(self.model).macs), "speedup": 1.0}
            if self.timed:
                timing = bench.compare(str(self.baseline_file()), delegates=("xnnpack",),
                                       **self.bench).timing(0)
                figures["latency_us"] = timing.median_us
            if self.table is not None:
                figures["table_us"] = self.table.predict(self.model, "none")
            self.memo["baseline"] = figures
        return dict(self.memo["baseline"])

    def calibration(self):
        """How far the table's predictions are from whole files, on the full-width candidate
        timed whole against the baseline: `{"latency": whole µs / table µs, "speedup":
        table speedup / measured speedup}`, in steps of 0.05 (stair steps: a little noise
        does not move it), kept in `memo` so that a resumed search uses the same, and in
        the table's file with its entries, so that the next search of this model does."""
        if "@calibration" not in self.memo:
            kept = self.table.kept("calibration", self._calibrated(), self.export["quantize"])
            if kept is None:
                kept = _calibration(self.measure_model("@full", self._calibrated()[1]))
                self.table.keep("calibration", self._calibrated(), self.export["quantize"],
                                kept)
            self.memo["@calibration"] = kept
        return dict(self.memo["@calibration"])

    def _calibrated(self):
        """The models a calibration is kept under: the baseline and its full-width cut."""
        if self._full is None:
            self._full = self.build(self.layers.full)
        return self.model, self._full

    def recalibrate(self, figures):
        """Takes a candidate's whole-file figures as the calibration when the table was more
        optimistic on it than the calibration allowed for; whether it changed. The table's
        file keeps it too: the next search of this model plans with it from the start, and
        takes the path this one ends on."""
        now, seen = self.calibration(), _calibration(figures)
        if seen["speedup"] <= now["speedup"] and seen["latency"] <= now["latency"]:
            return False
        self.memo["@calibration"] = {k: max(now[k], seen[k]) for k in now}
        self.table.keep("calibration", self._calibrated(), self.export["quantize"],
                        self.memo["@calibration"])
        return True

    def build(self, widths):
        """The candidate's compressed Keras model (cut, then `compress`)."""
        return self.compress(cut(self.model, widths, self.layers, self.granularity,
                                 self.other_sparsity))

    def measure(self, candidates):
        """Figures of each candidate (a list of width dicts), measuring those not in `memo`.

        The new ones are exported, then timed together with the baseline in one interleaved
        session, so that they share the machine's conditions.

        Returns:
            A list of dicts: `bytes`, `macs`, `params`, and with `timed`, `latency_us`
            (median) and `latency_p10_us`, `speedup` (median per-round ratio over the
            baseline), `speedup_p10`, `speedup_p90`.
        """
        fresh = {}
        for widths in candidates:
            key = name(widths)
            if key not in self.memo and key not in fresh:
                fresh[key] = self.build(widths)
        self._measure_models(fresh)
        return [self._figures(name(widths)) for widths in candidates]

    def measure_model(self, key, model):
        """The figures of a given compressed model (a trained candidate), kept as `key`: its
        file timed whole, with the table's prediction and error beside."""
        if key not in self.memo:
            self._measure_models({key: model}, whole=True)
        return dict(self.memo[key])

    def whole(self, widths):
        """The candidate's file timed whole against the baseline's (before training: weights
        change neither size nor speed). Timed once per table and kept beside its entries, so
        that a second search of the model decides on the same figures as the first."""
        key = f"{name(widths)}@whole"
        if key not in self.memo:
            model = self.build(widths)
            models, quantize = (self.model, model), self.export["quantize"]
            kept = self.table.kept("whole", models, quantize)
            if kept is None:
                kept = self.measure_model(key, model)
                self.table.keep("whole", models, quantize, kept)
            self.memo[key] = kept
        return dict(self.memo[key])

    def _figures(self, key):
        """A candidate's figures; predicted from the table, with the calibration applied."""
        figures = dict(self.memo[key])
        if "table_us" in figures and "latency_us" not in figures:
            k, base = self.calibration(), self.memo["baseline"]["table_us"]
            figures.update(latency_us=figures["table_us"] * k["latency"],
                           speedup=base / figures["table_us"] / k["speedup"], predicted=True)
        return figures

    def _measure_models(self, models, whole=False):
        from tfprune import bench, tflite

        files = {}
        for key, model in models.items():
            path = self.folder / f"{key}.tflite"
            settings = dict(self.export)
            if settings.pop("sparse", False):  # as the export stage: only where it pays
                tflite.to_tflite_where_sparse_pays(model, path, **settings)
            else:
                tflite.to_tflite(model, path, **settings)
            counts = bench.count(model)
            files[key] = (path, {"bytes": os.path.getsize(path), "macs": int(counts.macs),
                                 "params": int(counts.params)})
        if files and self.table is not None:
            predicted = self.table.predict_many(list(models.values()), self.export["quantize"])
            for (_, figures), table_us in zip(files.values(), predicted, strict=True):
                figures["table_us"] = table_us
        if files and self.timed and (whole or self.table is None):
            timing = bench.compare(str(self.baseline_file()),
                                   *(str(path) for path, _ in files.values()),
                                   delegates=("xnnpack",), **self.bench)
            for i, (_, figures) in enumerate(files.values(), start=1):
                t = timing.timing(i)
                figures.update(latency_us=t.median_us, latency_p10_us=t.p10_us,
                               speedup=t.speedup, speedup_p10=t.speedup_p10,
                               speedup_p90=t.speedup_p90, predicted=False)
                if "table_us" in figures:  # how far the table is from the whole file
                    table_speedup = self.memo["baseline"]["table_us"] / figures["table_us"]
                    figures["table_speedup"] = table_speedup
        for key, (path, figures) in files.items():
            self.memo[key] = figures
            path.unlink(missing_ok=True)


    def estimate(self, candidates):
        """Figures to rank candidates by, without exporting them.

        MACs and parameters are counted on the compressed Keras model; bytes are read off
        the least-squares line through the files measured so far (parameters -> bytes: the
        file holds each parameter at the export's width plus fixed structure). A candidate
        already measured gets its measured figures, unless it was estimated first (an
        estimate stays, so that a resumed search ranks as the first run did); with fewer
        than two files measured, candidates are measured. The search ranks its proposals
        with these, and decides that a target is met only on measured figures.

        Returns:
            A list of dicts: `bytes`, `macs`, `params`, and `estimated: True` for those
            not measured.
        """
        from tfprune import bench

        measured = [(f["params"], f["bytes"]) for key, f in self.memo.items()
                    if key != "baseline" and "@" not in key and "params" in f]
        if len({p for p, _ in measured}) < 2:
            return self.measure(candidates)
        slope, intercept = np.polyfit(*zip(*measured, strict=True), 1)
        result = []
        for widths in candidates:
            key = name(widths)
            if key in self.memo and key not in self.estimates:
                result.append(self._figures(key))
                continue
            if key not in self.estimates:  # once made, an estimate stays: a replay agrees
                counts = bench.count(self.build(widths))
                self.estimates[key] = {
                    "bytes": float(intercept + slope * counts.params),
                    "macs": int(counts.macs), "params": int(counts.params), "estimated": True}
            result.append(dict(self.estimates[key]))
        return result


def _calibration(figures):
    """Whole file against table, from figures with both, in steps of 0.05 (at least 1/2):
    latency as the table's, a 10th percentile; speedup as the benchmark's, a median ratio
    per interleaved round."""
    def step(ratio):
        return max(round(ratio * 20) / 20, 0.5)

    return {"latency": step(figures["latency_p10_us"] / figures["table_us"]),
            "speedup": step(figures["table_speedup"] / figures["speedup"])}
