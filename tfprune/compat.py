"""The edges of the world: every use of a private Keras or LiteRT API, in one place.

tfprune leans on a few things its dependencies do not promise: how a Keras Functional model
stores its graph, the tensor's record of the layer that made it, the attribute a resumed
`fit` starts from, the TensorFlow trainer's multi-worker reduce, the JAX trainer's state
sync, and LiteRT's node list. They are read here and nowhere else
(`tests/test_compat.py` checks that no other module names them, and fails loudly, naming
the function to update, when an upgrade changes one of them).

Keras and LiteRT are imported on use: importing this module loads neither.
"""

import contextlib

from tfprune.errors import TfpruneError

# The private names read here; no other module of tfprune may use them.
KERAS_PRIVATE = ("_keras_history", "_nodes_by_depth", "_functional", "_inbound_nodes",
                 "_initial_epoch", "_symbolic_build", "_distribute_strategy",
                 "_collective_all_reduce_multi_worker")
PRIVATE_MODULES = ("keras.src",)
LITERT_PRIVATE = ("_get_ops_details",)

# ----------------------------------------------------------------------------- Keras


def producer(tensor):
    """The layer or operation that made a symbolic Keras tensor (`_keras_history`).

    Returns:
        The `keras.Operation` (a layer or a `keras.ops` call), or `None` for a tensor with
        no history (not symbolic).
    """
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


def nodes_by_depth(model):
    """A Functional model's calls by depth, `{depth: [keras Node]}` (depth 0 the outputs),
    or `None` for a model that is not Functional (subclassed). A Sequential's are its
    inner Functional's (`functional(model)`)."""
    return getattr(model, "_nodes_by_depth", None)


def functional(model):
    """The Functional model a built Sequential keeps inside (`_functional`), `None` when
    the Sequential is unbuilt or `model` is not a Sequential."""
    return getattr(model, "_functional", None)


def inbound_nodes(operation):
    """The calls of a layer or `keras.ops` operation (`_inbound_nodes`), oldest first."""
    return getattr(operation, "_inbound_nodes", None) or []


def raw_variable(layer, name):
    """`layer.<name>`'s variable itself: Keras keeps it as `_<name>` behind a property that
    may dequantize or add LoRA; `None` when the layer has no such weight."""
    variable = getattr(layer, "_" + name, None)
    return variable if variable is not None else getattr(layer, name, None)


def set_initial_epoch(model, epoch):
    """Makes the next `model.fit` start at `epoch` (`None`: at its own `initial_epoch`),
    as Keras' own `BackupAndRestore` does (`model._initial_epoch`)."""
    model._initial_epoch = epoch


@contextlib.contextmanager
def fit_without_collective_reduce(model, strategy, batch):
    """Lets Keras 3's TensorFlow trainer run `fit` under a `MultiWorkerMirroredStrategy`.

    keras-team/keras#20585: the trainer reduces across workers a second time what the
    strategy already reduced, and fails. Inside this block the model is built under the
    strategy (`_symbolic_build`), reads the strategy from the scope (`_distribute_strategy`
    unset) and the trainer's `_collective_all_reduce_multi_worker` answers `False`; both are
    put back on exit.

    Args:
        model: A compiled Keras model made in `strategy`'s scope.
        strategy: The `tf.distribute.MultiWorkerMirroredStrategy`.
        batch: One batch, `(x, y)` or `x`, to build the model's train function on.
    """
    from keras.src.backend.tensorflow import trainer

    with strategy.scope():
        model._symbolic_build(data_batch=batch)
    saved = model._distribute_strategy, trainer._collective_all_reduce_multi_worker
    model._distribute_strategy = None  # fit reads the scope's strategy, skips the reduce
    trainer._collective_all_reduce_multi_worker = lambda strategy: False
    try:
        with strategy.scope():
            yield
    finally:
        model._distribute_strategy = saved[0]
        trainer._collective_all_reduce_multi_worker = saved[1]


def enclosing_scope(scope):
    """The `keras.StatelessScope` that was current when `scope` was entered, or `None`
    (Keras keeps it as `original_scope`)."""
    return getattr(scope, "original_scope", None)


def sync_jax_trainer(model):
    """Writes the values a JAX trainer holds during `fit` back into `model`'s variables
    (its `jax_state_sync`); a no-op on other backends and outside `fit`."""
    sync = getattr(model, "jax_state_sync", None)
    if callable(sync):
        sync()


# ----------------------------------------------------------------------------- LiteRT


class LiteRtApiChanged(TfpruneError):
    """LiteRT's private node listing is gone or changed shape (a LiteRT upgrade)."""


def node_details(interpreter):
    """Every node of an allocated LiteRT interpreter, in execution order.

    LiteRT's `Interpreter._get_ops_details`: the model's ops first, with the index they
    have in the file, then one `DELEGATE` node per partition a delegate took, with the
    partition's input and output tensors.

    Args:
        interpreter: An allocated `ai_edge_litert.interpreter.Interpreter`.

    Returns:
        A list of dicts with `index` (int), `op_name` (str), `inputs` and `outputs` (lists
        of tensor indices, -1 for an absent optional input).

    Raises:
        LiteRtApiChanged: the private API is missing or answers in another shape.
    """
    try:
        nodes = interpreter._get_ops_details()
        return [{"index": int(n["index"]), "op_name": str(n["op_name"]),
                 "inputs": [int(t) for t in n["inputs"]],
                 "outputs": [int(t) for t in n["outputs"]]} for n in nodes]
    except Exception as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise LiteRtApiChanged(f"LiteRT's node listing (Interpreter._get_ops_details) changed "
                               f"({type(e).__name__}: {(lines or [''])[0][:200]}): update "
                               "tfprune.compat.node_details for this LiteRT. Received: "
                               f"ai_edge_litert {litert_version()}") from e


def litert_version():
    """The installed `ai-edge-litert` version, or `"unknown"`."""
    from importlib import metadata

    try:
        return metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        return "unknown"
