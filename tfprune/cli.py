"""The `tfprune` command: an absl app whose flags map onto `tfprune.pipeline.PipelineConfig`.

    tfprune --flagfile=flags/quick.flags
    tfprune --model=path/to/model.keras --final_sparsity=0.9 --export_dir=export/mine
    tfprune --helpfull

`main(argv)` only reads the flags and calls `tfprune.pipeline.run`, which tests call
directly. Bad input ends the run with a one-line error (no traceback) and exit code 1.
"""

import dataclasses
import os
import sys

from absl import app, flags

from tfprune import pipeline
from tfprune.errors import TfpruneError

_D = pipeline.PipelineConfig()  # the defaults, in one place

# Model and data.
flags.DEFINE_string("model", _D.model, "A zoo model (lenet5, lenet5_classic) or a .keras file.")
flags.DEFINE_boolean("unsafe_load", _D.unsafe_load,
                     "Load the .keras file with safe_mode=False (runs Lambda code: trusted "
                     "files only).")
flags.DEFINE_enum("dataset", _D.dataset, ["mnist"], "The dataset.")
flags.DEFINE_string("data_dir", _D.data_dir,
                    "Folder with the dataset files (default: $TFPRUNE_DATA_DIR, the cache, TFDS).")
flags.DEFINE_integer("train_limit", _D.train_limit, "Train on the first N images only.",
                     lower_bound=1)
flags.DEFINE_integer("test_limit", _D.test_limit, "Evaluate on the first N test images only.",
                     lower_bound=1)
# Training, per stage.
flags.DEFINE_integer("baseline_epochs", _D.baseline_epochs,
                     "Epochs to train the baseline (default: 8 for a zoo model, 0 for a file).",
                     lower_bound=0)
flags.DEFINE_integer("prune_epochs", _D.prune_epochs, "Epochs of pruning.", lower_bound=0)
flags.DEFINE_integer("retrain_epochs", _D.retrain_epochs,
                     "Epochs of retraining after merging (masks held).", lower_bound=0)
for _stage in ("baseline", "prune", "retrain"):
    flags.DEFINE_integer(f"{_stage}_batch_size", getattr(_D, f"{_stage}_batch_size"),
                         f"Batch size of the {_stage} stage.", lower_bound=1)
    flags.DEFINE_float(f"{_stage}_learning_rate", getattr(_D, f"{_stage}_learning_rate"),
                       f"Learning rate of the {_stage} stage.", lower_bound=0.0)
flags.DEFINE_enum("optimizer", _D.optimizer, list(pipeline.OPTIMIZERS), "The optimizer.")
flags.DEFINE_enum("lr_schedule", _D.lr_schedule, list(pipeline.LR_SCHEDULES),
                  "cosine: each stage's learning rate decays to 0 over its epochs.")
# Pruning.
flags.DEFINE_enum("schedule", _D.schedule, list(pipeline.SCHEDULES), "The sparsity schedule.")
flags.DEFINE_float("initial_sparsity", _D.initial_sparsity, "Polynomial schedule's start.")
flags.DEFINE_float("final_sparsity", _D.final_sparsity, "The sparsity pruning reaches.")
flags.DEFINE_integer("begin_step", _D.begin_step, "Step pruning starts.", lower_bound=0)
flags.DEFINE_integer("end_step", _D.end_step,
                     "Step the polynomial schedule ends; -1: 3/4 of the pruning steps.")
flags.DEFINE_float("power", _D.power, "Polynomial schedule's exponent.")
flags.DEFINE_integer("frequency", _D.frequency, "Steps between mask updates.", lower_bound=1)
flags.DEFINE_string("granularity", _D.granularity,
                    "weight | block | n:m | filter, or per layer class/name: "
                    "'Conv2D:filter,Dense:filter,ip2:none' (none: not pruned; filter never "
                    "removes output classes).")
flags.DEFINE_string("layer_sparsity", _D.layer_sparsity,
                    "Per-layer final sparsities replacing --final_sparsity for those layers: "
                    "'conv1:0.6,conv2:0.6,ip1:0.8'.")
