"""Full int8 with float_layers (the converter's selective quantization): the named layers'
ops stay float, every other op int8, outputs close to Keras; and where it cannot apply
(other modes, TFLite Micro, sparse encoding, a layer with no op) it fails in one line."""

import keras
import numpy as np
import pytest

from tfprune import TfpruneError, UnsupportedModelError, export
from tfprune.compat import node_details
from tfprune.pipeline.config import PipelineConfig
from tfprune.tflite import selective
from tfprune.tflite.interpreter import parse, read_tflite


@pytest.fixture(scope="module")
def model():
    """Conv 8 on a one-channel 12x12 input -> Conv 16 -> Dropout -> Flatten -> Dense 10."""
    keras.utils.set_random_seed(5)
    return keras.Sequential([
        keras.Input((12, 12, 1)),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv1"),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
        keras.layers.Dropout(0.1, name="drop"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(10, name="out"),
    ])


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((64, 12, 12, 1), dtype="float32")


@pytest.fixture(scope="module")
def files(model, images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("selective")
    made = {}
    for name, settings in {"int8": {}, "auto": {"float_layers": "auto"},
                           "auto_io": {"float_layers": "auto", "int8_io": True},
                           "conv2": {"float_layers": "conv2"}}.items():
        made[name] = export.to_tflite(model, folder / f"{name}.tflite", quantize="int8",
                                      representative_data=images, batch_size=1, **settings)
    return made


def _weight_types(path):
    """Op name -> the type names of its constant inputs, in execution order."""
    graph, names = parse(read_tflite(path), path)
    sub = graph.subgraphs[0]
    types = {0: "float32", 9: "int8", 2: "int32"}
    rows = []
    for op in sub.operators:
        consts = [sub.tensors[i] for i in op.inputs
                  if i >= 0 and graph.buffers[sub.tensors[i].buffer].data is not None]
        rows.append((names[op.opcodeIndex], [types.get(t.type, t.type) for t in consts]))
    return rows


def test_slow_layers_are_the_convolutions_on_few_channels(model):
    assert selective.slow_layers(model) == ("conv1",)
    assert selective.slow_layers(model, max_channels=8) == ("conv1", "conv2")
    rgb = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="a")])
    assert selective.slow_layers(rgb) == ()  # XNNPACK's int8 conv on RGB was the faster


@pytest.mark.slow
def test_auto_keeps_the_first_conv_float_and_the_rest_int8(files):
    convs = [w for op, w in _weight_types(files["auto"]) if op == "CONV_2D"]
    assert convs[0][0] == "float32" and convs[1][0] == "int8"
    dense = [w for op, w in _weight_types(files["auto"]) if op == "FULLY_CONNECTED"]
    assert dense[0][0] == "int8"
    # the float conv reads the float input: no QUANTIZE before it
    assert _weight_types(files["auto"])[0][0] == "CONV_2D"
    every = [w[0] for op, w in _weight_types(files["int8"]) if op in ("CONV_2D",)]
    assert every == ["int8", "int8"]


def test_named_layer_stays_float(files):
    convs = [w[0] for op, w in _weight_types(files["conv2"]) if op == "CONV_2D"]
    assert convs == ["int8", "float32"]


def test_int8_io_reads_int8_and_dequantizes_for_the_float_conv(files):
    info = export.inspect(files["auto_io"])
    assert info.inputs[0].endswith("int8") and info.outputs[0].endswith("int8")
    assert _weight_types(files["auto_io"])[0][0] == "DEQUANTIZE"


@pytest.mark.parametrize("name", ["int8", "auto", "auto_io", "conv2"])
def test_outputs_match_keras(files, model, images, name):
    expected = model.predict(images, verbose=0)
    got = export.predict(files[name], images)
    error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert error < 0.05, error
    assert np.mean(got.argmax(1) == expected.argmax(1)) > 0.9


def test_the_auto_file_runs_on_xnnpack(files):
    from tfprune.tflite.interpreter import load_interpreter

    interpreter, used, _ = load_interpreter(files["auto"], threads=1)
    assert used == "xnnpack"
    assert any(n["op_name"] == "DELEGATE" for n in node_details(interpreter))


@pytest.mark.parametrize("settings, words", [
    ({"quantize": "dynamic", "float_layers": "auto"}, "quantize='int8' only"),
    ({"quantize": "int8", "float_layers": "auto", "target": "tflm"}, "every op in int8"),
    ({"quantize": "int8", "float_layers": "auto", "sparse": True}, "sparse=False"),
    ({"quantize": "int8", "float_layers": "conv9"}, "names no layer"),
])
def test_bad_settings_fail_in_one_line(model, images, tmp_path, settings, words):
    with pytest.raises(TfpruneError, match=words) as raised:
        export.to_tflite(model, tmp_path / "m.tflite", representative_data=images, **settings)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "m.tflite").exists()


def test_a_layer_with_no_op_cannot_stay_float(model, images, tmp_path):
    with pytest.raises(UnsupportedModelError, match="'drop' has no op"):
        export.to_tflite(model, tmp_path / "m.tflite", quantize="int8",
                         representative_data=images, float_layers="drop")
    assert not (tmp_path / "m.tflite").exists()


def test_sparse_choice_says_why_it_stays_dense(model, images, tmp_path):
    choice = export.to_tflite_where_sparse_pays(model, tmp_path / "m.tflite", quantize="int8",
                                                representative_data=images, batch_size=1,
                                                float_layers="auto")
    assert not choice.sparse and "selective quantization" in choice.reason
    assert (tmp_path / "m.tflite").is_file()


def test_config_refuses_float_layers_for_tflm():
    with pytest.raises(TfpruneError, match="int8_float_layers"):
        PipelineConfig(model="lenet5", target="tflm", int8_float_layers="auto").validate()
    assert PipelineConfig(model="lenet5", int8_float_layers="auto").validate()
