"""`PipelineConfig`: every setting of a run, its default, its allowed values, its help.

Each field is declared once, with its help text, its choices or its numeric `Range`; the
command line (`tfprune.cli`) makes one flag per field from the same declaration, so flag
defaults, flag bounds and `validate()` (`tfprune.pipeline.validation`) cannot disagree.
This module imports neither Keras nor TensorFlow: a bad setting is reported before they
load.
"""

import dataclasses
import os

from tfprune import options
from tfprune.pipeline import validation
from tfprune.pipeline.validation import (
    PER_LAYER_GRANULARITIES,
    distills,
    parse_granularity,
    parse_layer_sparsity,
    search_target,
    value_type,
)

# The checks and parsers live in `validation`; their old names here keep working.
__all__ = ["PER_LAYER_GRANULARITIES", "PipelineConfig", "Range", "distills",
           "parse_granularity", "parse_layer_sparsity", "search_target", "setting",
           "value_type"]


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: from `low` to `high`, each end open or closed.

    Args:
        low: Number or `None` (no lower end).
        high: Number or `None` (no upper end).
        low_open: Boolean, exclude `low` itself, defaults to `False`.
        high_open: Boolean, exclude `high` itself, defaults to `False`.

    Example:

    >>> from tfprune.pipeline.config import Range
    >>> sparsity = Range(0.0, 1.0, high_open=True)
    >>> str(sparsity), sparsity.contains(0.0), sparsity.contains(1.0)
    ('in [0.0, 1.0)', True, False)
    """

    low: float = None
    high: float = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value):
        """Whether `value` lies in the range."""
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self):
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{self.low}, "
                    f"{self.high}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        return f"{'<' if self.high_open else '<='} {self.high}"


def setting(default, help, *, choices=None, range=None):
    """A `PipelineConfig` field: its default, one line of help, and its allowed values.

    Args:
        default: The default value (the command line's too).
        help: String, the flag's help and the field's documentation.
        choices: Tuple of allowed values (for a tuple field: of each item), defaults to
            `None` (any value).
        range: A `Range` for a numeric field, defaults to `None` (any value).

    Returns:
        A `dataclasses.field`.
    """
    return dataclasses.field(default=default,
                             metadata={"help": help, "choices": choices, "range": range})


_AT_LEAST_0 = Range(0)
_AT_LEAST_1 = Range(1)
_POSITIVE = Range(0.0, low_open=True)
_FRACTION = Range(0.0, 1.0, high_open=True)  # as `validation.parse_layer_sparsity` checks


@dataclasses.dataclass
class PipelineConfig:
    """Everything a run needs; each field is also a command-line flag of the same name.

    Build one directly (tests, scripts) or from flags (`tfprune.cli`), then pass it to
    `tfprune.pipeline.run`. `validate()` checks every setting without loading anything.
    The fields are listed below with the help text the flags show.

    Example:

    >>> from tfprune.pipeline import PipelineConfig
    >>> config = PipelineConfig(final_sparsity=0.9, quantize="int8,float16").validate()
    >>> config.quantize, config.export_dir
    (('int8', 'float16'), 'export/lenet5')
    >>> PipelineConfig(final_sparsity=1.5).validate()
    Traceback (most recent call last):
    ...
    tfprune.errors.TfpruneError: Expected final_sparsity in [0.0, 1.0). Received: final_sparsity=1.5
    """

    # Model and data.
    model: str = setting("lenet5", "A zoo model (lenet5, lenet5_classic, mobilenet_tiny, "
                                   "mobilenet_v2) or a .keras file.")
    unsafe_load: bool = setting(False, "Load the .keras file with safe_mode=False (runs Lambda "
                                       "code: trusted files only).")
    dataset: str = setting("mnist", "The dataset: mnist, tfds:NAME[/CONFIG] (TensorFlow "
                                    "Datasets), folder:PATH (one sub-folder of images per "
                                    "class; PATH/train + PATH/test, or one folder whose test "
                                    "set is held out by validation_split) or npz:PATH "
                                    "(x_train, y_train, x_test, y_test).")
    data_dir: str | None = setting(None, "Folder with the dataset files: MNIST's IDX files "
                                         "(default: $TFPRUNE_DATA_DIR, the cache, TFDS) or the "
                                         "TFDS data folder.")
    train_split: str = setting("train", "tfds: the training split, in TFDS split syntax "
                                        "(e.g. 'train[:90%]', 'train+validation').")
    test_split: str = setting("test", "tfds: the test split, in TFDS split syntax.")
    rescale: str = setting("auto", "Scaling of pixel values: unit ([0, 1]), symmetric "
                                   "([-1, 1]), none (0-255); auto: unit, unless the model "
                                   "starts with its own Rescaling or Normalization layer.",
                           choices=options.RESCALES)
    train_limit: int | None = setting(None, "Train on the first N images only.",
                                      range=_AT_LEAST_1)
    test_limit: int | None = setting(None, "Evaluate on the first N test images only.",
                                     range=_AT_LEAST_1)
    validation_split: float = setting(
        0.1, "Fraction of the training images held out (seeded) as the validation split: "
             "every decision and per-stage accuracy uses it; the test set only measures the "
             "final .tflite files. 0: no validation split (per-stage accuracy not measured). "
             "A folder:PATH without train/ and test/ first holds out this share as its test "
             "set.",
        range=Range(0.0, 0.5))
    # Training, per stage.
    baseline_epochs: int | None = setting(
        None, "Epochs to train the baseline (default: 8 for a zoo model, 0 for a file).",
        range=_AT_LEAST_0)
    prune_epochs: int | None = setting(
        None, "Epochs of pruning (default: sized to the cut, about 1,000 x sparsity steps, "
              "1 to 10 epochs).", range=_AT_LEAST_0)
    retrain_epochs: int | None = setting(
        None, "Epochs of retraining, masks held (default: until the validation accuracy "
              "stops improving for 3 epochs, at most twice the prune epochs, the best epoch "
              "kept).", range=_AT_LEAST_0)
    baseline_batch_size: int = setting(128, "Batch size of the baseline stage.",
                                       range=_AT_LEAST_1)
    prune_batch_size: int = setting(128, "Batch size of the prune stage.", range=_AT_LEAST_1)
    retrain_batch_size: int = setting(128, "Batch size of the retrain stage.",
                                      range=_AT_LEAST_1)
    optimizer: str = setting("adam", "The optimizer.", choices=options.OPTIMIZERS)
    lr_schedule: str = setting("cosine", "cosine: each stage's learning rate decays to 0 over "
                                         "its epochs.", choices=options.LR_SCHEDULES)
    baseline_learning_rate: float = setting(1e-3, "Learning rate of the baseline stage.",
                                            range=_POSITIVE)
    prune_learning_rate: float = setting(1e-3, "Learning rate of the prune stage.",
                                         range=_POSITIVE)
    retrain_learning_rate: float = setting(
        1e-3, "Learning rate of the retrain stage (with the default budget it falls by 0.3 "
              "after each epoch that does not improve the validation accuracy).",
        range=_POSITIVE)
    # Pruning.
    schedule: str = setting("polynomial", "The sparsity schedule (constant uses "
                                          "final_sparsity).", choices=options.SCHEDULES)
    initial_sparsity: float = setting(0.0, "Polynomial schedule's start.", range=_FRACTION)
    final_sparsity: float = setting(0.8, "The sparsity pruning reaches.", range=_FRACTION)
    begin_step: int = setting(0, "Step pruning starts.", range=_AT_LEAST_0)
    end_step: int = setting(-1, "Step the polynomial schedule ends; -1: 3/4 of the pruning "
                                "steps, on a mask update.", range=Range(-1))
    power: float = setting(3.0, "Polynomial schedule's exponent.")
    frequency: int | None = setting(
        None, "Steps between mask updates (default: sized to the stage, about 32 updates "
              "before end_step, each a small share).", range=_AT_LEAST_1)
    batchnorm_images: int = setting(
        1024, "Training images the BatchNorm statistics are recomputed on (adaptive "
              "BatchNorm) before every evaluation of a trained or pruned model; 0: off.",
        range=_AT_LEAST_0)
    granularity: str = setting(
        "filter", "weight | block | n:m | filter, or per layer class/name: "
                  "'Conv2D:filter,Dense:filter,ip2:none' (none: not pruned; filter never "
                  "removes output classes).")
    layer_sparsity: str = setting("", "Per-layer final sparsities replacing final_sparsity "
                                      "for those layers: 'conv1:0.6,conv2:0.6,ip1:0.8'.")
    # Merging, shrinking, export.
    merge: str = setting(
        "exact", "Streamline merging: none, exact (BatchNorm, Dropout, linear chains, "
                 "avg-pool) or approximate (also conv->max-pool as a strided conv; retrain "
                 "after).", choices=options.MERGES)
    pool_kernel: str = setting(
        "grown", "Approximate conv->pool merge: 'grown' (kernel k+p-1, starts as the exact "
                 "average-pool merge) or 'original' (kernel k, fewer MACs).",
        choices=options.POOL_KERNELS)
    pool_activation: str = setting(
        "relu", "The activation a merged max pool leaves on a linear conv (max pooling was "
                "its only nonlinearity).", choices=options.POOL_ACTIVATIONS)
    fold_after_retrain: bool = setting(
        True, "With --merge=exact: merge after the retrain stage, so BatchNorm stays "
              "through retraining (exact merges need no retraining); approximate merges "
              "always come before it.")
    shrink_threshold: float = setting(0.0, "Remove filters whose largest magnitude is at most "
                                           "this.", range=Range(0.0))
    quantize: tuple = setting(("int8",), "Export modes for the compressed model; the first "
                                         "makes compressed.tflite, others "
                                         "compressed_<mode>.tflite. Any of them may meet "
                                         "the targets (the search costs the nearest).",
                              choices=options.QUANTIZE_MODES)
    sparse: bool = setting(True, "Use the converter's sparse encoding where it pays: only if "
                                 "the file is smaller and no op falls back from XNNPACK (the "
                                 "report says which and why).")
    representative_size: int = setting(500, "Training images used to calibrate int8.",
                                       range=_AT_LEAST_1)
    export_batch_size: int | None = setting(
        None, "Fix the .tflite batch dimension (1 drops Flatten's shape ops); default "
              "dynamic.", range=_AT_LEAST_1)
    int8_io: bool | None = setting(None, "With int8: integer input and output too (default: "
                                         "for --target=tflm's files, not for the others).")
    int8_float_layers: str = setting(
        "none", "With int8: layers left in float by the converter's selective quantization: "
                "'auto' (convolutions on one input channel, which XNNPACK runs faster in "
                "float), comma-separated layer names, or 'none' (every op int8, as "
                "integer-only hardware needs). Not with --target=tflm.")
    int4_form: str = setting("mixed", "With int4: how the 4-bit weights are stored and run "
                                      "(see tfprune.int4).", choices=options.INT4_FORMS)
    # TensorFlow Lite Micro.
    target: str = setting(
        "litert", "The interpreter compressed.tflite is for. tflm (TensorFlow Lite Micro): it "
                  "and baseline_int8.tflite are full int8 without sparse encoding, every op "
                  "is checked before training, and flash, arena, accuracy and host latency "
                  "are measured on TFLM's interpreter.", choices=options.TARGETS)
    emit_c: bool = setting(False, "With --target=tflm: also write compressed.tflite as C "
                                  "source (model_data.h, model_data.cc).")
    max_arena: int | None = setting(None, "With --target=tflm: fail when compressed.tflite "
                                          "needs a larger TFLM tensor arena (bytes).",
                                    range=_AT_LEAST_1)
    tflm_runs: int = setting(100, "With --target=tflm: timed rounds of the host latency on "
                                  "TFLM's reference kernels (after a tenth as many untimed).",
                             range=_AT_LEAST_1)
    # Benchmark.
    bench_threads: int = setting(1, "Interpreter threads.", range=_AT_LEAST_1)
    bench_runs: int = setting(300, "Timed rounds (each runs both files once).",
                              range=_AT_LEAST_1)
    bench_warmup: int = setting(30, "Untimed rounds first.", range=_AT_LEAST_0)
    bench_batch_size: int = setting(1, "Batch size of the timed runs.", range=_AT_LEAST_1)
    # Search: any target turns on the search stage, which finds per-layer widths (see
    # tfprune.search); the accuracy bound also judges the run.
    target_size: str = setting(
        "", "Size target of compressed.tflite: a ratio of the baseline file ('50x') or bytes "
            "('40KB'; KiB for 1024s).")
    target_speedup: str = setting(
        "", "Speed target: the baseline's LiteRT latency / compressed.tflite's ('10x'), "
            "measured with the bench_* settings.")
    target_latency: float | None = setting(
        None, "Latency target of compressed.tflite in µs (median, bench_* settings).",
        range=_POSITIVE)
    target_macs: str = setting("", "MAC target of the compressed model: a ratio ('8x') or "
                                   "a count ('300K').")
    max_accuracy_drop: float = setting(
        0.5, "Percentage points of accuracy the compressed model may lose: the search's "
             "bound on the validation split, and on the test set (the .tflite files) what "
             "the run must keep to be reported as earned.", range=Range(0.0))
    search_time: float = setting(30.0, "Minutes the search may take (sensitivity, costs, "
                                       "training candidates to check them).", range=_POSITIVE)
    search_checks: int = setting(
        0, "Candidates the search may train to check them (0: as many as search_time "
           "allows), the allocation's uniform reference included. A count, unlike a time, "
           "gives the same search on a busy machine.",
        range=_AT_LEAST_0)
    search_method: str = setting(
        "auto", "How the search narrows: 'greedy' (one layer a step, each proposal "
                "fine-tuned), 'allocate' (every channel group at once, from its sensitivity) "
                "or 'auto' (allocate above 8 searched layers).", choices=options.SEARCH_METHODS)
    search_step: float = setting(0.85, "Search grid: each width at most this fraction of the "
                                       "one above.", range=Range(0.0, 1.0, True, True))
    search_finetune_steps: int = setting(
        100, "Training steps after each single-layer cut of the search's sensitivity "
             "analysis (batch and rate of the prune stage; 0: none).", range=_AT_LEAST_0)
    distill: bool | None = setting(
        None, "Train the prune and retrain stages to match the baseline too (knowledge "
              "distillation; default: on when a target is set).")
    distill_temperature: float = setting(4.0, "Distillation temperature.", range=_POSITIVE)
    distill_weight: float = setting(0.5, "The distillation term's share of the loss.",
                                    range=Range(0.0, 1.0))
    # The run.
    export_dir: str | None = setting(None, "The run folder (default: export/<model name>).")
    seed: int = setting(0, "Random seed (Python, NumPy and the backend).")
    tensorboard_dir: str | None = setting(None, "TensorBoard folder for pruning summaries "
                                                "(optional).")
    resume: bool = setting(False, "Skip finished stages whose outputs exist and match these "
                                  "settings.")
    # The runner checks the name against the stages of the run (`runner.check_stages`): the
    # settings know no stage.
    stop_after: str | None = setting(None, "Stop after this stage (a name the run logs and "
                                           "records in stages.json).")
    distribute: str = setting(
        "none", "Train under tf.distribute: none; mirrored (every GPU, or CPU, of this "
                "machine); multi_worker (several machines, each started with the same command "
                "and its own TF_CONFIG; only the chief writes the run folder).",
        choices=options.DISTRIBUTE)
    verbose: int = setting(1, "Keras fit verbosity: 0 silent, 1 bars, 2 lines.",
                           range=Range(0, 2))
    plots: bool = setting(True, "Draw the PNG plots.")
    # What the run must earn (tfprune.verdict, with max_accuracy_drop above): a run that
    # falls short says so, exit 3.
    max_stage_drop: float = setting(
        20.0, "Percentage points of validation accuracy a retrained or shrunk model may "
              "lose against the baseline's before the run stops.", range=Range(0.0))
    keep_going: bool = setting(False, "Go on after a baseline at chance level or a stage "
                                      "that lost more than max_stage_drop (the verdict "
                                      "still says so); never after a non-finite model.")

    def __post_init__(self):
        if isinstance(self.quantize, str):
            self.quantize = tuple(m.strip() for m in self.quantize.split(",") if m.strip())
        self.quantize = tuple(self.quantize)
        if not self.export_dir:
            stem = os.path.splitext(os.path.basename(self.model or ""))[0] or "run"
            self.export_dir = os.path.join("export", stem)

    def validate(self):
        """Checks every setting, loading nothing; returns `self`.

        Raises:
            TfpruneError: the first setting that cannot work, named with its value.
        """
        validation.validate(self)
        return self


def _document(cls):
    """Lists the fields with their help in the class docstring (one source for both)."""
    lines = ["    Attributes:"] + [
        f"        {field.name}: {field.metadata['help']} Defaults to `{field.default!r}`."
        for field in dataclasses.fields(cls)]
    head, example = cls.__doc__.split("    Example:")
    cls.__doc__ = head + "\n".join(lines) + "\n\n    Example:" + example
    return cls


_document(PipelineConfig)
