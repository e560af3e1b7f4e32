"""`tfprune.compat`: each private Keras or LiteRT API it reads still answers as tfprune expects
(a test here fails, naming the function, on the upgrade that changes one), and no other
module of `tfprune/` reads a private API of another package."""

import ast
from pathlib import Path

import keras
import numpy as np
import pytest

from tfprune import compat, export

PACKAGE = Path(__file__).resolve().parents[1] / "tfprune"
L = keras.layers


def _functional():
    inputs = keras.Input((6,), name="x")
    hidden = L.Dense(4, name="hidden")(inputs)
    outputs = L.Dense(2, name="out")(L.ReLU(name="relu")(hidden))
    return keras.Model(inputs, outputs), hidden


@pytest.mark.backend_neutral
def test_producer_is_the_layer_that_made_a_tensor():
    model, hidden = _functional()
    assert compat.producer(hidden) is model.get_layer("hidden")
    assert compat.producer(model.outputs[0]).name == "out"
    assert compat.producer(np.ones(3)) is None  # not a symbolic tensor


@pytest.mark.backend_neutral
def test_nodes_by_depth_lists_every_call_from_the_outputs_back():
    model, _ = _functional()
    by_depth = compat.nodes_by_depth(model)
    assert sorted(by_depth) == [0, 1, 2, 3]
    assert by_depth[0][0].operation.name == "out"  # depth 0: the outputs
    assert [n.operation.name for d in sorted(by_depth, reverse=True) for n in by_depth[d]
            if not n.is_input] == ["hidden", "relu", "out"]
    assert all(hasattr(n, name) for n in by_depth[1]
               for name in ("operation", "input_tensors", "outputs", "arguments", "is_input"))


@pytest.mark.backend_neutral
def test_a_built_sequential_keeps_a_functional_inside():
    sequential = keras.Sequential([keras.Input((3,)), L.Dense(2, name="d")])
    inner = compat.functional(sequential)
    assert inner is not None and compat.nodes_by_depth(inner)
    assert compat.functional(keras.Sequential([L.Dense(2)])) is None  # unbuilt
    assert compat.nodes_by_depth(keras.Model) is None  # not a Functional model


@pytest.mark.backend_neutral
def test_inbound_nodes_are_an_operations_calls():
    model, _ = _functional()
    nodes = compat.inbound_nodes(model.get_layer("relu"))
    assert len(nodes) == 1
    assert compat.producer(nodes[0].input_tensors[0]).name == "hidden"


@pytest.mark.backend_neutral
def test_raw_variable_is_the_variable_behind_the_property():
    dense = L.Dense(3)
    dense.build((None, 4))
    assert compat.raw_variable(dense, "kernel") is dense._kernel
    assert compat.raw_variable(dense, "bias") is dense.bias
    assert compat.raw_variable(dense, "nothing") is None


@pytest.mark.backend_neutral
def test_set_initial_epoch_makes_fit_start_there():
    model = keras.Sequential([keras.Input((3,)), L.Dense(1)])
    model.compile("sgd", "mse")
    compat.set_initial_epoch(model, 3)
    history = model.fit(np.ones((4, 3)), np.ones((4, 1)), epochs=5, verbose=0)
    assert history.epoch == [3, 4]
    compat.set_initial_epoch(model, None)
    assert model.fit(np.ones((4, 3)), np.ones((4, 1)), epochs=2, verbose=0).epoch == [0, 1]


def test_the_tensorflow_trainer_still_has_what_multi_worker_fit_patches():
    """`fit_without_collective_reduce` (keras-team/keras#20585) needs these three."""
    from keras.src.backend.tensorflow import trainer

    assert callable(trainer._collective_all_reduce_multi_worker)
    model = keras.Sequential([keras.Input((3,)), L.Dense(1)])
    assert hasattr(model, "_distribute_strategy") and callable(model._symbolic_build)


