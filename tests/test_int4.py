"""quantize="int4" through litert-quantizer: smaller than int8, close to Keras, on the
runtimes each form claims, and bad settings fail in one line before any file appears."""

import keras
import numpy as np
import pytest

from tfprune import TfpruneError, export
from tfprune.pipeline.config import PipelineConfig
from tfprune.tflite import int4

pytestmark = pytest.mark.skipif(not int4.available(), reason="litert-quantizer not installed")


@pytest.fixture(scope="module")
def model():
    """Conv 8x3x3/2 -> Flatten (200) -> Dense 128 -> Dense 10 on 12x12x1: 25,600 dense weights."""
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((12, 12, 1)),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu", name="fc"),
        keras.layers.Dense(10, name="out"),
    ])


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((64, 12, 12, 1), dtype="float32")


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("int4")
    # batch 1: no shape ops for the Flatten, so only the quantization decides what XNNPACK runs
    paths = {"dynamic": export.to_tflite(model, folder / "dynamic.tflite", quantize="dynamic",
                                         batch_size=1)}
    for form in ("mixed", "dynamic", "weight_only"):
        paths[f"int4 {form}"] = export.to_tflite(model, folder / f"int4_{form}.tflite",
                                                 quantize="int4", int4_form=form, batch_size=1)
    return paths


@pytest.mark.slow
def test_int4_is_smaller_than_int8(files):
    int8 = files["dynamic"].stat().st_size
    for form in ("mixed", "dynamic", "weight_only"):
        assert files[f"int4 {form}"].stat().st_size < 0.7 * int8, form


@pytest.mark.parametrize("form", ["mixed", "dynamic", "weight_only"])
def test_int4_outputs_match_keras(files, model, images, form):
    expected = model.predict(images, verbose=0)
    for delegate in ("xnnpack", "builtin"):
        got = export.predict(files[f"int4 {form}"], images, delegate=delegate)
        # 16 levels a weight (and activations quantized on the fly in the dynamic forms):
        # several percent of the outputs' size, not exact
        error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
        assert error < 0.15, (form, delegate, error)
        assert np.mean(got.argmax(1) == expected.argmax(1)) > 0.8


def test_inspect_sees_int4_weights(files):
    info = export.inspect(files["int4 mixed"])
    fc, conv = info.tensor("fc"), info.tensor("conv")
    assert (fc.dtype, fc.bytes, fc.quantized) == ("int4", 200 * 128 // 2, "per-channel")
    # the mixed form leaves weights under 1,024 values in float (as the converter does)
    assert conv.dtype == "float32"
    assert export.inspect(files["int4 dynamic"]).tensor("conv").dtype == "int4"


def test_each_form_runs_where_its_docstring_says(files):
    def xnnpack(path):
        return export.runtimes(path)[0].runs

    assert xnnpack(files["int4 mixed"]) == "yes"  # every op on XNNPACK
    assert xnnpack(files["int4 dynamic"]) == "partly"  # no int4 CONV_2D in XNNPACK
    assert xnnpack(files["int4 weight_only"]) in ("partly", "no")  # int4 DEQUANTIZE refused


def _one_line(error):
    text = str(error.value)
    assert "\n" not in text and "Received: " in text
    return text


@pytest.mark.parametrize("kwargs,words", [
    ({"quantize": "int3"}, "quantize must be one of"),
    ({"quantize": "int4", "int4_form": "fast"}, "int4_form must be one of"),
    ({"quantize": "int4", "sparse": True}, "no sparse encoding"),
    ({"quantize": "int4", "target": "tflm", "representative_data": np.zeros((1, 12, 12, 1))},
     "target='tflm' exports full int8"),
])
def test_bad_settings_fail_in_one_line_and_write_nothing(model, tmp_path, kwargs, words):
    path = tmp_path / "m.tflite"
    with pytest.raises(TfpruneError) as e:
        export.to_tflite(model, path, **kwargs)
    assert words in _one_line(e)
    assert list(tmp_path.iterdir()) == []


def test_missing_quantizer_is_one_line(model, tmp_path, monkeypatch):
    monkeypatch.setattr(int4, "available", lambda: False)
    with pytest.raises(TfpruneError) as e:
        export.to_tflite(model, tmp_path / "m.tflite", quantize="int4")
    assert "pip install litert-quantizer" in _one_line(e)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_failing_quantizer_leaves_no_file(model, tmp_path, monkeypatch):
    from litert_quantizer import Quantizer

    def fail(*args, **kwargs):
        raise RuntimeError("unsupported op\nmore detail")

    monkeypatch.setattr(Quantizer, "quantize", fail)
    with pytest.raises(TfpruneError) as e:
        export.to_tflite(model, tmp_path / "m.tflite", quantize="int4")
    assert "litert-quantizer failed on the model (RuntimeError: unsupported op)" in _one_line(e)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sparse_where_it_pays_writes_int4_dense(model, tmp_path):
    choice = export.to_tflite_where_sparse_pays(model, tmp_path / "m.tflite", quantize="int4")
    assert not choice.sparse and "no sparse encoding" in choice.reason
    assert export.inspect(choice.path).tensor("fc").dtype == "int4"


def test_the_run_refuses_int4_for_tflm_before_training():
    with pytest.raises(TfpruneError) as e:
        PipelineConfig(quantize="int4", target="tflm").validate()
    assert "put int8 first" in _one_line(e)
    assert PipelineConfig(quantize="int4").validate().quantize == ("int4",)


@pytest.mark.slow
def test_int8_edges_keeps_the_first_and_last_layers_int8(model, images, tmp_path):
    path = export.to_tflite(model, tmp_path / "edges.tflite", quantize="int4",
                            int4_form="dynamic_int8_edges", batch_size=1)
    info = export.inspect(path)
    assert (info.tensor("conv").dtype, info.tensor("fc").dtype,
            info.tensor("out").dtype) == ("int8", "int4", "int8")
    expected = model.predict(images, verbose=0)
    got = export.predict(path, images)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 0.15
    assert np.mean(got.argmax(1) == expected.argmax(1)) > 0.8


@pytest.mark.slow
def test_edge_ops_are_the_first_and_last_weighted_ops(model, tmp_path):
    data = export.to_tflite(model, tmp_path / "float.tflite", batch_size=1).read_bytes()
    first, last = int4.edge_ops(data)
    assert "/conv" in first and first != last  # the last: the model's output tensor
