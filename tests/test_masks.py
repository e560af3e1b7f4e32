"""Mask math (tfmot equivalence: test_pruning_tfmot.py)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfprune.errors import TfpruneError
from tfprune.pruning import masks


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 300), sparsity=st.floats(0.0, 0.999), seed=st.integers(0, 2**16))
def test_weight_mask_keeps_exactly_keep_count(size, sparsity, seed):
    w = np.random.default_rng(seed).standard_normal(size)
    mask = masks.weight_mask(w, sparsity)
    k = masks.keep_count(size, sparsity)
    assert mask.sum() == k
    assert k == max(round(size * (1 - sparsity)), 1) or abs(size * (1 - sparsity) % 1 - 0.5) < 1e-3
    if k < size:
        assert np.abs(w[mask == 1]).min() >= np.abs(w[mask == 0]).max()


def test_weight_mask_handles_ties_exactly():
    w = np.ones((10, 10))
    assert masks.weight_mask(w, 0.3).sum() == 70
    w = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    mask = masks.weight_mask(w, 0.5)
    assert mask.sum() == 3 and mask[4] == mask[5] == 1


def test_weight_mask_keeps_at_least_one_weight():
    assert masks.weight_mask(np.arange(5.0), 0.99).tolist() == [0, 0, 0, 0, 1]


def test_block_mask_keeps_whole_blocks_by_mean_or_max():
    w = np.zeros((2, 8), dtype=np.float32)
    w[0, :4] = [1, 1, 1, 1]          # mean 1, max 1
    w[0, 4:] = [0, 0, 0, 3.5]        # mean 0.875, max 3.5
    w[1, :4] = [0.5, 0.5, 0.5, 0.5]
    w[1, 4:] = [0.1, 0.1, 0.1, 0.1]
    mean = masks.block_mask(w, 0.75, (1, 4), "mean")
    assert mean[0, :4].tolist() == [1, 1, 1, 1] and mean.sum() == 4
    top = masks.block_mask(w, 0.75, (1, 4), "max")
    assert top[0, 4:].tolist() == [1, 1, 1, 1] and top.sum() == 4


def test_block_mask_partial_blocks_are_pooled_over_their_own_weights():
    w = np.full((1, 6), 0.5, dtype=np.float32)
    w[0, 4:] = 0.9                   # the partial block (2 weights) has the largest mean
    mask = masks.block_mask(w, 0.5, (1, 4), "mean")
    assert mask.tolist() == [[0, 0, 0, 0, 1, 1]]


def test_block_mask_on_conv_kernel_uses_matrix_view():
    w = np.random.default_rng(0).standard_normal((3, 3, 4, 8))
    mask = masks.block_mask(w, 0.5, (1, 4), "mean")
    assert mask.shape == w.shape
    rows = mask.reshape(-1, 8)
    assert set(map(tuple, rows.reshape(-1, 4).tolist())) <= {(0,) * 4, (1,) * 4}
    assert rows.sum() == 36 * 4


def test_n_m_mask_keeps_n_of_every_m_along_input_axis():
    w = np.random.default_rng(0).standard_normal((3, 3, 8, 5))
    mask = masks.n_m_mask(w, (2, 4), axis=-2)
    groups = np.moveaxis(mask, -2, -1).reshape(-1, 4)
    assert (groups.sum(axis=1) == 2).all()
    wg = np.moveaxis(np.abs(w), -2, -1).reshape(-1, 4)
    assert (np.sort(wg, axis=1)[:, 2:] == np.sort(wg * groups, axis=1)[:, 2:]).all()


def test_n_m_mask_rejects_one_input_channel():
    with pytest.raises(TfpruneError, match="multiple of 4.*Received: n_m=\\(2, 4\\)"):
        masks.n_m_mask(np.ones((5, 5, 1, 20)), (2, 4), axis=-2)


@pytest.mark.parametrize("bad", [(4, 4), (0, 4), (2,), "2:4", (2.0, 4)])
def test_n_m_rejects_bad_pairs(bad):
    with pytest.raises(TfpruneError, match="n_m"):
        masks.n_m_mask(np.ones((8, 8)), bad)


def test_filter_mask_zeroes_whole_output_channels_by_l2_norm():
    w = np.random.default_rng(0).standard_normal((3, 3, 2, 10)).astype(np.float32)
    w[..., 3] *= 10
    w[..., 7] *= 0.01
    mask = masks.filter_mask(w, 0.5, axis=-1)
    kept = mask.reshape(-1, 10).min(axis=0)
    assert (mask.reshape(-1, 10) == kept).all()   # whole channels
    assert kept.sum() == 5 and kept[3] == 1 and kept[7] == 0
    norms = masks.filter_norms(w, -1)
    assert norms[kept == 1].min() >= norms[kept == 0].max()


def test_filter_mask_with_several_axes_and_other_axis():
    w = np.random.default_rng(1).standard_normal((3, 3, 4, 2))  # depthwise: 8 channels
    mask = masks.filter_mask(w, 0.25, axis=(-2, -1))
    assert mask.reshape(9, 8).min(axis=0).sum() == 6
    t = np.random.default_rng(2).standard_normal((3, 3, 6, 4))  # Conv2DTranspose: out=-2
    mask = masks.filter_mask(t, 0.5, axis=-2)
    assert np.moveaxis(mask, -2, 0).reshape(6, -1).min(axis=1).sum() == 3


def test_compute_mask_dispatch_and_errors():
    w = np.random.default_rng(0).standard_normal((16, 8))
    np.testing.assert_array_equal(masks.compute_mask(w, 0.5), masks.weight_mask(w, 0.5))
    np.testing.assert_array_equal(masks.compute_mask(w, 0.0, "2:4"),
                                  masks.n_m_mask(w, (2, 4), axis=-2))
    np.testing.assert_array_equal(masks.compute_mask(w, 0.5, "n:m", n_m=(1, 4)),
                                  masks.n_m_mask(w, (1, 4), axis=-2))
    with pytest.raises(TfpruneError, match="Unknown granularity.*Received: granularity='row'"):
        masks.compute_mask(w, 0.5, "row")
    with pytest.raises(TfpruneError, match="input-channel axis"):
        masks.compute_mask(w, 0.5, "n:m", in_axis=None)
    with pytest.raises(TfpruneError, match="block_pooling"):
        masks.compute_mask(w, 0.5, "block", block_pooling="median")
    with pytest.raises(TfpruneError, match="block_shape"):
        masks.compute_mask(w, 0.5, "block", block_shape=(0, 4))
