"""The checks of a run's settings (`validate`), and the parsers of the settings that hold
more than one value (`parse_granularity`, `parse_layer_sparsity`, the targets).

`PipelineConfig` (`pipeline/config.py`) declares each setting with its allowed values;
`validate` checks each against its declaration, then the settings against each other. It
loads nothing: a bad setting is reported before Keras and TensorFlow load.
"""

import dataclasses
import math

import numpy as np

from tfprune import options
from tfprune.data import parse_spec
from tfprune.data.loader import check_splits
from tfprune.errors import TfpruneError

PER_LAYER_GRANULARITIES = (*options.GRANULARITIES, "none")  # "none": leave the layer unpruned


def validate(config):
    """Checks every setting of `config` (a `PipelineConfig`), loading nothing.

    Raises:
        TfpruneError: the first setting that cannot work, named with its value.
    """
    for field in dataclasses.fields(config):
        _check_field(field, getattr(config, field.name))
    if not config.quantize:
        raise TfpruneError("Expected at least one export mode. Received: quantize=()")
    parse_granularity(config.granularity)
    parse_layer_sparsity(config.layer_sparsity)
    parse_spec(config.dataset)
    check_splits(config.dataset, config.train_split, config.test_split)
    if search_target(config) and parse_layer_sparsity(config.layer_sparsity):
        raise TfpruneError(
            "layer_sparsity and a target both decide the layers' widths, so which one "
            "wins would be ambiguous: drop layer_sparsity (the search finds them) or the "
            f"targets. Received: layer_sparsity={config.layer_sparsity!r}")
    if search_target(config) and config.validation_split == 0:
        raise TfpruneError("A search decides on the validation split: set "
                           "validation_split above 0. Received: validation_split=0")
    if config.export_batch_size is not None and config.bench_batch_size != config.export_batch_size:
        raise TfpruneError(
            "The benchmark batch must be the exported files' fixed batch. Received: "
            f"bench_batch_size={config.bench_batch_size}, "
            f"export_batch_size={config.export_batch_size}")
    _check_target(config)
    _check_schedule(config)


def _check_schedule(config):
    """A polynomial schedule that rises, and reaches a mask update after it begins."""
    if config.schedule != "polynomial":
        return
    if config.initial_sparsity > config.final_sparsity:
        raise TfpruneError(
            "Expected initial_sparsity <= final_sparsity. Received: "
            f"initial_sparsity={config.initial_sparsity}, "
            f"final_sparsity={config.final_sparsity}")
    if config.end_step != -1 and config.end_step < config.begin_step + (config.frequency or 1):
        raise TfpruneError(
            "Expected end_step >= begin_step + frequency (the schedule must reach a "
            "mask update after it begins), or -1 for automatic. Received: "
            f"begin_step={config.begin_step}, end_step={config.end_step}, "
            f"frequency={config.frequency}")


def _check_target(config):
    """The settings `--target=tflm` needs, and the ones only it takes."""
    if config.target != "tflm":
        for name in ("emit_c", "max_arena"):
            if getattr(config, name) not in (False, None):
                raise TfpruneError(f"{name} is for TFLite Micro files: add --target=tflm. "
                                   f"Received: {name}={getattr(config, name)!r}")
        return
    if config.int8_float_layers != "none":
        raise TfpruneError("--target=tflm needs every op in int8 (TFLite Micro on a "
                           "microcontroller has no float kernels to spare): leave "
                           "int8_float_layers at 'none'. Received: "
                           f"int8_float_layers={config.int8_float_layers!r}")
    if config.quantize[0] != "int8":
        raise TfpruneError("--target=tflm makes compressed.tflite full int8: put int8 first "
                           f"in quantize. Received: quantize={','.join(config.quantize)!r}")
    if config.export_batch_size not in (None, 1) or config.bench_batch_size != 1:
        raise TfpruneError("--target=tflm exports a batch of 1 (a microcontroller runs one "
                           "input at a time): leave export_batch_size and bench_batch_size at "
                           f"1. Received: export_batch_size={config.export_batch_size}, "
                           f"bench_batch_size={config.bench_batch_size}")


