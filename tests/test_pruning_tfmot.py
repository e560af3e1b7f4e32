"""Our schedules and masks against tfmot's, on many random configurations.

tfmot runs in a subprocess on tf_keras (TF_USE_LEGACY_KERAS=1): importing it here would flip
this Keras 3 process to the legacy Keras.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from tfprune.errors import TfpruneError
from tfprune.pruning import masks, schedules

REFERENCE = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_impl

    s = tfmot.sparsity.keras
    job = json.load(open(sys.argv[1]))
    out = {"schedules": [], "masks": []}
    for kind, config, steps in job["schedules"]:
        schedule = getattr(s, kind)(**config)
        rows = []
        for step in steps:
            should, sparsity = schedule(tf.constant(step, dtype=tf.int64))
            rows.append([bool(should.numpy()), float(sparsity.numpy())])
        out["schedules"].append(rows)
    arrays = np.load(job["weights"])
    for i, (kind, sparsity, option) in enumerate(job["masks"]):
        w = tf.constant(arrays[str(i)])
        block = tuple(option) if kind == "block" else (1, 1)
        pooling = "AVG" if kind != "block_max" else "MAX"
        if kind == "block_max":
            block = (1, 4)
        p = pruning_impl.Pruning(lambda: tf.constant(0, tf.int64), [],
                                 s.ConstantSparsity(sparsity, 0), block, pooling)
        if kind == "weight":
            mask = p._update_mask(w)[1]
        elif kind in ("block", "block_max"):
            mask = p._maybe_update_block_mask(w)[1]
        else:  # tfmot's m_by_n is (zeros, group); ours is (kept, group).
            mask = p._update_mask_sparsity_m_by_n(w, (option[1] - option[0], option[1]))
        out["masks"].append(np.asarray(mask).tolist())
    json.dump(out, open(sys.argv[2], "w"))
    """
)


def _random_schedules(rng, count=60):
    jobs = []
    for _ in range(count):
        begin = int(rng.integers(0, 50))
        end = begin + int(rng.integers(1, 400))
        frequency = int(rng.integers(1, 30))
        steps = sorted({0, begin, end, end + 1, *rng.integers(0, end + 60, 25).tolist()})
        if rng.random() < 0.5:
            config = {"target_sparsity": round(float(rng.random()) * 0.99, 4),
                      "begin_step": begin, "end_step": -1 if rng.random() < 0.3 else end,
                      "frequency": frequency}
            jobs.append(("ConstantSparsity", config, steps))
        else:
            # Ours refuses end_step < begin_step + frequency (see test_degenerate_decay...).
            config = {"initial_sparsity": round(float(rng.random()) * 0.5, 4),
                      "final_sparsity": round(0.5 + float(rng.random()) * 0.49, 4),
                      "begin_step": begin, "end_step": end,
                      "power": int(rng.integers(1, 5)),
                      "frequency": min(frequency, end - begin)}
            jobs.append(("PolynomialDecay", config, steps))
    return jobs


# The schedule a new user tried: tfmot accepts it and never prunes; ours refuses it.
DEGENERATE = ("PolynomialDecay", {"initial_sparsity": 0.0, "final_sparsity": 0.5,
                                  "begin_step": 0, "end_step": 94}, list(range(0, 400)))


