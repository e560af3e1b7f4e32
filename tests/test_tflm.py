"""TensorFlow Lite Micro: the op check, full-int8 export, arena and accuracy on TFLM's own
interpreter, and the C source (compiled, its bytes read back)."""

import importlib.util
import os
import re
import shutil
import subprocess

import keras
import numpy as np
import pytest

from tfprune import export, micro
from tfprune.errors import TfpruneError, UnsupportedModelError
from tfprune.micro import csource
from tfprune.tflite.interpreter import classes

# The op check and the C export work without the tflite-micro package; what runs a file on
# TFLM's interpreter needs it.
needs_tflm = pytest.mark.skipif(importlib.util.find_spec("tflite_micro") is None,
                                reason="the tflite-micro package (tfprune[tflm]) is not "
                                       "installed")


def _conv_net(filters=4, name="net"):
    return keras.Sequential([keras.Input((12, 12, 1)),
                             keras.layers.Conv2D(filters, 3, strides=2, activation="relu",
                                                 name="conv"),
                             keras.layers.Flatten(name="flatten"),
                             keras.layers.Dense(64, activation="relu", name="fc"),
                             keras.layers.Dense(3, activation="softmax", name="out")], name=name)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((64, 12, 12, 1), dtype="float32")


@pytest.fixture(scope="module")
def int8_file(tmp_path_factory, images):
    keras.utils.set_random_seed(3)
    return export.to_tflite(_conv_net(), tmp_path_factory.mktemp("tflm") / "m.tflite",
                            target="tflm", representative_data=images)


@needs_tflm
def test_op_table_names_only_ops_the_installed_runtime_registers():
    """Our table against the TFLM build the package ships: each op has its kernel there."""
    from tflite_micro.python.tflite_micro import runtime

    library = os.path.join(os.path.dirname(runtime.__file__), "_runtime.so")
    symbols = open(library, "rb").read()
    missing = sorted(op for op in micro.MICRO_OPS if f"Register_{op}E".encode() not in symbols)
    assert not missing
    assert b"Register_DENSIFYE" not in symbols and "DENSIFY" not in micro.MICRO_OPS
    assert "CONV_2D" in micro.MICRO_OPS and "GELU" not in micro.MICRO_OPS


@pytest.mark.slow
def test_tflm_export_is_full_int8_with_int8_io_batch_1(int8_file):
    info = export.inspect(int8_file)
    assert [t.split()[1:] for t in info.inputs + info.outputs] == [["1x12x12x1", "int8"],
                                                                  ["1x3", "int8"]]
    assert not info.densify and "QUANTIZE" not in info.ops and "DEQUANTIZE" not in info.ops
    assert micro.problems(int8_file) == [] and micro.int8_problems(int8_file) == []


@pytest.mark.slow
@needs_tflm
def test_float_io_is_an_option_and_still_full_int8_inside(tmp_path, images):
    path = export.to_tflite(_conv_net(), tmp_path / "f.tflite", target="tflm", int8_io=False,
                            representative_data=images)
    info = export.inspect(path)
    assert info.inputs[0].endswith("float32") and info.ops["QUANTIZE"] == 1
    micro.check(path)  # QUANTIZE in, DEQUANTIZE out: the model between computes in int8
    assert micro.measure_arena(path).total > 0


@pytest.mark.slow
@needs_tflm
def test_hybrid_file_is_refused_naming_op_layer_and_fix(tmp_path):
    path = export.to_tflite(_conv_net(), tmp_path / "dynamic.tflite", quantize="dynamic")
    with pytest.raises(UnsupportedModelError) as caught:
        micro.check(path, full_int8=False)
    message = str(caught.value)
    assert "\n" not in message
    assert re.search(r"FULLY_CONNECTED \(op \d+, layer fc\) is hybrid \(dynamic-range\)",
                     message)
    assert "export full int8" in message
    # The interpreter agrees: TFLM cannot allocate it either.
    with pytest.raises(UnsupportedModelError, match="hybrid"):
        micro.measure_arena(path)


@pytest.mark.slow
def test_densify_file_is_refused_naming_op_layer_and_fix(tmp_path, images):
    model = _conv_net()
    kernel, bias = model.get_layer("fc").get_weights()
    kernel[np.random.default_rng(0).random(kernel.shape) < 0.9] = 0.0
    model.get_layer("fc").set_weights([kernel, bias])
    path = export.to_tflite(model, tmp_path / "sparse.tflite", quantize="int8", sparse=True,
                            representative_data=images, int8_io=True)
    assert export.inspect(path).densify
    with pytest.raises(UnsupportedModelError, match=r"DENSIFY \(op \d, layer fc\) expands the "
                                                    r"converter's sparse encoding.*sparse=False"):
        micro.check(path)
    runs = {r.name: r for r in export.runtimes(path)}
    assert runs["TFLite Micro"].runs == "no" and "DENSIFY" in runs["TFLite Micro"].detail
    assert runs["LiteRT builtin"].runs == "yes"


