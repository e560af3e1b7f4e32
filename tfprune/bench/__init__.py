"""Measuring models: parameter and MAC counts, file sizes, interpreter latency A/B (LiteRT;
TFLite Micro on the host), where a file's time goes op by op (`profile`), and why a
compressed file is slower (`slower`)."""

from tfprune.bench import slower  # noqa: F401
from tfprune.bench.counts import Counts, LayerCount, count  # noqa: F401
from tfprune.bench.latency import Comparison, Timing, compare  # noqa: F401
from tfprune.bench.profiler import OpTime, Profile, profile  # noqa: F401
from tfprune.bench.tflm import compare_tflm  # noqa: F401
from tfprune.tflite.interpreter import file_sizes  # noqa: F401
