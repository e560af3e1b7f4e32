"""Host latency of `.tflite` files on TensorFlow Lite Micro's reference kernels, interleaved.

TFLM's interpreter built for the host (the `tflite-micro` package) runs its portable
reference kernels: its times say how the files compare on the same kernels a
microcontroller without optimized kernels runs, not how fast a microcontroller is. They
are host figures and are labelled so. The rounds interleave the files as `compare` does.
"""

import numpy as np

from tfprune import micro
from tfprune.bench.latency import Timing, _check_compare_args, _interleaved
from tfprune.tflite.interpreter import file_sizes

HOST_NOTE = "host CPU, TFLite Micro reference kernels: a host figure, not a microcontroller's"


def compare_tflm(*paths, runs=200, warmup=20):
    """Latency of `.tflite` files on TFLite Micro's interpreter, interleaved A B A B per round.

    Each file gets a TFLM interpreter with a random input; after `warmup` interleaved
    rounds, each of `runs` rounds times one `invoke()` of every file in order, and each
    file's speedup over the first is taken per round (the first's time / the file's).

    Args:
        *paths: Paths to one or more `.tflite` files TFLM can run; the first is the
            reference.
        runs: Integer, timed rounds, defaults to `200`.
        warmup: Integer, untimed rounds first, defaults to `20`.

    Returns:
        A list of `tfprune.bench.Timing`, one per file, with `delegate="tflm"` and a note
        that the figures are the host's.

    Raises:
        TflmUnavailable: the `tflite-micro` package cannot be imported.
        TfpruneError: no path, bad counts, or a file TFLM cannot run.

    Example:

    >>> x = np.random.default_rng(0).random((32, 16), dtype="float32")
    >>> files = [tfprune.export.to_tflite(
    ...     keras.Sequential([keras.Input((16,)), keras.layers.Dense(units)]),
    ...     f"dense{units}.tflite", target="tflm", representative_data=x) for units in (64, 8)]
    >>> timings = tfprune.bench.compare_tflm(*files, runs=20, warmup=2)
    >>> [(t.delegate, t.speedup > 0) for t in timings]
    [('tflm', True), ('tflm', True)]
    """
    _check_compare_args(paths, 1, 1, runs, warmup, ("builtin",))
    paths = [str(p) for p in paths]
    calls = [micro.invoker(p) for p in paths]
    us = _interleaved(calls, runs, warmup)
    speedups = us[:, :1] / us
    timings = []
    for i, path in enumerate(paths):
        p10, med, p90 = np.percentile(us[:, i], [10, 50, 90])
        s10, smed, s90 = np.percentile(speedups[:, i], [10, 50, 90])
        timings.append(Timing(path, "tflm", "tflm", HOST_NOTE, float(med), float(p10),
                              float(p90), float(smed), float(s10), float(s90),
                              *file_sizes(path)))
    return timings
