"""Runs one piece of pruning on whatever Keras backend this process has, for the
cross-backend tests (`test_backends_cross.py` starts it with KERAS_BACKEND set).

    python tests/backends_run.py trajectory weight,filter  # JSON: per-step mask sparsity
    python tests/backends_run.py export FOLDER            # prune, fit, shrink; save .keras
"""

import json
import sys

import keras
import numpy as np

import tfprune
from tfprune.backend import sync_trainer_state

L = keras.layers


def model():
    """A small Conv-BN CNN whose kernels come from NumPy's seeded generator: the same
    starting weights on every backend."""
    net = keras.Sequential([
        keras.Input((12, 12, 1)),
        L.Conv2D(8, 3, padding="same", name="conv1"), L.BatchNormalization(name="bn1"),
        L.ReLU(), L.MaxPooling2D(),
        L.Conv2D(12, 3, padding="same", name="conv2"), L.ReLU(), L.MaxPooling2D(), L.Flatten(),
        L.Dense(16, activation="relu", name="fc1"), L.Dense(4, name="fc2"),
    ])
    rng = np.random.default_rng(0)
    for layer in net.layers:
        if hasattr(layer, "kernel"):
            shape = tuple(layer.kernel.shape)
            layer.kernel.assign(rng.normal(0.0, 0.3, shape).astype(np.float32))
    return net


def data(n=96):
    rng = np.random.default_rng(1)
    return rng.random((n, 12, 12, 1), dtype=np.float32), rng.integers(0, 4, n)


class Recorder(keras.callbacks.Callback):
    """Each wrapper's mask sparsity after every step, as the trainer holds it."""

    def __init__(self):
        super().__init__()
        self.steps, self.first_masks = [], None

    def on_train_batch_end(self, batch, logs=None):
        sync_trainer_state(self.model)
        wrappers = tfprune.pruning.callbacks.pruning_wrappers(self.model)
        if self.first_masks is None:  # step 0's: made from the same weights everywhere
            self.first_masks = {w.layer.name: np.asarray(w.masks[0]).astype(int).ravel().tolist()
                                for w in wrappers if w.prunable}
        self.steps.append({w.layer.name: round(1.0 - float(np.mean(np.asarray(w.masks[0]))), 6)
                           for w in wrappers if w.prunable})


def pruned_fit(granularity, callbacks=()):
    schedule = tfprune.PolynomialDecay(0.25, 0.75, begin_step=0, end_step=10, frequency=2)
    pruned = tfprune.prune(model(), schedule, granularity=granularity)
    pruned.compile(keras.optimizers.SGD(0.05),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data()
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False,
               callbacks=[tfprune.UpdatePruningStep(), *callbacks])
    return pruned


def trajectory(granularities):
    found = {"backend": keras.backend.backend()}
    for granularity in granularities.split(","):
        recorder = Recorder()
        pruned = pruned_fit(granularity, [recorder])
        found[granularity] = {"steps": recorder.steps, "sparsity": tfprune.sparsity(pruned),
                              "first_masks": recorder.first_masks}
    print(json.dumps(found))


def export(folder):
    pruned = pruned_fit("filter")
    small = tfprune.shrink(tfprune.fuse(tfprune.strip(pruned)))
    x, _ = data(32)
    pruned.save(f"{folder}/pruned.keras")
    small.save(f"{folder}/small.keras")
    np.savez(f"{folder}/outputs.npz", x=x, pruned=pruned.predict(x, verbose=0),
             small=small.predict(x, verbose=0))
    print(json.dumps({"backend": keras.backend.backend(), "sparsity": tfprune.sparsity(pruned),
                      "filters": [small.get_layer("conv1").filters,
                                  small.get_layer("conv2").filters]}))


if __name__ == "__main__":
    {"trajectory": trajectory, "export": export}[sys.argv[1]](sys.argv[2])
