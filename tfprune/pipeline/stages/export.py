"""The export stage: the `.tflite` files of the run (`tflite_files`), each mode's own
settings (`mode_settings`)."""



from tfprune.pipeline.stage import Stage
from tfprune.pipeline.stages.baseline import BASELINE
from tfprune.pipeline.stages.shrink import SHRINK


def tflite_files(config):
    """Each `.tflite` file of a run -> `(Keras model name, quantize mode, sparse encoding)`.

    The baseline in float32 first, then the compressed model in each `config.quantize`
    mode: the first mode makes `compressed.tflite`, the others `compressed_<mode>.tflite`.
    """
    files = {f"{BASELINE.model}.tflite": (BASELINE.model, "none", False)}
    for i, mode in enumerate(config.quantize):
        name = f"{SHRINK.model}.tflite" if i == 0 else f"{SHRINK.model}_{mode}.tflite"
        files[name] = (SHRINK.model, mode, config.sparse)
    if config.target == "tflm":  # full int8 without sparse encoding: TFLM has no DENSIFY op
        baseline_int8, compressed = tflm_files(config)
        files[compressed] = (SHRINK.model, "int8", False)
        files[baseline_int8] = (BASELINE.model, "int8", False)
    return files


def tflm_files(config):
    """The files exported for TFLite Micro (`--target=tflm`): the full-int8 baseline, then
    `compressed.tflite`; none for LiteRT."""
    if config.target != "tflm":
        return ()
    return f"{BASELINE.model}_int8.tflite", f"{SHRINK.model}.tflite"


def mode_settings(config, mode, target="litert"):
    """The `tflite.to_tflite` arguments of a mode's own flags: int4's form, int8's float
    layers (never for TFLite Micro)."""
    if mode == "int4":
        return {"int4_form": config.int4_form}
    if mode == "int8" and target != "tflm":
        return {"float_layers": config.int8_float_layers}
    return {}


def compared(config):
    """The two files verify and the benchmark put side by side: baseline, compressed."""
    return tuple(tflite_files(config))[:2]


def _export(context):
    from tfprune import bench, tflite

    config = context.config
    rep = context.train[0][:config.representative_size]
    files = {}
    for name, (model_name, mode, sparse) in tflite_files(config).items():
        target = "tflm" if name in tflm_files(config) else "litert"
        settings = dict(quantize=mode, representative_data=rep, batch_size=config.export_batch_size,
                        int8_io=config.int8_io and mode == "int8", target=target,
                        **mode_settings(config, mode, target))
        facts = {}
        if sparse:  # the sparse encoding only where it pays: smaller, and no op falls back
            choice = tflite.to_tflite_where_sparse_pays(context.model(model_name),
                                                        context.folder / name, **settings)
            sparse, facts = choice.sparse, {"sparse_reason": choice.reason}
        else:
            tflite.to_tflite(context.model(model_name), context.folder / name, **settings)
        raw, gz = bench.file_sizes(context.folder / name)
        files[name] = {"model": model_name, "quantize": mode, "sparse": sparse, "bytes": raw,
                       "gzip_bytes": gz, **facts}
    base, comp = (files[name] for name in compared(config))
    encoding = f"; {comp['sparse_reason']}" if "sparse_reason" in comp else ""
    return list(files), {"files": files}, (f"{base['bytes']:,} -> {comp['bytes']:,} bytes "
                                           f"({base['bytes'] / comp['bytes']:.1f}x smaller"
                                           f"{encoding})")


EXPORT = Stage(
    "export", _export, reads=(BASELINE.model_file, SHRINK.model_file),
    writes=lambda config: tuple(tflite_files(config)),
    keys=("quantize", "sparse", "representative_size", "export_batch_size", "int8_io",
          "target", "int8_float_layers", "int4_form"))
