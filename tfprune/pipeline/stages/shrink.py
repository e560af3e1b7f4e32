"""The shrink stage: remove the zeroed filters and neurons (`tfprune.shrink`)."""



import tfprune
from tfprune.pipeline.stage import Stage
from tfprune.pipeline.stages.baseline import accuracy_text, describe
from tfprune.pipeline.stages.fold import before_shrink


def _shrink(context):
    model = context.model(before_shrink(context.config).model)
    shrunk = tfprune.shrink(model, threshold=context.config.shrink_threshold)
    outputs = [context.save(SHRINK.model, shrunk)]
    result = describe(context, shrunk)
    return outputs, result, (f"{result['params']:,} params, {result['macs']:,} MACs, "
                             f"{accuracy_text(result)}")


SHRINK = Stage("shrink", _shrink, model="compressed",
               reads=lambda config: (before_shrink(config).model_file,),
               keys=("shrink_threshold",), judged=True)
