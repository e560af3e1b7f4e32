"""The public names, from the one table in `tfprune/__init__.py` (`PUBLIC`): each resolves,
`__all__` is the table, and the modules that moved answer to their old names as the same
module (imports and attributes alike)."""

import importlib
import subprocess
import sys

import pytest

import tfprune

pytestmark = pytest.mark.backend_neutral


def test_all_is_the_table_and_every_name_resolves():
    assert tfprune.__all__ == ["__version__", *tfprune.PUBLIC]
    for name, where in tfprune.PUBLIC.items():
        module, _, attribute = where.partition(":")
        expected = importlib.import_module(module)
        expected = getattr(expected, attribute) if attribute else expected
        assert getattr(tfprune, name) is expected, name
    assert set(tfprune.__all__) <= set(dir(tfprune))


@pytest.mark.parametrize("old, new", [
    ("tfprune.export", "tfprune.tflite"),
    ("tfprune.interpreter", "tfprune.tflite.interpreter"),
    ("tfprune.int4", "tfprune.tflite.int4"),
    ("tfprune.selective", "tfprune.tflite.selective"),
    ("tfprune.tflm", "tfprune.micro"),
    ("tfprune.csource", "tfprune.micro.csource"),
    ("tfprune.masks", "tfprune.pruning.masks"),
    ("tfprune.schedules", "tfprune.pruning.schedules"),
    ("tfprune.wrapper", "tfprune.pruning.wrapper"),
    ("tfprune.groups", "tfprune.pruning.groups"),
    ("tfprune.callbacks", "tfprune.pruning.callbacks"),
    ("tfprune.batchnorm", "tfprune.pruning.batchnorm"),
])
def test_a_moved_module_is_the_same_module_by_its_old_name(old, new):
    moved, real = importlib.import_module(old), importlib.import_module(new)
    assert moved is real and real.__name__ == new and real.__spec__.name == new
    assert getattr(tfprune, old.rpartition(".")[2]) is real


def test_the_documented_api_keeps_working():
    assert tfprune.export.to_tflite is tfprune.tflite.convert.to_tflite
    assert tfprune.export.evaluate is tfprune.tflite.run.evaluate
    assert tfprune.tflm.measure_arena is tfprune.micro.interpreter.measure_arena
    from tfprune.interpreter import parse

    from tfprune.tflite.interpreter import parse as same

    assert parse is same
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        tfprune.nothing  # noqa: B018


def test_importing_tfprune_loads_no_keras():
    code = "import sys, tfprune, tfprune.pipeline; print('keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("path", ["tfprune.micro.csource.write", "tfprune.csource.write",
                                  "tfprune.tflite.to_tflite", "tfprune.export.to_tflite"])
def test_a_documented_dotted_name_resolves_in_a_fresh_process(path):
    # In a fresh process nothing has imported the submodule yet (the README's examples).
    code = f"import tfprune; print(callable({path}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "True"