def test_an_op_tflm_lacks_stops_the_export_before_the_file_exists(tmp_path):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="fc"),
                              keras.layers.Activation("gelu", name="act"),
                              keras.layers.Dense(3, name="out")])
    x = np.random.default_rng(0).random((32, 8), dtype="float32")
    with pytest.raises(UnsupportedModelError, match=r"gelu.tflite does not fit TFLite Micro: "
                                                    r"GELU \(op 1, layer act\) is not an op "
                                                    r"TFLM has: replace the layer"):
        export.to_tflite(model, tmp_path / "gelu.tflite", target="tflm", representative_data=x)
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left behind


@pytest.mark.parametrize("kwargs,match", [
    ({"quantize": "dynamic"}, "exports full int8"),
    ({"sparse": True}, "no DENSIFY op.*sparse=False"),
    ({"allow_select_ops": True}, "builtin ops only"),
    ({"representative_data": None}, "pass representative_data"),
    ({"target": "micro"}, "target must be one of"),
])
def test_tflm_export_refuses_settings_it_cannot_honour(tmp_path, images, kwargs, match):
    settings = {"target": "tflm", "representative_data": images, **kwargs}
    with pytest.raises(TfpruneError, match=match):
        export.to_tflite(_conv_net(), tmp_path / "m.tflite", **settings)
    assert not (tmp_path / "m.tflite").exists()


@needs_tflm
def test_arena_comes_from_the_interpreter(int8_file):
    """The recording allocator's total is the arena TFLM needs: bisection on the arena size
    given to the interpreter finds the same figure, to the allocator's 16-byte alignment."""
    arena = micro.measure_arena(int8_file)
    assert arena.total == arena.activations + arena.persistent
    assert arena.allocations and arena.version
    smallest = micro.minimal_arena(int8_file)
    assert smallest <= arena.total <= smallest + 16


@pytest.mark.slow
@needs_tflm
def test_tflm_plans_activations_as_tightly_as_their_lifetimes_allow(tmp_path, images):
    """On a chain, TFLM's planner reaches the lifetime bound: with 4 filters the input and
    conv's output peak together (144 + 112 bytes), with 8 conv's output and Flatten's copy of
    it do (208 + 208): the figure follows the activations, not the weights."""
    sizes = {}
    for filters in (4, 8):
        path = export.to_tflite(_conv_net(filters), tmp_path / f"c{filters}.tflite",
                                target="tflm", representative_data=images)
        sizes[filters] = micro.measure_arena(path)
        assert sizes[filters].activations == micro.activation_peak(path).bytes
    assert (sizes[4].activations, sizes[8].activations) == (256, 416)
    assert sizes[8].total > sizes[4].total


@pytest.mark.slow
@needs_tflm
def test_accuracy_on_tflm_equals_litert_image_for_image(mnist_dir, tmp_path):
    from tfprune import data

    x, y = data.mnist_arrays("train", mnist_dir)
    xt, yt = data.mnist_arrays("test", mnist_dir)
    model = keras.Sequential([keras.Input((28, 28, 1)),
                              keras.layers.Conv2D(4, 5, strides=2, activation="relu"),
                              keras.layers.Conv2D(8, 5, strides=2, activation="relu"),
                              keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.005), "sparse_categorical_crossentropy")
    model.fit(x[:1000], y[:1000], batch_size=32, epochs=2, verbose=0)
    path = export.to_tflite(model, tmp_path / "small.tflite", target="tflm",
                            representative_data=x[:100])
    xt, yt = xt[:300], yt[:300]
    # LiteRT's builtin kernels implement the int8 arithmetic of TFLM's reference kernels
    # (XNNPACK rounds its own way: the tflm stage counts its differences, not a test).
    on_micro = micro.predict(path, xt, raw=True)
    on_litert = export.predict(path, xt, delegate="builtin", raw=True)
    assert on_micro.dtype == on_litert.dtype == np.int8
    assert np.array_equal(classes(on_micro), classes(on_litert))
    assert micro.evaluate(path, xt, yt) == export.evaluate(path, xt, yt, delegate="builtin")
    assert micro.evaluate(path, xt, yt) > 0.7  # trained: the comparison is not of noise


@needs_tflm
def test_predict_runs_any_number_of_inputs_in_the_files_batch(int8_file, images):
    all_at_once = micro.predict(int8_file, images[:5], raw=True)
    one_by_one = np.concatenate([micro.predict(int8_file, images[i:i + 1], raw=True)
                                 for i in range(5)])
    assert all_at_once.dtype == np.int8 and all_at_once.shape == (5, 3)
    assert np.array_equal(all_at_once, one_by_one)
    with pytest.raises(TfpruneError, match="takes"):
        micro.predict(int8_file, np.zeros((2, 8, 8, 1), "float32"))


def test_missing_package_is_one_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tflm(name, *args, **kwargs):
        if name.startswith("tflite_micro"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tflm)
    reason = micro.available()
    assert reason.startswith("TFLite Micro is not available") and "tfprune[tflm]" in reason
    with pytest.raises(micro.TflmUnavailable):
        micro.measure_arena("any.tflite")


