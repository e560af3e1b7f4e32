"""Magnitude masks: which weights to keep, as arrays of 0 and 1 (pure NumPy, no Keras).

Four granularities:

- `"weight"` (unstructured): keep the `k = max(round(size * (1 - sparsity)), 1)` weights of
  largest magnitude, tfmot's count; exactly `k` even when magnitudes tie (tfmot keeps every
  tied weight, so its count can overshoot).
- `"block"`: the kernel viewed as a matrix (all axes but the last, by the last), cut into
  `block_shape` blocks (the last blocks of a row or column may be partial), each block scored
  by the mean or max of its magnitudes; whole blocks kept or zeroed. For a Dense kernel this
  is tfmot's `block_size`.
- `"n:m"`: in every `m` consecutive weights along the input-channel axis, keep the `n` of
  largest magnitude (2:4 is what TFLite and tfmot's `sparsity_m_by_n=(2, 4)` mean). The
  sparsity is `1 - n / m`, whatever the schedule says.
- `"filter"`: whole output channels (conv filters, Dense units), ranked by L2 norm; the
  input of physical shrinking.
"""

import numpy as np

from tfprune.errors import TfpruneError
from tfprune.options import GRANULARITIES

POOLINGS = ("mean", "max")


def keep_count(size, sparsity):
    """How many of `size` items to keep at `sparsity`: `max(round(size * (1 - s)), 1)`.

    Computed in float32 with round-half-to-even, exactly as tfmot does.
    """
    kept = np.float32(size) * (np.float32(1.0) - np.float32(sparsity))
    return int(max(np.round(kept), 1))


def _top_k_mask(scores, k):
    """A 0/1 mask over `scores` (any shape) keeping exactly the `k` largest."""
    flat = np.asarray(scores).reshape(-1)
    mask = np.zeros(flat.shape, dtype=np.float32)
    if k >= flat.size:
        mask[:] = 1.0
    else:
        # argpartition is O(n) and keeps exactly k items even when scores tie.
        mask[np.argpartition(-flat, k - 1)[:k]] = 1.0
    return mask.reshape(np.shape(scores))


def weight_mask(weights, sparsity):
    """Unstructured magnitude mask.

    Args:
        weights: Array of any shape.
        sparsity: Float in [0, 1), the fraction of weights to zero.

    Returns:
        A float32 array shaped like `weights`, with exactly `keep_count(size, sparsity)` ones
        on the weights of largest magnitude.

    Example:

    >>> weight_mask(np.array([0.1, -3.0, 0.5, 2.0]), 0.5)
    array([0., 1., 0., 1.], dtype=float32)
    """
    weights = np.abs(np.asarray(weights, dtype=np.float32))
    return _top_k_mask(weights, keep_count(weights.size, sparsity))


def _as_matrix(weights):
    """The (all axes but the last) x (last axis) view of a kernel."""
    if weights.ndim == 0:
        return weights.reshape(1, 1)
    if weights.ndim == 1:
        return weights.reshape(1, -1)
    return weights.reshape(-1, weights.shape[-1])


def check_block(block_shape, pooling):
    """Checks the options of `"block"` granularity.

    Raises:
        TfpruneError: `block_shape` is not two integers >= 1, or `pooling` is not one of
            `POOLINGS`.
    """
    if (not isinstance(block_shape, (tuple, list)) or len(block_shape) != 2
            or not all(isinstance(b, (int, np.integer)) and b >= 1 for b in block_shape)):
        raise TfpruneError(
            f"`block_shape` must be two integers >= 1, e.g. (1, 4). Received: "
            f"block_shape={block_shape!r}"
        )
    if pooling not in POOLINGS:
        raise TfpruneError(
            f"`block_pooling` must be one of {POOLINGS}. Received: block_pooling={pooling!r}"
        )


