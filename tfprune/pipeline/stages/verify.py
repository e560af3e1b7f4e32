"""The verify stage: the accuracy of the `.tflite` files themselves on the test set."""


import numpy as np

from tfprune import stats
from tfprune.pipeline.stage import Stage
from tfprune.pipeline.stages.export import EXPORT, compared


def _verify(context):
    from tfprune import tflite

    x, y = context.test
    batches = [(x[i:i + 256], y[i:i + 256]) for i in range(0, len(y), 256)]
    right = {name: tflite.correct(context.folder / name, batches)
             for name in VERIFY.files_read(context.config)}
    base_name, comp_name = compared(context.config)
    files = {name: {"accuracy": int(np.sum(r)) / len(r)} for name, r in right.items()}
    for name, r in right.items():  # each file against the baseline, on the same images
        if name != base_name:
            files[name].update(stats.paired(right[base_name], r).to_dict(), drop_vs=base_name)
    base, comp = files[base_name]["accuracy"], files[comp_name]["accuracy"]
    change = stats.change_text(files[comp_name]["drop_pp"], files[comp_name]["drop_ci_pp"])
    return [], {"files": files}, f".tflite test accuracy {base:.2%} -> {comp:.2%}: {change}"


# It reads what the export declaration says it writes.
VERIFY = Stage("verify", _verify, keys=("test_limit", "test_split"),
               reads=lambda config: EXPORT.files_written(config))
