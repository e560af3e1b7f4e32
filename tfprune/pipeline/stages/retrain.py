"""The retrain stage: fine-tune with the pruned zeros held."""



from tfprune import stats
from tfprune.pipeline import budget, training
from tfprune.pipeline.stage import Stage
from tfprune.pipeline.stages.baseline import (
    BASELINE,
    accuracy_text,
    adaptive_batchnorm,
    describe,
)
from tfprune.pipeline.stages.merge import before_retrain
from tfprune.pipeline.stages.prune import PRUNE


def _retrain(context):
    config = context.config
    model, resumed = training.clone(context.model(before_retrain(config).model)), 0
    epochs, early = budget.retrain_epochs(config, context.results[PRUNE.name]["epochs"])
    best = None
    if epochs:
        # Early: the statistics recomputed at each epoch's end, before the best epoch is
        # judged on them (the callbacks run in this order).
        callbacks = adaptive_batchnorm(context, config.retrain_batch_size, at_epoch_end=early)
        if early:
            best = budget.best_epoch_callback(context.validation, stats.accuracy)
            callbacks.append(best)
        with training.hold_zeros(model):
            learner = training.learner(model, context.model(BASELINE.model), config)
            training.compile_model(learner, config, config.retrain_learning_rate,
                                   0 if early else training.steps(
                                       context.train, config.retrain_batch_size, epochs))
            resumed = training.fit(learner, context.train, epochs, config.retrain_batch_size,
                                   config, callbacks=callbacks, backup=context.backup_dir)
    outputs = [context.save(RETRAIN.model, model)]
    result = describe(context, model)
    result.update(resumed_from_epoch=resumed, epochs=epochs, early_stopping=bool(best))
    ran = f"{epochs} epochs"
    if best is not None:
        result.update(epochs_run=best.epochs_run, best_epoch=best.best_epoch,
                      learning_rates=best.learning_rates)
        ran = f"best of {best.epochs_run} epochs: {best.best_epoch} (at most {epochs})"
    return outputs, result, (f"{accuracy_text(result)}, "
                             f"{result['nonzeros']:,} non-zero; {ran}")


RETRAIN = Stage("retrain", _retrain, model="retrained", trains=True,
                reads=lambda config: (before_retrain(config).model_file,),
                keys=("retrain_epochs", "retrain_batch_size", "retrain_learning_rate", "distill",
                      "distill_temperature", "distill_weight", "batchnorm_images"),
                judged=True)