def block_mask(weights, sparsity, block_shape=(1, 4), pooling="mean"):
    """Block magnitude mask: whole `block_shape` blocks kept or zeroed.

    Args:
        weights: Array; viewed as a matrix of (all axes but the last) by (the last axis).
        sparsity: Float in [0, 1), the fraction of blocks to zero.
        block_shape: Two integers (rows, columns) of the matrix view; defaults to `(1, 4)`.
        pooling: `"mean"` or `"max"` of the magnitudes in a block; defaults to `"mean"`.
            Partial blocks at the edges are pooled over their real weights only.

    Returns:
        A float32 array shaped like `weights`.

    Raises:
        TfpruneError: a bad `block_shape` or `pooling`.
    """
    check_block(block_shape, pooling)
    weights = np.abs(np.asarray(weights, dtype=np.float32))
    matrix = _as_matrix(weights)
    rows, cols = matrix.shape
    bh, bw = block_shape
    nr, nc = -(-rows // bh), -(-cols // bw)
    padded = np.full((nr * bh, nc * bw), np.nan, dtype=np.float32)
    padded[:rows, :cols] = matrix
    blocks = padded.reshape(nr, bh, nc, bw)
    pool = np.nanmean if pooling == "mean" else np.nanmax
    scores = pool(blocks, axis=(1, 3))
    kept = _top_k_mask(scores, keep_count(scores.size, sparsity))
    mask = np.repeat(np.repeat(kept, bh, axis=0), bw, axis=1)[:rows, :cols]
    return np.ascontiguousarray(mask).reshape(weights.shape)


def check_n_m(n_m):
    """Checks the option of `"n:m"` granularity.

    Raises:
        TfpruneError: `n_m` is not two integers `(n, m)` with `1 <= n < m`.
    """
    ok = (isinstance(n_m, (tuple, list)) and len(n_m) == 2
          and all(isinstance(x, (int, np.integer)) for x in n_m) and 1 <= n_m[0] < n_m[1])
    if not ok:
        raise TfpruneError(
            f"`n_m` must be two integers (n, m) with 1 <= n < m, e.g. (2, 4) to keep 2 of "
            f"every 4. Received: n_m={n_m!r}"
        )


def parse_n_m(text):
    """`"2:4"` -> `(2, 4)`; `None` if `text` is not of that form."""
    if not isinstance(text, str) or text.count(":") != 1:
        return None
    left, right = text.split(":")
    if not (left.strip().isdigit() and right.strip().isdigit()):
        return None
    return int(left), int(right)


def n_m_mask(weights, n_m=(2, 4), axis=-2):
    """N:M mask: the `n` largest of every `m` consecutive weights along `axis`.

    Args:
        weights: Array.
        n_m: Two integers `(n, m)`, `1 <= n < m`; defaults to `(2, 4)`.
        axis: Integer, the input-channel axis (`-2` for Dense and ConvND kernels).

    Returns:
        A float32 array shaped like `weights`.

    Raises:
        TfpruneError: a bad `n_m`, or an `axis` whose size is not a multiple of `m` (a
            one-input-channel conv cannot take 2:4).
    """
    check_n_m(n_m)
    n, m = n_m
    weights = np.abs(np.asarray(weights, dtype=np.float32))
    size = weights.shape[axis] if weights.ndim else 1
    if size % m:
        raise TfpruneError(
            f"N:M pruning ({n}:{m}) needs the input-channel axis to be a multiple of {m}; this "
            f"kernel has shape {weights.shape} ({size} along axis {axis}). Prune this layer at "
            "another granularity. Received: n_m=" + repr(tuple(n_m))
        )
    moved = np.moveaxis(weights, axis, -1)
    groups = moved.reshape(-1, m)
    # Stable sort of -|w|: ties keep the earlier weight, as tfmot's top_k does.
    order = np.argsort(-groups, axis=1, kind="stable")[:, :n]
    kept = np.zeros_like(groups)
    np.put_along_axis(kept, order, 1.0, axis=1)
    return np.moveaxis(kept.reshape(moved.shape), -1, axis)


def _axes(axis, ndim):
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    return tuple(sorted(a % ndim for a in axes))


def along_axes(values, shape, axis):
    """`values`, one per channel, shaped to broadcast against an array of `shape`.

    Args:
        values: Array whose size is the product of `shape` along `axis`.
        shape: The shape of the array the values scale (a kernel).
        axis: The channel axis, or a tuple of axes whose product is the channels.

    Example:

    >>> along_axes(np.arange(6), (3, 3, 2, 3), (-2, -1)).shape
    (1, 1, 2, 3)
    """
    keep = _axes(axis, len(shape))
    return np.reshape(values, [shape[a] if a in keep else 1 for a in range(len(shape))])


def filter_norms(weights, axis=-1):
    """L2 norm of each output channel: reduces every axis but `axis` (an int or a tuple).

    Computed in float32, or float64 for float64 weights.

    Example:

    >>> filter_norms(np.array([[3.0, 0.0], [4.0, 0.0]]))
    array([5., 0.])
    """
    weights = np.asarray(weights)
    weights = weights.astype(np.result_type(weights.dtype, np.float32))
    keep = _axes(axis, weights.ndim)
    other = tuple(a for a in range(weights.ndim) if a not in keep)
    return np.sqrt(np.sum(np.square(weights), axis=other))


def filter_mask(weights, sparsity, axis=-1):
    """Filter mask: whole output channels kept or zeroed, ranked by L2 norm.

    Args:
        weights: Array.
        sparsity: Float in [0, 1), the fraction of output channels to zero.
        axis: The output-channel axis, or a tuple of axes whose product is the channels
            (a DepthwiseConv2D kernel: `(-2, -1)`); defaults to `-1`.

    Returns:
        A float32 array shaped like `weights`; at least one channel is kept.

    Example:

    >>> filter_mask(np.array([[1.0, 5.0, 0.1], [1.0, -5.0, 0.1]]), 0.5)
    array([[1., 1., 0.],
           [1., 1., 0.]], dtype=float32)
    """
    weights = np.asarray(weights, dtype=np.float32)
    norms = filter_norms(weights, axis)
    kept = _top_k_mask(norms, keep_count(norms.size, sparsity))
    return np.broadcast_to(along_axes(kept, weights.shape, axis),
                           weights.shape).astype(np.float32)


def check_granularity(granularity):
    """Normalises a granularity name; `"2:4"` becomes `("n:m", (2, 4))`.

    Returns:
        A tuple `(name, n_m)`, `n_m` being `None` unless the name was of the `"N:M"` form.

    Raises:
        TfpruneError: an unknown granularity.
    """
    n_m = parse_n_m(granularity)
    if n_m is not None:
        check_n_m(n_m)
        return "n:m", n_m
    if granularity not in GRANULARITIES:
        raise TfpruneError(
            f"Unknown granularity: use one of {GRANULARITIES} or 'N:M' such as '2:4'. "
            f"Received: granularity={granularity!r}"
        )
    return granularity, None


def compute_mask(weights, sparsity, granularity="weight", *, block_shape=(1, 4),
                 block_pooling="mean", n_m=(2, 4), in_axis=-2, out_axis=-1):
    """The mask of `weights` at `sparsity` for a granularity.

    Args:
        weights: Array.
        sparsity: Float in [0, 1) (ignored by `"n:m"`).
        granularity: `"weight"`, `"block"`, `"n:m"` (or `"N:M"` such as `"2:4"`) or
            `"filter"`; defaults to `"weight"`.
        block_shape: For `"block"`, see `block_mask`.
        block_pooling: For `"block"`, `"mean"` or `"max"`.
        n_m: For `"n:m"`, see `n_m_mask`.
        in_axis: The input-channel axis (for `"n:m"`); `None` if the kernel has none.
        out_axis: The output-channel axis or axes (for `"filter"`).

    Returns:
        A float32 array shaped like `weights`.

    Raises:
        TfpruneError: an unknown granularity or one this kernel cannot take.
    """
    name, parsed = check_granularity(granularity)
    if name == "weight":
        return weight_mask(weights, sparsity)
    if name == "block":
        return block_mask(weights, sparsity, block_shape, block_pooling)
    if name == "filter":
        return filter_mask(weights, sparsity, out_axis)
    if in_axis is None:
        raise TfpruneError(
            f"N:M pruning needs an input-channel axis; this kernel (shape "
            f"{np.shape(weights)}) has one input channel per filter. Received: "
            f"granularity={granularity!r}"
        )
    return n_m_mask(weights, parsed or n_m, in_axis)
