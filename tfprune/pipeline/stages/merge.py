"""The merge stage: fold the layers between tensor layers into them (`tfprune.fuse`);
with `--merge=exact` after retraining (the fold stage)."""



import tfprune
from tfprune.pipeline import training
from tfprune.pipeline.stage import Stage
from tfprune.pipeline.stages.baseline import accuracy_text, describe
from tfprune.pipeline.stages.prune import PRUNE


def _merge(context):
    return merged(context, MERGE, PRUNE)


def merged(context, stage, source):
    """The merge (or fold) stage: `source`'s model merged as the run says."""
    config = context.config
    model = context.model(source.model)
    merged = training.clone(model) if config.merge == "none" else fuse_as_configured(model, config)
    outputs = [context.save(stage.model, merged)]
    result = describe(context, merged)
    result["layer_count"] = len(merged.layers)
    return outputs, result, (f"{len(model.layers)} -> {len(merged.layers)} layers, "
                             f"{accuracy_text(result)}")


def folds_after_retrain(config):
    """Whether the run merges after retraining (`fold` stage) rather than before (`merge`):
    exact merges only, as `--fold_after_retrain` asks; approximate ones need retraining."""
    return config.merge == "exact" and config.fold_after_retrain


def fuse_as_configured(model, config):
    """`model` merged as `config` says (`merge` is not `"none"`)."""
    return tfprune.fuse(model, approximate=config.merge == "approximate",
                        pool_kernel=config.pool_kernel,
                        pool_activation=None if config.pool_activation == "none"
                        else config.pool_activation)


MERGE = Stage("merge", _merge, model="merged", reads=(PRUNE.model_file,),
              enabled=lambda config: not folds_after_retrain(config),
              keys=("merge", "pool_kernel", "pool_activation", "fold_after_retrain"))


def before_retrain(config):
    """The stage whose model the retrain stage trains: merge, or prune when merging waits."""
    return PRUNE if folds_after_retrain(config) else MERGE
