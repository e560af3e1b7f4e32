"""The baseline stage: load the model to compress, or train it (`--model`); and the
figures every stage that makes a model reports against it (`describe`: validation accuracy
and its paired change from the baseline's, counts, per-layer kernels), with adaptive
BatchNorm (`adaptive_batchnorm`)."""

import os

import numpy as np

import tfprune
from tfprune import stats
from tfprune.data import fingerprint
from tfprune.errors import TfpruneError
from tfprune.pipeline import training
from tfprune.pipeline.context import is_path
from tfprune.pipeline.records import file_sha256
from tfprune.pipeline.stage import Stage


def _baseline_epochs(config):
    """The epochs the baseline trains: as asked, or 8 for a zoo model and 0 for a loaded one."""
    if config.baseline_epochs is not None:
        return config.baseline_epochs
    return 0 if is_path(config.model) else 8


def _baseline_settings(config):
    path = config.model if is_path(config.model) and os.path.isfile(config.model) else None
    return {"baseline_epochs": _baseline_epochs(config),
            "model_sha256": file_sha256(path) if path else None,
            "data_fingerprint": fingerprint(config.dataset)}


def _check_baseline(context):
    """The source model loads and every stage can read it (a `keras.ops` call it cannot
    rebuild is named here, before training), the dataset fits it, and its classes match."""
    model = context.source_model
    tfprune.graph.LayerGraph.from_model(model)
    splits = context.data
    x, y = splits.train
    want = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    got = tuple(x.shape[1:])
    if want is None or len(want) != len(got) or any(
            w is not None and w != g for w, g in zip(want, got, strict=True)):
        raise TfpruneError(
            f"The dataset's images do not fit the model's input: the model expects "
            f"{model.input_shape}, the dataset gives {(None, *got)}. Received: "
            f"model input={model.input_shape}")
    classes = splits.num_classes or int(np.max(y)) + 1
    units = model.output_shape[-1]
    if units != classes:
        raise TfpruneError(f"The model has {units} outputs but the dataset has {classes} "
                           f"classes ({splits.spec}): give its last layer {classes} units. "
                           f"Received: model output={model.output_shape}")


def _baseline(context):
    config, model = context.config, training.in_scope(context.source_model)
    epochs, resumed = _baseline_epochs(config), 0
    if epochs:
        training.compile_model(model, config, config.baseline_learning_rate,
                               training.steps(context.train, config.baseline_batch_size, epochs))
        resumed = training.fit(model, context.train, epochs, config.baseline_batch_size, config,
                               callbacks=adaptive_batchnorm(context, config.baseline_batch_size),
                               backup=context.backup_dir)
    outputs = [context.save(BASELINE.model, model)]
    result = describe(context, model)
    result.update(epochs=epochs, resumed_from_epoch=resumed)
    return outputs, result, (f"{accuracy_text(result)}, "
                             f"{result['params']:,} params")


BASELINE = Stage(
    "baseline", _baseline, model="baseline", check=_check_baseline, derived=_baseline_settings,
    trains=True,
    keys=("model", "dataset", "train_split", "rescale", "train_limit", "validation_split",
          "baseline_epochs", "baseline_batch_size", "optimizer", "lr_schedule",
          "baseline_learning_rate", "batchnorm_images", "seed"))


def describe(context, model):
    """Keras validation accuracy (and its change from the baseline's), parameter, non-zero
    and MAC counts, per-layer kernels."""
    counts = tfprune.bench.count(model)
    return {**_val_accuracy(context, model),
            "params": int(counts.params), "nonzeros": int(counts.nonzero),
            "macs": int(counts.macs), "layers": _layer_table(model),
            "finite": training.finite(model)}


def _val_accuracy(context, model):
    """The model's accuracy on the validation split (`None` without one) and, after the
    baseline, its drop from the baseline's on the same images with a paired 95% interval
    (`val_drop_pp`, `val_drop_ci_pp`, `val_discordant`, `val_images`: `tfprune.stats`)."""
    if not len(context.validation[1]):
        return {"val_accuracy": None}
    right = stats.correct(model, context.validation)
    result = {"val_accuracy": int(np.sum(right)) / len(right)}
    if BASELINE.name in context.results:  # a later stage: paired with the baseline
        result.update(stats.paired(_baseline_right(context), right).to_dict("val_"))
    return result


def _baseline_right(context):
    """The baseline's answers on the validation split, right or wrong: computed once per
    run (and shared with the search's scratch copies of the context)."""
    cache = vars(context)
    if "baseline_right" not in cache:
        cache["baseline_right"] = stats.correct(context.model(BASELINE.model),
                                                   context.validation)
    return cache["baseline_right"]


def accuracy_text(result):
    value = result["val_accuracy"]
    if value is None:
        return "no validation split"
    if result.get("val_drop_ci_pp") is None:
        return f"val accuracy {value:.2%}"
    return (f"val accuracy {value:.2%}, "
            f"{stats.change_text(result['val_drop_pp'], result['val_drop_ci_pp'])}")


def _layer_table(model):
    """Per layer with kernels (its handler's prunable weights: a separable conv has two):
    its units (output channels), kernel weights and their zero fraction."""
    from tfprune.handlers import REGISTRY

    rows = []
    for layer in model.layers:
        kernels = [np.asarray(pw.variable) for pw in REGISTRY.prunable_weights(layer)]
        if not kernels:
            continue
        size = sum(w.size for w in kernels)
        rows.append({"name": layer.name, "class": type(layer).__name__,
                     "units": int(layer.output.shape[-1]), "weights": int(size),
                     "kernel_zeros": float(sum(np.sum(w == 0) for w in kernels) / size)})
    return rows


def adaptive_batchnorm(context, batch_size, at_epoch_end=False):
    """The callback that recomputes BatchNorm statistics before evaluations and at the end
    of training (`--batchnorm_images`), and of each epoch if asked, as a list: empty when
    off."""
    images = context.config.batchnorm_images
    if not images:
        return []
    return [tfprune.AdaptiveBatchNorm(context.train[0], images=images, batch_size=batch_size,
                                      seed=context.config.seed, at_epoch_end=at_epoch_end)]