# --- C source ---------------------------------------------------------------------------

_MAIN = r"""
#include <stdint.h>
#include <stdio.h>
#include "model_data.h"
int main(void) {
  if (((uintptr_t)model_data) % 16 != 0) return 2;
  fwrite(model_data, 1, model_data_len, stdout);
  return 0;
}
"""


@needs_tflm
@pytest.mark.parametrize("language,compiler", [("cc", "g++"), ("c", "cc")])
def test_c_source_compiles_and_holds_the_files_bytes(int8_file, tmp_path, language, compiler):
    if shutil.which(compiler) is None:
        pytest.skip(f"no {compiler} on this machine to compile the C source with")
    header, source = csource.write(int8_file, tmp_path, language=language)
    assert (header.name, source.name) == ("model_data.h", f"model_data.{language}")
    text = header.read_text()
    arena = micro.measure_arena(int8_file)
    assert f"#define MODEL_DATA_ARENA_SIZE {arena.total}" in text
    assert f"Tensor arena: {arena.total:,} bytes" in text
    assert "Input 0: serving_default_args_0:0, int8 [1, 12, 12, 1], scale" in text
    assert "AddConv2D, AddFullyConnected, AddReshape, AddSoftmax" in text
    main = tmp_path / f"main.{language}"
    main.write_text(_MAIN)
    standard = "-std=c++11" if language == "cc" else "-std=c11"
    subprocess.run([compiler, standard, "-Wall", "-Werror", "-c", str(source), "-o",
                    str(tmp_path / "model.o")], check=True, capture_output=True)
    subprocess.run([compiler, standard, str(main), str(source), "-o", str(tmp_path / "dump")],
                   check=True, capture_output=True)
    dumped = subprocess.run([str(tmp_path / "dump")], capture_output=True, check=True).stdout
    assert dumped == int8_file.read_bytes()


def test_c_export_refuses_a_file_that_is_not_full_int8(tmp_path):
    path = export.to_tflite(_conv_net(), tmp_path / "float.tflite")
    with pytest.raises(UnsupportedModelError, match=r"float.tflite does not fit TFLite Micro: "
                                                    r"CONV_2D \(op 0, layer conv\) computes in "
                                                    r"float32.*export full int8"):
        csource.write(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float.tflite"]


def test_c_export_checks_its_name_and_says_when_the_arena_is_not_measured(
        int8_file, tmp_path, monkeypatch):
    with pytest.raises(TfpruneError, match="C identifier"):
        csource.write(int8_file, tmp_path, name="model-data")
    monkeypatch.setattr(micro, "measure_arena", _unavailable)
    header, _ = csource.write(int8_file, tmp_path, name="net")
    text = header.read_text()
    assert "Tensor arena: not measured (TFLite Micro is not available" in text
    assert "ARENA_SIZE" not in text and "extern const unsigned char net[];" in text


def _unavailable(path):
    raise micro.TflmUnavailable("TFLite Micro is not available (test): pip install it.")


# --- the command-line tools ---------------------------------------------------------------


@pytest.fixture
def main():
    """Calls a tool's `main` with its flags parsed as absl would; removes them afterwards."""
    from absl import flags

    from tfprune import tools

    before = set(flags.FLAGS)
    tools._define_inspect_flags()
    tools._define_export_c_flags()

    def call(main_fn, *args):
        return main_fn(flags.FLAGS([main_fn.__name__, *map(str, args)]))

    yield call
    flags.FLAGS.unparse_flags()
    for name in set(flags.FLAGS) - before:
        delattr(flags.FLAGS, name)


@needs_tflm
def test_inspect_says_which_runtimes_run_the_file(main, int8_file, tmp_path, capsys):
    from tfprune import tools

    out = tmp_path / "inspect.json"
    assert main(tools.inspect_main, int8_file, f"--json={out}") == 0
    text = capsys.readouterr().out
    arena = micro.measure_arena(int8_file)
    assert "runs on:" in text and "LiteRT builtin: yes" in text
    assert f"TFLite Micro: yes (full int8; arena {arena.total:,} bytes" in text
    assert f"peak activation memory (tensor lifetimes): {arena.activations:,} bytes at op" in text
    import json

    payload = json.loads(out.read_text())[0]
    assert [r["name"] for r in payload["runtimes"]] == ["LiteRT + XNNPACK", "LiteRT builtin",
                                                         "TFLite Micro"]
    assert payload["activation_peak"]["bytes"] == arena.activations


def test_export_c_tool_writes_the_pair_or_one_line(main, int8_file, tmp_path, capsys):
    from tfprune import tools

    assert main(tools.export_c_main, int8_file, f"--out_dir={tmp_path}", "--name=lenet") == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "lenet.h").is_file() and (tmp_path / "lenet.cc").is_file()
    float_file = export.to_tflite(_conv_net(), tmp_path / "float.tflite")
    assert main(tools.export_c_main, float_file, f"--out_dir={tmp_path}") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfprune-export-c: error: float.tflite does not "
                                               "fit TFLite Micro")
    assert not (tmp_path / "model_data.h").exists()