def _random_masks(rng):
    jobs, weights = [], []
    shapes = [(20, 12), (7, 10), (33, 5), (3, 3, 8, 16), (5, 5, 4, 6), (64,), (1, 9)]
    for shape in shapes:
        for sparsity in (0.0, 0.3, 0.5, 0.77, 0.95):
            jobs.append(("weight", sparsity, None))
            weights.append(rng.standard_normal(shape).astype(np.float32))
    # Only shapes the blocks divide: with partial blocks tfmot pools SAME-padded windows
    # (padding split before and after) but expands the mask from the origin, so its blocks
    # and its mask disagree; ours pools the blocks it masks (tested in test_masks.py).
    for shape in [(16, 12), (8, 20), (12, 8)]:
        for block in [(1, 4), (2, 2), (4, 1), (4, 4)]:
            for sparsity in (0.25, 0.5, 0.8):
                jobs.append(("block", sparsity, list(block)))
                weights.append(rng.standard_normal(shape).astype(np.float32))
        jobs.append(("block_max", 0.6, [1, 4]))
        weights.append(rng.standard_normal(shape).astype(np.float32))
    for shape in [(16, 12), (8, 3), (3, 3, 8, 5), (1, 1, 12, 7)]:
        for n_m in [(2, 4), (1, 4), (3, 4), (1, 2)]:
            jobs.append(("n:m", 0.5, list(n_m)))
            weights.append(rng.standard_normal(shape).astype(np.float32))
    return jobs, weights


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    rng = np.random.default_rng(1234)
    folder = tmp_path_factory.mktemp("tfmot")
    mask_jobs, weights = _random_masks(rng)
    np.savez(folder / "w.npz", **{str(i): w for i, w in enumerate(weights)})
    job = {"schedules": [DEGENERATE, *_random_schedules(rng)], "masks": mask_jobs,
           "weights": str(folder / "w.npz")}
    (folder / "job.json").write_text(json.dumps(job))
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", REFERENCE, str(folder / "job.json"), str(folder / "out.json")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        pytest.fail("tfmot reference failed:\n" + result.stderr[-3000:])
    return job, weights, json.loads((folder / "out.json").read_text())


@pytest.mark.slow
def test_schedules_match_tfmot(reference):
    job, _, out = reference
    compared = 0
    for (kind, config, steps), rows in zip(job["schedules"][1:], out["schedules"][1:],
                                           strict=True):
        ours = getattr(schedules, kind)(**config)
        for step, (should, sparsity) in zip(steps, rows, strict=True):
            got_should, got_sparsity = ours(step)
            assert got_should == should, (kind, config, step)
            assert got_sparsity == pytest.approx(sparsity, abs=1e-6), (kind, config, step)
            # The tensor path (graph-friendly) agrees with the host path.
            t_should, t_sparsity = ours(keras.ops.convert_to_tensor(step, dtype="int64"))
            assert bool(t_should) == should
            assert float(t_sparsity) == pytest.approx(sparsity, abs=1e-6)
            compared += 1
    assert compared > 1000


def test_degenerate_decay_prunes_nothing_in_tfmot_and_is_refused_here(reference):
    """PolynomialDecay(0.0, 0.5, begin_step=0, end_step=94), frequency 100 by default: tfmot
    updates the masks once, at step 0, to sparsity 0.0 -- a fit that prunes nothing."""
    job, _, out = reference
    assert job["schedules"][0] == DEGENERATE
    updates = [(step, sparsity) for step, (should, sparsity)
               in zip(DEGENERATE[2], out["schedules"][0], strict=True) if should]
    assert updates == [(0, 0.0)]
    with pytest.raises(TfpruneError, match=r"end_step >= 100 or frequency <= 94"):
        schedules.PolynomialDecay(**DEGENERATE[1])


def test_masks_match_tfmot(reference):
    job, weights, out = reference
    for (kind, sparsity, option), w, theirs in zip(job["masks"], weights, out["masks"],
                                                   strict=True):
        theirs = np.asarray(theirs, dtype=np.float32).reshape(w.shape)
        if kind == "weight":
            ours = masks.weight_mask(w, sparsity)
        elif kind == "block":
            ours = masks.block_mask(w, sparsity, tuple(option), "mean")
        elif kind == "block_max":
            ours = masks.block_mask(w, sparsity, (1, 4), "max")
        else:
            ours = masks.n_m_mask(w, tuple(option), axis=-2 if w.ndim > 1 else -1)
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{kind} {sparsity} {option} "
                                      f"{w.shape}")
