"""A user's mobile CNN, saved as .keras, runs end to end: pruned by channel group, merged,
shrunk with no zeroed filter left, exported, verified and benchmarked."""

import keras
import numpy as np
import pytest

import tfprune
from tfprune import data, pipeline
from tfprune.pipeline import Context, PipelineConfig

pytestmark = pytest.mark.slow  # see pyproject.toml's markers

L = keras.layers


def _mobile_cnn(channels):
    """Rescaling, Conv-BN-ReLU, a residual Add, depthwise and separable convs, GAP, Dropout
    and a Softmax layer: the layers of today's mobile CNNs, at toy widths."""
    x = keras.Input((32, 32, channels), name="pixels")
    y = L.Rescaling(1 / 255, name="scale")(x)
    y = L.Conv2D(12, 3, strides=2, padding="same", use_bias=False, name="stem")(y)
    stem = L.ReLU(name="stem_relu")(L.BatchNormalization(momentum=0.9, name="stem_bn")(y))
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(stem)
    y = L.ReLU(name="dw_relu")(L.BatchNormalization(momentum=0.9, name="dw_bn")(y))
    y = L.Conv2D(12, 1, use_bias=False, name="pw")(y)
    y = L.BatchNormalization(momentum=0.9, name="pw_bn")(y)
    y = L.ReLU(name="add_relu")(L.Add(name="add")([stem, y]))
    y = L.SeparableConv2D(16, 3, strides=2, padding="same", name="sep")(y)
    y = L.ReLU(name="sep_relu")(L.BatchNormalization(momentum=0.9, name="sep_bn")(y))
    y = L.Dropout(0.2, name="drop")(L.GlobalAveragePooling2D(name="gap")(y))
    return keras.Model(x, L.Softmax(name="probs")(L.Dense(10, name="logits")(y)), name="mine")


def _as_32x32(x, channels):
    """MNIST [0, 1] 28x28x1 as 0-255 pixels, padded to 32x32, with `channels` channels."""
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))) * 255.0
    return np.repeat(padded, channels, axis=-1).astype("float32")


def test_a_users_mobile_cnn_runs_end_to_end(mnist_dir, tmp_path):
    path = tmp_path / "mine.keras"
    _mobile_cnn(3).save(path)
    config = PipelineConfig(
        model=str(path), data_dir=mnist_dir, baseline_epochs=1, prune_epochs=1,
        retrain_epochs=0, baseline_batch_size=32, prune_batch_size=32,
        baseline_learning_rate=0.01, prune_learning_rate=0.005,
        final_sparsity=0.5, frequency=4, granularity="filter", merge="exact",
        quantize=("int8",), representative_size=32, bench_runs=10, bench_warmup=2,
        export_dir=str(tmp_path / "run"), verbose=0, plots=False,
        keep_going=True).validate()  # one epoch on 432 images: the structure is under test
    context = Context(config)
    (x, y), (xt, yt) = (data.mnist_arrays(split, mnist_dir) for split in ("train", "test"))
    train, validation = data.carve_validation(_as_32x32(x[:480], 3), y[:480], 0.1)
    context.__dict__["data"] = data.Splits(train, validation, (_as_32x32(xt[:200], 3), yt[:200]))
    report = pipeline.execute(pipeline.STAGES, context)["report"]

    merged = context.model("folded")  # exact merges come after retraining
    assert not [layer for layer in merged.layers
                if isinstance(layer, (L.BatchNormalization, L.Dropout, L.Rescaling))]
    layers = {row["name"]: row for row in report["layers"]}
    for name, units in (("stem", 6), ("pw", 6), ("sep", 8)):  # half, coupled stem and pw
        assert layers[name]["units_kept"] == units, layers[name]
    assert layers["logits"]["units_kept"] == 10 and layers["logits"]["kernel_zeros"][
        "prune"] == 0  # the classifier is left whole
    assert not tfprune.shrink_plan(context.model("retrained")).kept  # every zeroed filter went
    s = report["summary"]
    assert s["macs_ratio"] > 2 and s["size_ratio"] > 1  # a toy: the file is mostly overhead
    assert 0 <= s["compressed"]["accuracy"] <= 1 and s["compressed"]["latency_us"] > 0
    compressed = report["files"]["compressed.tflite"]
    encoding = "sparse: " if compressed["sparse"] else "dense: "  # where it pays, and why
    assert compressed["sparse_reason"].startswith(encoding)
    assert f"Sparse encoding: {encoding}" in (tmp_path / "run" / "report.md").read_text()


def test_the_zoo_mobilenet_with_one_channel_prunes_to_whole_channels():
    model = tfprune.models.mobilenet_tiny((32, 32, 1), width=0.25)
    pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, 0, frequency=2), "filter")
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype("float32")
    pruned.compile("adam", "sparse_categorical_crossentropy", run_eagerly=True)
    pruned.fit(x, rng.integers(0, 10, 16), batch_size=8, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    fused = tfprune.fuse(tfprune.strip(pruned))
    plan = tfprune.shrink_plan(fused)
    assert not plan.kept, str(plan)
    small = plan.apply()  # checked against the fused model on a random batch
    assert [small.get_layer(n).filters for n in ("stem_conv", "block1_pw", "block2_pw",
                                                 "block3_pw", "block4_pw")] == [4, 8, 16, 16, 32]
    np.testing.assert_allclose(small(x), fused(x), rtol=1e-5, atol=1e-6)
