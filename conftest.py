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