@pytest.mark.backend_neutral
def test_enclosing_scope_and_the_jax_sync_are_where_backend_reads_them():
    v = keras.Variable(1.0)
    with keras.StatelessScope(state_mapping=[(v, 2.0)]) as outer:
        with keras.StatelessScope() as inner:
            assert compat.enclosing_scope(inner) is outer
    compat.sync_jax_trainer(keras.Sequential([keras.Input((1,)), L.Dense(1)]))  # no-op here
    if keras.backend.backend() == "jax":
        from keras.src.backend.jax.trainer import JAXTrainer

        assert callable(JAXTrainer.jax_state_sync)


@pytest.mark.slow
def test_node_details_lists_ops_then_delegate_partitions(tmp_path):
    model = keras.Sequential([keras.Input((6,)), L.Dense(4), L.Dense(2)])
    path = export.to_tflite(model, tmp_path / "tiny.tflite")
    from tfprune.tflite.interpreter import load_interpreter

    interpreter, used, _ = load_interpreter(path, threads=1)
    nodes = compat.node_details(interpreter)
    assert [n["index"] for n in nodes] == list(range(len(nodes)))
    assert {"FULLY_CONNECTED"} <= {n["op_name"] for n in nodes}
    assert (used == "xnnpack") == any(n["op_name"] == "DELEGATE" for n in nodes)


def test_a_changed_node_listing_is_one_loud_line():
    class Upgraded:
        def _get_ops_details(self):
            return [{"name": "CONV_2D"}]  # no op_name

    with pytest.raises(compat.LiteRtApiChanged, match="update tfprune.compat.node_details"):
        compat.node_details(Upgraded())


# ---------------------------------------------------------------- nowhere else


def _our_private_names():
    """The `_names` tfprune defines itself: functions, classes, `self._x = ...`, globals."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                    isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Call) and len(node.args) >= 2 and \
                    getattr(node.args[0], "id", None) == "self" and \
                    isinstance(node.args[1], ast.Constant):  # object.__setattr__(self, "_x", v)
                names.add(str(node.args[1].value))
    return {name for name in names if name.startswith("_")}


def _private_uses(path, ours):
    """`(line, name)` of each private name of another package that `path` reads."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        name = None
        if isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in (
                "getattr", "hasattr", "setattr") and len(node.args) >= 2:
            arg = node.args[1]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                name = arg.value
            elif isinstance(arg, ast.BinOp) and isinstance(arg.left, ast.Constant):
                name = f"{arg.left.value}..."  # "_" + name: a private name made at run time
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""]
            found += [(node.lineno, m) for m in modules
                      if m.startswith(compat.PRIVATE_MODULES)]
        if name and name.startswith("_") and not name.startswith("__") and name not in ours:
            found.append((node.lineno, name))
    return found


@pytest.mark.slow
def test_no_module_but_compat_reads_a_private_api_of_another_package():
    ours = _our_private_names() - set(compat.KERAS_PRIVATE) - set(compat.LITERT_PRIVATE)
    found = {str(path.relative_to(PACKAGE)): uses for path in sorted(PACKAGE.rglob("*.py"))
             if path.name != "compat.py" and (uses := _private_uses(path, ours))}
    assert not found, f"private APIs read outside tfprune/compat.py: {found}"


def test_the_private_api_check_can_fail(tmp_path):
    """It sees each way a private name is read; tfprune's own private names pass."""
    bad = tmp_path / "bad.py"
    bad.write_text("import keras.src.ops\n"
                   "def f(model, layer, ours):\n"
                   "    model._nodes_by_depth\n"
                   "    getattr(layer, '_kernel')\n"
                   "    getattr(layer, '_' + 'kernel')\n"
                   "    ours._mine\n")
    uses = _private_uses(bad, {"_mine"})
    assert [name for _, name in uses] == ["keras.src.ops", "_nodes_by_depth", "_kernel", "_..."]
    assert set(compat.KERAS_PRIVATE) <= {n for _, n in _private_uses(
        PACKAGE / "compat.py", set())} | {"_functional", "_nodes_by_depth", "_inbound_nodes"}
