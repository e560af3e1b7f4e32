"""The prune stage: magnitude pruning inside training, per-layer sparsities from the
search's plan or `--layer_sparsity` (`tfprune.prune(..., sparsities=...)`)."""



import tfprune
from tfprune import atomic
from tfprune.errors import TfpruneError
from tfprune.pipeline import budget, training
from tfprune.pipeline.stage import Stage
from tfprune.pipeline.stages.baseline import (
    BASELINE,
    accuracy_text,
    adaptive_batchnorm,
    describe,
)
from tfprune.pipeline.validation import (
    parse_granularity,
    parse_layer_sparsity,
)


def _check_prune(context):
    config = context.config
    unknown = set(parse_layer_sparsity(config.layer_sparsity)) - {
        layer.name for layer in context.source_model.layers}
    if unknown:
        raise TfpruneError(f"layer_sparsity names layers the model does not have: "
                           f"{sorted(unknown)}. Received: layer_sparsity="
                           f"{config.layer_sparsity!r}")
    if config.tensorboard_dir:
        atomic.check_writable(config.tensorboard_dir)


def _prune(context):
    config = context.config
    model = context.model(BASELINE.model)
    overrides = _layer_sparsities(context)
    epochs = budget.prune_epochs(config, len(context.train[1]),
                                 max([config.final_sparsity, *overrides.values()]))
    steps = training.steps(context.train, config.prune_batch_size, epochs)
    frequency = budget.frequency(config, steps)
    end_step = budget.end_step(config, steps, frequency)

    if config.schedule == "constant":
        schedule = tfprune.ConstantSparsity(config.final_sparsity, begin_step=config.begin_step,
                                            frequency=frequency)
    else:
        schedule = tfprune.PolynomialDecay(
            initial_sparsity=config.initial_sparsity, final_sparsity=config.final_sparsity,
            begin_step=config.begin_step, end_step=end_step, power=config.power,
            frequency=frequency)
    granularity = parse_granularity(config.granularity)
    wrapped = tfprune.prune(model, schedule, granularity=granularity, sparsities=overrides)
    learner = training.learner(wrapped, model, config)  # the baseline teaches, if distilling
    training.compile_model(learner, config, config.prune_learning_rate, steps)
    callbacks = [tfprune.UpdatePruningStep(),
                 *adaptive_batchnorm(context, config.prune_batch_size)]
    if config.tensorboard_dir:
        callbacks.append(tfprune.PruningSummaries(config.tensorboard_dir))
    resumed = 0
    if epochs:
        resumed = training.fit(learner, context.train, epochs, config.prune_batch_size,
                               config, callbacks=callbacks, backup=context.backup_dir)
    pruned = tfprune.strip(wrapped)
    outputs = [context.save(PRUNE.model, pruned)]
    result = describe(context, pruned)
    result.update(epochs=epochs, end_step=end_step, steps=steps, frequency=frequency,
                  updates=_updates(schedule, steps),
                  granularity=granularity, resumed_from_epoch=resumed,
                  layer_sparsity=overrides, distilled=learner is not wrapped)
    return outputs, result, (f"{accuracy_text(result)}, "
                             f"{result['nonzeros']:,}/{result['params']:,} non-zero; "
                             f"{epochs} epochs, a mask update every {frequency} steps to "
                             f"step {end_step}")


def _updates(schedule, steps):
    """How many of the first `steps` steps move the masks under `schedule`."""
    return sum(bool(schedule(step)[0]) for step in range(steps))


PRUNE = Stage(
    "prune", _prune, model="pruned", reads=(BASELINE.model_file,), check=_check_prune,
    trains=True,
    keys=("prune_epochs", "prune_batch_size", "prune_learning_rate", "schedule",
          "initial_sparsity", "final_sparsity", "begin_step", "end_step", "power", "frequency",
          "granularity", "layer_sparsity", "distill", "distill_temperature", "distill_weight",
          "batchnorm_images"))


def _layer_sparsities(context):
    """Per-layer final sparsities: the search's plan when it ran, else `--layer_sparsity`."""
    searched = context.results.get("search")  # the search stage's plan, when it ran
    if searched is not None:
        return dict(searched["sparsities"])
    return parse_layer_sparsity(context.config.layer_sparsity)
