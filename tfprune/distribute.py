"""Training on several devices or machines with `tf.distribute`, pruning included.

    strategy(kind)     the strategy of "none", "mirrored" or "multi_worker", made once
    role(kind)         this process's task in `TF_CONFIG`, and whether it is the chief
    agree_min(value)   the smallest of an integer over all workers (every worker calls it)
    fit(model, x, y)   `model.fit`, also under `MultiWorkerMirroredStrategy` in Keras 3

Pruning needs nothing special under a strategy: `tfprune.prune` (which clones the model,
so it may have been built before) and compile inside `strategy.scope()`, then fit with
`tfprune.UpdatePruningStep()`:

    strategy = tfprune.distribute.strategy("mirrored")
    with strategy.scope():
        pruned = tfprune.prune(model, schedule)      # masks and steps: mirrored variables
        pruned.compile(...)
        tfprune.distribute.fit(pruned, x, y, batch_size=128, epochs=4,
                               callbacks=[tfprune.UpdatePruningStep()])

The batch size is global (split over the replicas), so the callback, which counts batches
on the host, counts the same steps as on one device and a schedule means the same thing.
Each worker recomputes the masks on its host from the same synchronised weights, so every
replica's masks agree without communication; `hold_zeros` constraints run on each replica.

Keras 3's `fit` fails under `MultiWorkerMirroredStrategy` (keras-team/keras#20585: the
first batch and the metrics are reduced across workers in ways TensorFlow refuses);
`fit` here works around it. `MultiWorkerMirroredStrategy` must be made before TensorFlow
runs anything else in the process (collective ops are configured at start-up): make it
first with `strategy("multi_worker")`.

Importing this module loads no TensorFlow.
"""

import contextlib
import dataclasses
import functools
import json
import os

from tfprune import options
from tfprune.errors import TfpruneError

SCRATCH_PREFIX = "workertemp_"  # Keras' name for a non-chief worker's files


@dataclasses.dataclass(frozen=True)
class Role:
    """One process's part in a distributed run.

    Attributes:
        task_type: String, its job in `TF_CONFIG` (`"chief"` or `"worker"`).
        task_id: Integer, its index in that job.
        workers: Integer, how many processes train together.
        is_chief: Boolean, whether it writes the run's files.
    """

    task_type: str = "worker"
    task_id: int = 0
    workers: int = 1
    is_chief: bool = True

    @property
    def scratch_name(self):
        """The folder a non-chief worker writes to, inside the run folder (Keras' naming)."""
        return f"{SCRATCH_PREFIX}{self.task_id}"


def role(kind, tf_config=None):
    """This process's part in a run with `distribute=kind`.

    With `"multi_worker"` it reads `TF_CONFIG`: the chief is the task of type `"chief"`, or
    worker 0 when the cluster has no chief (TensorFlow's rule). Otherwise the process is
    alone and the chief.

    Args:
        kind: `"none"`, `"mirrored"` or `"multi_worker"`.
        tf_config: The `TF_CONFIG` JSON string, defaults to the environment variable.

    Returns:
        A `Role`.

    Raises:
        TfpruneError: an unknown kind; `"multi_worker"` without a `TF_CONFIG` naming this
            process as a chief or worker of its cluster.

    Example:

    >>> from tfprune.distribute import role
    >>> tf_config = ('{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, '
    ...              '"task": {"type": "worker", "index": 1}}')
    >>> r = role("multi_worker", tf_config)
    >>> r.is_chief, r.workers, r.scratch_name
    (False, 2, 'workertemp_1')
    >>> role("mirrored").is_chief
    True
    """
    if kind not in options.DISTRIBUTE:
        raise TfpruneError(f"Unknown distribute. Expected one of {list(options.DISTRIBUTE)}. "
                           f"Received: distribute={kind!r}")
    if kind != "multi_worker":
        return Role()
    text = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
    fix = ("set TF_CONFIG on every machine to the cluster and this machine's task (README: "
           "Several machines), or use --distribute=mirrored on one machine")
    if not text or not text.strip():
        raise TfpruneError(f"distribute='multi_worker' needs TF_CONFIG: {fix}. "
                           "Received: TF_CONFIG unset")
    try:
        parsed = json.loads(text)
        cluster, task = parsed["cluster"], parsed["task"]
        task_type, task_id = task["type"], int(task["index"])
        jobs = {job: list(cluster.get(job) or []) for job in ("chief", "worker")}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise TfpruneError(f"TF_CONFIG is not a cluster and task ({type(e).__name__}: {e}): "
                           f"{fix}. Received: TF_CONFIG={text[:200]!r}") from e
    if task_type not in jobs or not 0 <= task_id < len(jobs[task_type]):
        raise TfpruneError(f"TF_CONFIG's task must be a chief or worker of its cluster: {fix}. "
                           f"Received: task={task!r}")
    is_chief = task_type == "chief" or (task_id == 0 and not jobs["chief"])
    return Role(task_type, task_id, len(jobs["chief"]) + len(jobs["worker"]), is_chief)


