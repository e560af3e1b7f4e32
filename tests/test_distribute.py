"""A distributed run's plan, without TensorFlow's cluster: roles from TF_CONFIG, the worker's
share of the stages and folder, the agreement on where to resume, and bad set-ups.

The runs on two devices and on two worker processes are in test_pruning_distributed.py.
"""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfprune import distribute
from tfprune.errors import TfpruneError
from tfprune.pipeline import STAGES, Context, PipelineConfig, Stage, distributed, execute

ROOT = Path(__file__).resolve().parent.parent


def tf_config(task_type, index, chief=False, workers=2):
    cluster = {"worker": [f"127.0.0.1:{2000 + i}" for i in range(workers)]}
    if chief:
        cluster["chief"] = ["127.0.0.1:1999"]
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize(("config", "chief", "workers", "task_id"), [
    (tf_config("worker", 0), True, 2, 0),                 # no chief job: worker 0 leads
    (tf_config("worker", 1), False, 2, 1),
    (tf_config("chief", 0, chief=True), True, 3, 0),
    (tf_config("worker", 0, chief=True), False, 3, 0),    # a chief job: worker 0 follows
])
def test_role_follows_tensorflows_chief_rule(config, chief, workers, task_id):
    role = distribute.role("multi_worker", config)
    assert (role.is_chief, role.workers, role.task_id) == (chief, workers, task_id)
    assert role.scratch_name == f"workertemp_{task_id}"


@pytest.mark.parametrize(("config", "message"), [
    ("", "needs TF_CONFIG"),
    ("{not json", "is not a cluster and task"),
    ('{"cluster": {"worker": ["a:1"]}}', "is not a cluster and task"),
    (tf_config("ps", 0), "must be a chief or worker"),
    (tf_config("worker", 5), "must be a chief or worker"),
])
def test_bad_tf_config_is_one_line(config, message):
    with pytest.raises(TfpruneError, match=message) as raised:
        distribute.role("multi_worker", config)
    assert "\n" not in str(raised.value) and "Received:" in str(raised.value)


def test_one_machine_is_its_own_chief():
    assert distribute.role("none").is_chief and distribute.role("mirrored").is_chief
    with pytest.raises(TfpruneError, match="Unknown distribute"):
        distribute.role("horovod")


def test_a_worker_runs_the_training_stages_into_its_scratch_folder(tmp_path):
    config = PipelineConfig(export_dir=str(tmp_path / "run"), tensorboard_dir=str(tmp_path),
                            distribute="multi_worker")
    worker = distribute.role("multi_worker", tf_config("worker", 1))
    mine, stages = distributed.share(config, STAGES, worker)
    assert [stage.name for stage in stages] == ["baseline", "prune", "retrain"]  # fold after
    assert mine.export_dir == str(tmp_path / "run" / "workertemp_1")
    assert mine.tensorboard_dir is None
    chief = distribute.role("multi_worker", tf_config("worker", 0))
    assert distributed.share(config, STAGES, chief) == (config, STAGES)
    stopped = PipelineConfig(export_dir="x", stop_after="export")
    assert distributed.share(stopped, STAGES, worker)[0].stop_after is None  # not its stage
    stopped = PipelineConfig(export_dir="x", stop_after="prune")
    assert distributed.share(stopped, STAGES, worker)[0].stop_after == "prune"


def stub(name, calls, trains=False):
    def run(context):
        calls.append(name)
        (context.folder / f"{name}.txt").write_text(name)
        return [f"{name}.txt"], {}, name

    return Stage(name, run, writes=(f"{name}.txt",), trains=trains)


def test_workers_resume_from_the_earliest_stage_any_of_them_needs(tmp_path, monkeypatch):
    calls = []
    stages = [stub("train", calls, trains=True), stub("merge", calls),
              stub("retrain", calls, trains=True), stub("export", calls)]
    config = PipelineConfig(export_dir=str(tmp_path))
    execute(stages, Context(config))
    assert calls == ["train", "merge", "retrain", "export"]

    asked = []

    def other_worker_lost_its_retrain(values, strategy):
        asked.append(values[0])
        return [min(values[0], 2), *values[1:]]

    monkeypatch.setattr(distribute, "is_multi_worker", lambda strategy: True)
    monkeypatch.setattr(distribute, "agree_min", other_worker_lost_its_retrain)
    context = Context(PipelineConfig(export_dir=str(tmp_path), resume=True))
    strategy = type("Strategy", (), {"scope": staticmethod(contextlib.nullcontext)})()
    context.distribution = distributed.Distribution(strategy, distribute.Role())
    calls.clear()
    execute(stages, context)
    # This worker needed nothing below export (4 = past the shared stages, 3 of them); the
    # other one needs retrain again: so does this one, and what follows.
    assert asked == [3] and calls == ["retrain", "export"]


def test_multi_worker_without_tf_config_fails_before_tensorflow(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    code = ("import sys, tfprune.cli as cli; cli.FLAGS(['tfprune', '--distribute=multi_worker',"
            f" '--export_dir={tmp_path}/run']); code = cli.main(['tfprune']); "
            "assert 'tensorflow' not in sys.modules; sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "tfprune: error: distribute='multi_worker' needs TF_CONFIG: set TF_CONFIG on every "
        "machine to the cluster and this machine's task (README: Several machines), or use "
        "--distribute=mirrored on one machine. Received: TF_CONFIG unset"]
    assert not (tmp_path / "run").exists()


def test_workers_with_different_settings_stop_with_one_line(tmp_path, monkeypatch):
    stages = [stub("train", [], trains=True)]
    monkeypatch.setattr(distribute, "is_multi_worker", lambda strategy: True)
    # The other worker's hash is lower than this one's: the minimum of -hash is not -hash.
    monkeypatch.setattr(distribute, "agree_min",
                        lambda values, strategy: [values[0], values[1] - 1, values[2]])
    context = Context(PipelineConfig(export_dir=str(tmp_path)))
    context.distribution = distributed.Distribution(None, distribute.Role())
    with pytest.raises(TfpruneError, match="different settings") as raised:
        execute(stages, context)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "train.txt").exists()  # nothing trained
