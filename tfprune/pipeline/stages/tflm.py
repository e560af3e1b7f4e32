"""The `tflm` stage of a `--target=tflm` run: the files measured on TensorFlow Lite Micro.

Before anything trains, `check` converts the untrained model to full int8 and checks every
op against TFLM's op table, so that a layer TFLM cannot run stops the run in seconds, named.
After the export, `measure` runs the float baseline, the full-int8 baseline and
`compressed.tflite` on TFLM's interpreter: flash (the file's bytes) and the tensor arena its
recording allocator reports for all three; for the two int8 files, the accuracy on the test
set through TFLM, compared image for image with LiteRT's on the same file (its builtin
kernels, and XNNPACK), and the host latency on TFLM's reference kernels, interleaved. With
`max_arena`, a compressed file that needs more stops the run, naming what fills the arena;
with `emit_c` it is written as C source. Without the `tflite-micro` package the stage says
so in one line and the run keeps its LiteRT figures.

This module stays light to import, as the other stage modules does: the work imports what it needs.
"""

import tempfile
from pathlib import Path

import numpy as np

from tfprune.errors import TfpruneError, UnsupportedModelError
from tfprune.pipeline.stage import Stage
from tfprune.pipeline.stages.baseline import BASELINE
from tfprune.pipeline.stages.export import tflm_files
from tfprune.pipeline.stages.tflm_report import PART

C_FILES = ("model_data.h", "model_data.cc")
_CHECK_SAMPLES = 16


def enabled(config):
    """Whether a run has the `tflm` stage: with `--target=tflm`."""
    return config.target == "tflm"


def c_files(config):
    """The C source files the stage writes: with `emit_c`, `model_data.h` and `.cc`."""
    return C_FILES if config.emit_c else ()


def check(context):
    """Converts the untrained model to full int8 for TFLM and checks every op, before training.

    Raises:
        UnsupportedModelError: an op TFLM lacks, or a hybrid op, named with its layer.
    """
    from tfprune import tflite

    x = context.train[0][:_CHECK_SAMPLES]
    with tempfile.TemporaryDirectory() as folder:
        try:
            tflite.to_tflite(context.source_model, Path(folder) / "baseline_int8.tflite",
                             target="tflm", representative_data=x,
                             calibration_samples=_CHECK_SAMPLES)
        except UnsupportedModelError as e:
            raise UnsupportedModelError(f"--target=tflm, checked before training: {e}") from None


def measure(context, baseline, baseline_int8, compressed):
    """Runs the stage: see the module docstring.

    Args:
        context: The run's `Context`.
        baseline: File name of the float32 baseline.
        baseline_int8: File name of the full-int8 baseline.
        compressed: File name of the full-int8 compressed file.

    Returns:
        `(outputs, result, figure)`: the C files written; `{"files": {name: facts}}` (flash,
        arena and its parts, TFLM accuracy, images whose class or output differs from
        LiteRT's builtin kernels' and XNNPACK's, host latency and speedup), the
        `tflite-micro` version and the latency settings; a one-line summary.

    Raises:
        TfpruneError: the compressed file's arena exceeds `max_arena` (naming what fills it).
    """
    from tfprune import micro
    from tfprune.bench.tflm import HOST_NOTE

    config, folder = context.config, Path(context.folder)
    missing = micro.available()
    if missing:
        outputs = _write_c(config, folder, compressed)  # its header says: not measured
        return outputs, {"files": {}, "unavailable": missing}, (
            f"{missing} TFLM figures not measured; the LiteRT figures stand.")
    arenas = {name: micro.measure_arena(folder / name)
              for name in (baseline, baseline_int8, compressed)}
    _check_arena(config, folder / compressed, arenas[compressed])
    files = {name: {"flash_bytes": (folder / name).stat().st_size, "arena_bytes": arena.total,
                    "arena_activations": arena.activations,
                    "arena_persistent": arena.persistent, "target": "tflm"}
             for name, arena in arenas.items()}
    for name in (baseline_int8, compressed):
        files[name].update(_accuracy(folder / name, context.test))
    timings = _latency(config, folder, baseline_int8, compressed)
    for name, timing in zip((baseline_int8, compressed), timings, strict=True):
        files[name].update(tflm_latency_us=timing.median_us, tflm_speedup=timing.speedup,
                           tflm_speedup_over=baseline_int8)
    outputs = _write_c(config, folder, compressed, arenas[compressed])
    base, comp = files[baseline_int8], files[compressed]
    result = {"files": files, "version": micro.version(), "rounds": config.tflm_runs,
              "latency_note": HOST_NOTE}
    return outputs, result, (
        f"TFLM: flash {base['flash_bytes']:,} -> {comp['flash_bytes']:,} B, arena "
        f"{base['arena_bytes']:,} -> {comp['arena_bytes']:,} B "
        f"({base['arena_bytes'] / comp['arena_bytes']:.1f}x), accuracy "
        f"{base['tflm_accuracy']:.2%} -> {comp['tflm_accuracy']:.2%} ({_agreement(base, comp)})")