# Merging, shrinking, export.
flags.DEFINE_enum("merge", _D.merge, list(pipeline.MERGES),
                  "Streamline merging: none, exact (BatchNorm, Dropout, linear chains, avg-pool) "
                  "or approximate (also conv->max-pool as a strided conv; retrain after).")
flags.DEFINE_enum("pool_kernel", _D.pool_kernel, list(pipeline.POOL_KERNELS),
                  "Approximate conv->pool merge: 'grown' (kernel k+p-1, starts as the exact "
                  "average-pool merge) or 'original' (kernel k, fewer MACs).")
flags.DEFINE_enum("pool_activation", _D.pool_activation, list(pipeline.POOL_ACTIVATIONS),
                  "The activation a merged max pool leaves on a linear conv (max pooling was "
                  "its only nonlinearity).")
flags.DEFINE_float("shrink_threshold", _D.shrink_threshold,
                   "Remove filters whose largest magnitude is at most this.", lower_bound=0.0)
flags.DEFINE_list("quantize", list(_D.quantize),
                  "Export modes for the compressed model (none, float16, dynamic, int8); the "
                  "first makes compressed.tflite.")
flags.DEFINE_boolean("sparse", _D.sparse, "Use the converter's sparse encoding.")
flags.DEFINE_integer("representative_size", _D.representative_size,
                     "Training images used to calibrate int8.", lower_bound=1)
flags.DEFINE_integer("export_batch_size", _D.export_batch_size,
                     "Fix the .tflite batch dimension (1 drops Flatten's shape ops); default "
                     "dynamic.", lower_bound=1)
flags.DEFINE_boolean("int8_io", _D.int8_io, "With int8: integer input and output too.")
# Benchmark.
flags.DEFINE_integer("bench_threads", _D.bench_threads, "Interpreter threads.", lower_bound=1)
flags.DEFINE_integer("bench_runs", _D.bench_runs, "Timed runs per model.", lower_bound=1)
flags.DEFINE_integer("bench_warmup", _D.bench_warmup, "Untimed runs first.", lower_bound=0)
flags.DEFINE_integer("bench_batch_size", _D.bench_batch_size, "Batch size of the timed runs.",
                     lower_bound=1)
# The run.
flags.DEFINE_string("export_dir", None, "The run folder (default: export/<model name>).")
flags.DEFINE_integer("seed", _D.seed, "Random seed.")
flags.DEFINE_string("tensorboard_dir", None, "TensorBoard folder for pruning summaries (optional).")
flags.DEFINE_boolean("resume", _D.resume,
                     "Skip finished stages whose outputs exist and match these flags.")
flags.DEFINE_enum("stop_after", None, list(pipeline.STAGES), "Stop after this stage.")
flags.DEFINE_integer("verbose", _D.verbose, "Keras fit verbosity: 0 silent, 1 bars, 2 lines.")
flags.DEFINE_boolean("plots", _D.plots, "Draw the PNG plots.")

FLAGS = flags.FLAGS


def config_from_flags(values=FLAGS):
    """A `PipelineConfig` from parsed flag values."""
    kwargs = {f.name: getattr(values, f.name) for f in dataclasses.fields(pipeline.PipelineConfig)}
    if not kwargs["export_dir"]:
        stem = os.path.splitext(os.path.basename(kwargs["model"]))[0] or "run"
        kwargs["export_dir"] = os.path.join("export", stem)
    return pipeline.PipelineConfig(**kwargs)


def main(argv):
    if len(argv) > 1:
        print(f"tfprune: error: unexpected arguments {argv[1:]}: flags look like --name=value.",
              file=sys.stderr)
        return 2
    try:
        pipeline.run(config_from_flags())
    except TfpruneError as e:
        print(f"tfprune: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tfprune: interrupted: finished stages are kept; rerun with --resume.",
              file=sys.stderr)
        return 130
    return 0


def run():
    """The console script's entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
