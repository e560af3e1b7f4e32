"""The fold stage: the exact merges, after retraining (`--fold_after_retrain`)."""



from tfprune.pipeline.stage import Stage
from tfprune.pipeline.stages.merge import MERGE, folds_after_retrain, merged
from tfprune.pipeline.stages.retrain import RETRAIN


def _fold(context):
    return merged(context, FOLD, RETRAIN)


# Exact merges after retraining (the default with --merge=exact): BatchNorm stays through
# retraining, then folds with the statistics the retrained weights have.
FOLD = Stage("fold", _fold, model="folded", reads=(RETRAIN.model_file,),
             enabled=folds_after_retrain, keys=MERGE.keys, judged=True)


def before_shrink(config):
    return FOLD if folds_after_retrain(config) else RETRAIN
