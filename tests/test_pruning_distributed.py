"""Pruning under tf.distribute.MirroredStrategy on two logical CPU devices.

Logical devices must be configured before TensorFlow initialises its devices, which the
other tests in this process (or this xdist worker) have already done: the training runs in
a fresh subprocess and reports back as JSON.
"""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    import tfprune

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 12)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    with strategy.scope():
        model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(32, name="a"),
                                  keras.layers.Dense(2, name="b")])
        pruned = tfprune.prune(model, tfprune.PolynomialDecay(0.0, 0.75, 0, 8, frequency=2))
        pruned.compile("adam", "sparse_categorical_crossentropy")
    history = pruned.fit(x, y, batch_size=16, epochs=2, verbose=0,
                         callbacks=[tfprune.UpdatePruningStep()])
    wrapper = pruned.layers[0]
    backing = wrapper.masks[0]._value     # the tf.Variable behind the keras.Variable
    replicas = [np.asarray(v) for v in backing.values]
    small = tfprune.strip(pruned)
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "mirrored": type(backing).__name__,
        "masks_agree": bool(all(np.array_equal(replicas[0], r) for r in replicas[1:])),
        "step": int(wrapper.pruning_step.numpy()),
        "sparsity": tfprune.sparsity(pruned),
        "strip_matches": bool(np.allclose(small(x[:8]), pruned(x[:8]), atol=1e-5)),
        "loss_finite": bool(np.isfinite(history.history["loss"]).all()),
    }))
    """
)


def test_pruning_under_mirrored_strategy_on_two_cpus():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["mirrored"] == "MirroredVariable" and report["masks_agree"]
    assert report["step"] == 15                       # 8 batches x 2 epochs: steps 0..15
    assert report["sparsity"] == {"a": 0.75, "b": 0.75}
    assert report["strip_matches"] and report["loss_finite"]