@functools.cache
def strategy(kind):
    """The `tf.distribute` strategy of `kind`, made once per process (`None` for `"none"`).

    `"mirrored"` is a `MirroredStrategy` over this machine's GPUs, or its logical CPU
    devices when it has none; `"multi_worker"` a `MultiWorkerMirroredStrategy` over the
    cluster in `TF_CONFIG` (which must name this process, see `role`).

    Raises:
        TfpruneError: a bad `TF_CONFIG`, or `"multi_worker"` asked for after TensorFlow has
            started running in this process.
    """
    role(kind)  # a bad TF_CONFIG is one line here, not a stack trace from TensorFlow
    if kind == "none":
        return None
    import tensorflow as tf

    if kind == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as e:  # "Collective ops must be configured at program startup"
        raise TfpruneError(
            "distribute='multi_worker' must start before TensorFlow runs anything in this "
            "process: call tfprune.pipeline.run (or tfprune.distribute.strategy("
            f"'multi_worker')) first. Received: {e}") from e


def is_multi_worker(strategy):
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` (its workers are processes)."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def agree_min(value, strategy=None):
    """The smallest of an integer (or of each of a list of them) over every worker.

    A collective operation: under `MultiWorkerMirroredStrategy` every worker must call it,
    at the same point of its program. With any other strategy (one process) it returns
    `value`.

    Args:
        value: Integer, or list of integers, this worker's.
        strategy: The strategy, defaults to the one in scope.

    Returns:
        The smallest value of all workers: an integer, or a list (element by element).

    Example:

    >>> from tfprune.distribute import agree_min
    >>> agree_min(3), agree_min([3, -3])
    (3, [3, -3])
    """
    import tensorflow as tf

    values = [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
    strategy = strategy or tf.distribute.get_strategy()
    if is_multi_worker(strategy):
        per_replica = strategy.run(lambda: tf.constant([values], tf.int64))
        values = [int(v) for v in tf.reduce_min(strategy.gather(per_replica, axis=0), axis=0)]
    return values if isinstance(value, (list, tuple)) else values[0]


def fit(model, x, y=None, **kwargs):
    """`model.fit(x, y, **kwargs)`, which also works under `MultiWorkerMirroredStrategy`.

    Keras 3 reduces a first batch across workers to build the model, and reduces scalar
    metrics along an axis they lack (keras-team/keras#20585). Under that strategy this
    builds the model's training state (metrics, loss, optimizer) from a local batch first,
    lets `fit` take the strategy from the scope, and keeps each worker's metrics local
    for its logs. Training itself is unchanged: gradients are still summed over all
    workers. With any other strategy, or none, it is `model.fit`.

    Args:
        model: A compiled Keras model (made in the strategy's scope).
        x: NumPy inputs, or a `tf.data.Dataset` of `(x, y)` batches.
        y: NumPy labels, or `None` with a dataset.
        **kwargs: `model.fit` arguments.

    Returns:
        The `History` of `model.fit`.

    Example:

    >>> import keras, numpy as np
    >>> from tfprune.distribute import fit
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> len(fit(model, np.ones((8, 3)), np.ones((8, 1)), epochs=2, verbose=0).epoch)
    2
    """
    with _multi_worker_fit(model, x, y):
        return model.fit(x, y, **kwargs)


@contextlib.contextmanager
def _multi_worker_fit(model, x, y):
    strategy = model.distribute_strategy
    if not is_multi_worker(strategy):
        yield
        return
    from tfprune import compat

    batch = (x[:1], y[:1]) if y is not None else next(iter(x))
    with compat.fit_without_collective_reduce(model, strategy, batch):
        yield
