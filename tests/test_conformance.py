"""The conformance table's rows (benchmarks/conformance.py), one model of each family.

The whole table (every model, exported and timed) is the benchmark; here each family's
lightest member goes through merge and filter prune + shrink, checked numerically, and one
row goes through export, verification and timing too.
"""

import sys
from pathlib import Path

import keras
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import conformance  # noqa: E402

FAMILIES = {
    "EfficientNet": "EfficientNetB0",
    "ResNet": "ResNet50V2",
    "DenseNet": "DenseNet121",
    "NASNet": "NASNetMobile",
    "Xception": "Xception",
    "Inception": "InceptionV3",
    "VGG": "VGG16",
    "ConvNeXt": "ConvNeXtTiny",
}


def test_every_family_is_in_the_table_and_here():
    families = {family for family, _, _ in conformance.MODELS.values()}
    assert families == {*FAMILIES, "MobileNet"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES.values()))
def test_a_family_merges_and_shrinks_exactly(name):
    row = conformance.check(name, export_files=False)
    assert "failed" not in row, row.get("traceback")
    assert row["merge_err"] < conformance.TOLERANCE
    assert row["shrink_err"] < conformance.TOLERANCE
    assert row["merged_nodes"] <= row["nodes"]  # VGG16 has nothing to merge
    assert row["shrunk_macs"] < 0.6 * row["macs"]  # half of every channel group went
    assert row.get("flattened") is (True if name == "ConvNeXtTiny" else None)


@pytest.mark.slow
def test_a_mobilenet_row_is_exported_verified_and_timed(tmp_path):
    row = conformance.check("MobileNet", runs=20, folder=tmp_path)
    assert "failed" not in row, row.get("traceback")
    assert row["tflite_err"] < conformance.TOLERANCE
    assert row["speedup"] > 1.0 and row["small_us"] < row["base_us"]
    assert (tmp_path / "MobileNet_small.tflite").stat().st_size < (
        tmp_path / "MobileNet_base.tflite").stat().st_size
    line = conformance.table([row]).splitlines()[-1]
    assert line.startswith("| MobileNet | 32x32 |") and "fails" not in line


def test_a_model_that_cannot_be_handled_is_a_row_saying_why(monkeypatch):
    def build(name, seed=0):  # a keras.ops call with two outputs: refused, one line
        x = keras.Input((32, 32, 3))
        a, b = keras.ops.split(keras.layers.Conv2D(4, 1, name="conv")(x), 2, axis=-1)
        return keras.Model(x, keras.layers.Add()([a, b]))

    monkeypatch.setattr(conformance, "build", build)
    row = conformance.check("VGG16", export_files=False)
    assert row["failed"].startswith("merge: UnsupportedModelError: Model ")
    assert "2 outputs" in row["failed"] and "split" in row["failed"]
    assert "**fails at merge" in conformance.table([row])
