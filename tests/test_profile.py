"""tfprune.bench.profile: every op of a known model, with where it ran and a time that is
never negative; the one private LiteRT API it stands on fails loudly if LiteRT changes it."""

import keras
import numpy as np
import pytest

from tfprune import TfpruneError, bench, compat, export
from tfprune.tflite import interpreter


@pytest.fixture(scope="module")
def int8_file(tmp_path_factory):
    """Full int8 with float I/O, batch 1: QUANTIZE, CONV_2D, RESHAPE, FULLY_CONNECTED,
    DEQUANTIZE, all of which XNNPACK takes."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
                              keras.layers.Flatten(), keras.layers.Dense(10, name="fc")])
    images = np.random.default_rng(0).random((32, 8, 8, 1), dtype="float32")
    return export.to_tflite(model, tmp_path_factory.mktemp("profile") / "int8.tflite",
                            quantize="int8", representative_data=images, batch_size=1)


@pytest.fixture(scope="module")
def weight_only_int4(tmp_path_factory):
    """Int4 weights with DEQUANTIZE ops, which XNNPACK refuses: a split partition."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, name="fc"),
                              keras.layers.Dense(10, name="out")])
    return export.to_tflite(model, tmp_path_factory.mktemp("profile") / "wo4.tflite",
                            quantize="int4", int4_form="weight_only", batch_size=1)


EXPECTED = ["QUANTIZE", "CONV_2D", "RESHAPE", "FULLY_CONNECTED", "DEQUANTIZE"]


@pytest.mark.slow
@pytest.mark.parametrize("delegate", ["xnnpack", "builtin"])
def test_every_op_is_listed_with_its_kernels_and_a_time(int8_file, delegate):
    result = bench.profile(int8_file, delegate=delegate, runs=5, warmup=1)
    assert [o.op for o in result.ops] == EXPECTED
    assert [o.index for o in result.ops] == list(range(5))
    assert {o.ran for o in result.ops} == {delegate}
    assert all(o.median_us >= 0 and o.alone_us > 0 for o in result.ops)
    assert result.total_us > 0 and result.invoke_us > 0
    assert [o.edge for o in result.ops] == [True, False, False, False, True]
    assert result.ops[1].types == "int8 -> int8"
    assert result.ops[1].weights == "int8 per-channel"
    assert result.ops[3].weights == "int8 per-channel"
    assert sum(result.split().values()) == pytest.approx(result.ops_us)
    text = str(result)
    assert "QUANTIZE (edge)" in text and "by kernels:" in text


@pytest.mark.slow
def test_ops_xnnpack_refuses_are_on_the_builtin_kernels(weight_only_int4):
    result = bench.profile(weight_only_int4, runs=5, warmup=1)
    ran = {(o.op, o.ran) for o in result.ops}
    assert ("DEQUANTIZE", "builtin") in ran
    assert result.delegate_used in ("xnnpack", "builtin")
    assert set(result.split("ran")) <= {"xnnpack", "builtin"}


@pytest.mark.slow
def test_weights_dequantized_at_load_stay_weights_when_an_op_runs_alone(tmp_path):
    """A float16 file computes its float32 weights with DEQUANTIZE ops from constants: the
    conv timed alone gets them as weights (runtimes fold them at load), not as an input."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv")])
    path = export.to_tflite(model, tmp_path / "f16.tflite", quantize="float16", batch_size=1)
    result = bench.profile(path, runs=5, warmup=1)
    conv = next(o for o in result.ops if o.op == "CONV_2D")
    assert conv.weights == "float16, dequantized" and conv.types == "float32 -> float32"
    assert conv.ran == "xnnpack" and conv.alone_ran == "xnnpack"


def _with_buffers_after_the_flatbuffer(data):
    """The same model with its weights stored after the flatbuffer (`offset`, `size`), as
    litert-quantizer writes some files (and the converter, models over 2 GB)."""
    import flatbuffers

    from tfprune.tflite.interpreter import parse

    model, _ = parse(data, "x")
    moved = [(b, bytes(b.data)) for b in model.buffers if b.data is not None and len(b.data)]

    def pack(offsets):
        for (buffer, held), offset in zip(moved, offsets, strict=True):
            buffer.data, buffer.offset, buffer.size = None, offset, len(held)
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    head = pack([2**40] * len(moved))  # placeholders as wide as the real offsets
    start, offsets, tail = -(-len(head) // 16) * 16, [], b""
    for _, held in moved:
        offsets.append(start + len(tail))
        tail += held + bytes(-len(held) % 16)
    head = pack(offsets)
    return head + bytes(start - len(head)) + tail


def test_weights_stored_after_the_flatbuffer_are_profiled(int8_file, tmp_path):
    moved = tmp_path / "moved.tflite"
    moved.write_bytes(_with_buffers_after_the_flatbuffer(int8_file.read_bytes()))
    result = bench.profile(moved, delegate="builtin", runs=5, warmup=1)
    assert [o.op for o in result.ops] == EXPECTED
    assert all(o.alone_ran == "builtin" and o.median_us >= 0 for o in result.ops)


def test_bad_arguments_are_one_line(int8_file):
    for kwargs in ({"delegate": "gpu"}, {"runs": 0}, {"threads": "2"}):
        with pytest.raises(TfpruneError) as e:
            bench.profile(int8_file, **kwargs)
        assert "\n" not in str(e.value) and "Received: " in str(e.value)


def test_litert_node_listing_still_has_the_shape_we_read(int8_file):
    """Fails on the LiteRT upgrade that changes `Interpreter._get_ops_details`."""
    loaded, used, _ = interpreter.load_interpreter(int8_file, 1, "xnnpack")
    nodes = compat.node_details(loaded)
    assert used == "xnnpack"
    assert [n["op_name"] for n in nodes] == [*EXPECTED, "DELEGATE"]
    assert all(isinstance(t, int) for n in nodes for t in n["inputs"] + n["outputs"])
    assert interpreter.delegated_ops(nodes) == set(range(5))
    assert interpreter.undelegated_ops(loaded) == []
