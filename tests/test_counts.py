import keras
import numpy as np
from keras import layers

from tfprune.bench import count
from tfprune.bench.counts import layer_macs
from tfprune.models import lenet5


def test_lenet5_macs_match_the_hand_count():
    counts = count(lenet5())
    # conv1 24*24*20*25 + conv2 8*8*50*500 + ip1 800*500 + ip2 500*10
    assert counts["conv1"].macs == 24 * 24 * 20 * 25
    assert counts["conv2"].macs == 8 * 8 * 50 * 5 * 5 * 20
    assert counts.macs == 2_293_000
    assert counts.params == 431_080
    assert counts["pool1"].macs == 0 and counts["pool1"].params == 0


def test_nonzero_and_table_and_dict():
    model = lenet5()
    kernel = model.get_layer("ip1").kernel
    kernel.assign(np.zeros(kernel.shape))
    counts = count(model)
    # Dense biases start at zero, so only conv and ip2 kernels and biases count... ip1: none.
    assert counts["ip1"].nonzero == 0 and counts["ip1"].params == 800 * 500 + 500
    text = str(counts)
    assert "conv2" in text and "2,293,000" in text and "total" in text
    d = counts.to_dict()
    assert d["macs"] == 2_293_000 and d["layers"][0]["name"] == "conv1"
    assert d["nonzero"] == counts.nonzero < d["params"]


def test_macs_of_other_conv_types():
    x = keras.Input((10, 10, 4))
    a = layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)  # 8x8x8
    b = layers.SeparableConv2D(6, 3, name="sep")(x)  # 8x8x6
    c = layers.Conv2DTranspose(3, 3, strides=2, name="tr")(x)
    d = layers.Conv1D(5, 3, name="c1")(layers.Reshape((100, 4))(x))
    e = layers.Conv3D(2, 3, name="c3")(layers.Reshape((10, 10, 4, 1))(x))
    f = layers.Dense(7, name="dense")(x)
    model = keras.Model(x, [a, b, c, d, e, f])
    counts = count(model)
    assert counts["dw"].macs == 8 * 8 * (3 * 3 * 4 * 2)
    assert counts["sep"].macs == 8 * 8 * (3 * 3 * 4 + 4 * 6)
    assert counts["tr"].macs == 10 * 10 * (3 * 3 * 3 * 4)
    assert counts["c1"].macs == 98 * 3 * 4 * 5
    assert counts["c3"].macs == 8 * 8 * 2 * 27 * 2
    assert counts["dense"].macs == 10 * 10 * 4 * 7
    assert layer_macs(layers.ReLU(), (1, 4), (1, 4)) == 0


def test_pruning_wrappers_count_as_the_inner_layer_with_masks_applied():
    import tfprune

    model = lenet5()
    pruned = tfprune.prune(model, tfprune.ConstantSparsity(0.5, 0), granularity="filter")
    for layer in pruned.layers:
        if isinstance(layer, tfprune.PruneLowMagnitude):
            layer.update_masks(0.5)
    counts = count(pruned)
    plain = count(model)
    assert counts.params == plain.params and counts.macs == plain.macs
    assert counts["prune_low_magnitude_conv1"].type == "Conv2D"
    # conv1 keeps 10 of its 20 filters (its biases are still zeros from initialization).
    assert counts["prune_low_magnitude_conv1"].nonzero == 10 * 25
    assert counts.nonzero == count(tfprune.strip(pruned)).nonzero