def _check_field(field, value):
    name, meta = field.name, field.metadata
    if value is None and field.default is None:
        return
    kind = value_type(field)
    if kind is int and not (isinstance(value, (int, np.integer)) and not isinstance(value, bool)):
        raise TfpruneError(f"Expected {name} to be an integer. Received: {name}={value!r}")
    if kind is float and not (isinstance(value, (int, float, np.number))
                              and not isinstance(value, bool) and math.isfinite(value)):
        raise TfpruneError(f"Expected {name} to be a finite number. Received: {name}={value!r}")
    if meta.get("range") is not None and not meta["range"].contains(value):
        raise TfpruneError(f"Expected {name} {meta['range']}. Received: {name}={value!r}")
    choices = meta.get("choices")
    if choices is not None:
        for item in value if kind is tuple else (value,):
            _one_of(name, item, choices)


def value_type(field):
    """A `PipelineConfig` field's type: `str`, `int`, `float`, `bool` or `tuple` (`None` aside)."""
    args = [a for a in getattr(field.type, "__args__", ()) if a is not type(None)]
    return args[0] if args else field.type


def _one_of(name, value, allowed):
    if value not in allowed:
        raise TfpruneError(f"Unknown {name}. Expected one of {list(allowed)}. "
                           f"Received: {name}={value!r}")


def search_target(config):
    """The run's `tfprune.search.Target` (false when no size, speed or MAC target is set).

    Raises:
        TfpruneError: a target that cannot be read, or a ratio not above 1x.

    Example:

    >>> from tfprune.pipeline import PipelineConfig
    >>> from tfprune.pipeline.validation import search_target
    >>> target = search_target(PipelineConfig(target_size="50x", max_accuracy_drop=0.1))
    >>> bool(target), target.size_ratio, bool(search_target(PipelineConfig()))
    (True, 50.0, False)
    """
    from tfprune.search.targets import Target

    return Target.parse(size=config.target_size, speedup=config.target_speedup,
                        latency=config.target_latency, macs=config.target_macs,
                        max_accuracy_drop=config.max_accuracy_drop)


def distills(config):
    """Whether the prune and retrain stages distil from the baseline: `config.distill`, or,
    left unset, whether a target is set."""
    return bool(search_target(config)) if config.distill is None else bool(config.distill)


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

    Example:

    >>> from tfprune.pipeline import parse_granularity
    >>> parse_granularity("Conv2D:filter,Dense:n:m,ip2:none")
    {'Conv2D': 'filter', 'Dense': 'n:m', 'ip2': None}
    """
    if isinstance(spec, dict):
        for value in spec.values():
            _one_of("granularity", "none" if value is None else value, PER_LAYER_GRANULARITIES)
        return dict(spec)
    spec = (spec or "").strip()
    if spec in options.GRANULARITIES:
        return spec
    result = {}
    for part in spec.split(","):
        key, sep, value = part.strip().partition(":")
        if not sep or not key or not value:
            raise TfpruneError(
                "Expected a granularity (one of "
                f"{list(options.GRANULARITIES)}) or pairs like 'Conv2D:filter,Dense:weight'. "
                f"Received: granularity={spec!r}")
        _one_of("granularity", value.strip(), PER_LAYER_GRANULARITIES)
        result[key.strip()] = None if value.strip() == "none" else value.strip()
    return result


def parse_layer_sparsity(spec):
    """Parses per-layer sparsities.

    Args:
        spec: String, comma-separated `layer name:sparsity` pairs; empty for none.

    Returns:
        Dict of layer name -> sparsity.

    Raises:
        TfpruneError: a malformed pair or a sparsity outside [0, 1).

    Example:

    >>> from tfprune.pipeline import parse_layer_sparsity
    >>> parse_layer_sparsity("conv1:0.6, ip1:0.8")
    {'conv1': 0.6, 'ip1': 0.8}
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
