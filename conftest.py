"""pytest set-up for the docstring examples, which run as tests (`--doctest-modules`).

Every example sees `tfprune`, `keras` and `np` without importing them, starts from the same
random state, and runs in its own empty temporary folder, so the files it writes
(`model.tflite`, ...) go nowhere else.
"""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# What tfprune caches (the search's latency table) goes to a folder of this session's own,
# not the user's ~/.cache.
os.environ.setdefault("TFPRUNE_CACHE_DIR", tempfile.mkdtemp(prefix="tfprune-test-cache-"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tfprune  # noqa: E402


@pytest.fixture(autouse=True)
def _example_setup(request):
    if isinstance(request.node, pytest.DoctestItem):
        request.getfixturevalue("doctest_namespace").update(tfprune=tfprune, keras=keras, np=np)
        request.getfixturevalue("monkeypatch").chdir(request.getfixturevalue("tmp_path"))
        keras.utils.set_random_seed(0)



# The docstring examples that convert, run or time `.tflite` files, train or search for
# seconds: marked `slow` like the tests that do, so `pytest -m "not slow"` leaves them out.
SLOW_EXAMPLES = {
    "tfprune.bench.latency.compare", "tfprune.bench.profiler.profile",
    "tfprune.bench.slower.reason", "tfprune.bench.tflm.compare_tflm",
    "tfprune.pruning.callbacks.AdaptiveBatchNorm", "tfprune.pruning.callbacks.UpdatePruningStep",
    "tfprune.distill.Distiller", "tfprune.models.mobilenet_v2",
    "tfprune.models.mobilenet_v3_large", "tfprune.pruning.model.prune",
    "tfprune.micro.activations.activation_peak", "tfprune.micro.csource.write",
    "tfprune.micro.interpreter.measure_arena", "tfprune.micro.ops.problems",
    "tfprune.search.latency_table.LatencyTable", "tfprune.search.searcher.widths",
    "tfprune.tflite.convert.to_tflite", "tfprune.tflite.convert.to_tflite_where_sparse_pays",
    "tfprune.tflite.inspection.inspect", "tfprune.tflite.int4.quantize",
    "tfprune.tflite.run.correct", "tfprune.tflite.run.evaluate", "tfprune.tflite.run.predict",
    "tfprune.tflite.runs_on.runtimes",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name in SLOW_EXAMPLES:
            item.add_marker(pytest.mark.slow)