def _agreement(*files):
    """How the two files' TFLM classes compare with LiteRT's, image for image, in words."""
    differ = {kind: sum(facts[f"tflm_{kind}_class_mismatches"] for facts in files)
              for kind in ("builtin", "xnnpack")}
    text = ("= LiteRT builtin image for image" if not differ["builtin"] else
            f"{differ['builtin']} images classed otherwise than on LiteRT builtin")
    if differ["xnnpack"]:
        text += f"; {differ['xnnpack']} otherwise than on XNNPACK"
    return text


def _check_arena(config, path, arena):
    """With `max_arena`: a compressed file that needs more stops the run, saying what fills it."""
    if config.max_arena is None or arena.total <= config.max_arena:
        return
    from tfprune import micro

    peak = micro.activation_peak(path)
    raise TfpruneError(
        f"{path.name} needs a {arena.total:,}-byte tensor arena on TFLite Micro, more than "
        f"max_arena: its activations peak at {peak}; prune more filters of that layer and "
        "the one before (or merge its pooling into a strided conv), or raise max_arena. "
        f"Received: max_arena={config.max_arena}")


def _accuracy(path, test):
    """TFLM's test accuracy on a file, and how many images LiteRT classes otherwise.

    LiteRT's builtin kernels implement the int8 arithmetic TFLM's reference kernels do
    (their rounding may still differ by a step, in a few images); XNNPACK (what verify
    measures with) rounds its own way, more often. Images classed otherwise are counted for
    both, and so are the images whose int8 outputs differ at all.
    """
    from tfprune import micro, tflite
    from tfprune.tflite.interpreter import classes

    x, y = test
    on_micro = micro.predict(path, x, raw=True).reshape(len(x), -1)
    facts = {"tflm_accuracy": float(np.mean(classes(on_micro) == y)),
             "tflm_test_images": int(len(y))}
    for delegate in ("builtin", "xnnpack"):
        on_litert = tflite.predict(path, x, raw=True, delegate=delegate).reshape(len(x), -1)
        facts[f"tflm_{delegate}_class_mismatches"] = int(np.sum(classes(on_micro)
                                                                != classes(on_litert)))
        facts[f"tflm_{delegate}_output_mismatches"] = int(np.sum(np.any(on_micro != on_litert,
                                                                        axis=1)))
    return facts


def _latency(config, folder, *names):
    from tfprune import bench

    return bench.compare_tflm(*(folder / name for name in names), runs=config.tflm_runs,
                              warmup=max(1, config.tflm_runs // 10))


def _write_c(config, folder, compressed, arena=None):
    """With `emit_c`: `compressed.tflite` as `model_data.h` and `model_data.cc`."""
    if not config.emit_c:
        return []
    from tfprune.micro import csource

    csource.write(folder / compressed, folder, name=Path(C_FILES[0]).stem, language="cc",
                  arena=arena)
    return list(C_FILES)


def _tflm(context):
    return measure(context, f"{BASELINE.model}.tflite", *tflm_files(context.config))


# Only with --target=tflm. Its check converts the untrained model before any training.
TFLM = Stage("tflm", _tflm, check=check, enabled=enabled, writes=c_files, report=PART,
             reads=lambda config: (f"{BASELINE.model}.tflite", *tflm_files(config)),
             keys=("test_limit", "tflm_runs", "max_arena", "emit_c"))
