"""The runner on stub stages: hash chain, resume, records, checks. No MNIST, no training."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tfprune import verdict
from tfprune.data import Splits
from tfprune.errors import TfpruneError
from tfprune.pipeline import RECORD, STAGES, Context, PipelineConfig, Stage, execute, runner, stages
from tfprune.pipeline.runner import stage_hash

ROOT = Path(__file__).resolve().parent.parent


def stub(name, calls, keys=(), reads=(), model=None, always=False, **kwargs):
    """A stage that writes `<name>.txt` (and `<model>.keras`) and notes each call."""

    def run(context):
        calls.append(name)
        for source in reads:  # what a real stage does: read its inputs
            (context.folder / source).read_text()
        text = f"{name} {[getattr(context.config, key) for key in keys]}"
        (context.folder / f"{name}.txt").write_text(text)
        outputs = [f"{name}.txt"]
        if model:
            (context.folder / f"{model}.keras").write_text(text)
            outputs.append(f"{model}.keras")
        return outputs, {"stage": name, "pair": (1, 2)}, f"{name} figure"

    return Stage(name, run, keys=keys, reads=reads, writes=(f"{name}.txt",), model=model,
                 always=always, **kwargs)


@pytest.fixture
def calls():
    return []


@pytest.fixture
def chain(calls):
    """Three stages, each reading the one before; `c` depends on `seed`."""
    return [stub("a", calls, keys=("prune_epochs",)),
            stub("b", calls, keys=("retrain_epochs",), reads=("a.txt",)),
            stub("c", calls, keys=("seed",), reads=("b.txt",))]


def go(chain, folder, capsys=None, **settings):
    """Runs `chain` in `folder`; returns the results and {stage: logged line}."""
    config = PipelineConfig(export_dir=str(folder), **settings)
    results = execute(chain, Context(config))
    logged = {}
    if capsys is not None:
        out = capsys.readouterr().out
        logged = {line.split()[1]: line for line in out.splitlines()
                  if line.startswith("[tfprune]")}
    return results, logged


def skipped(logged):
    return {name for name, line in logged.items() if "skipped" in line}


def test_runs_every_stage_and_records_it(chain, calls, tmp_path, capsys):
    results, logged = go(chain, tmp_path, capsys)
    assert calls == ["a", "b", "c"]
    assert list(logged) == ["a", "b", "c"] and "a figure" in logged["a"]
    records = json.loads((tmp_path / RECORD).read_text())
    assert list(records) == ["a", "b", "c"]
    assert set(records["b"]["outputs"]) == {"b.txt"}
    assert len(records["b"]["outputs"]["b.txt"]) == 64  # a SHA-256
    # A result is the same whether the stage ran or was resumed: through JSON.
    assert results["a"] == records["a"]["result"] == {"stage": "a", "pair": [1, 2]}


def test_interrupted_run_resumes_where_it_stopped(calls, tmp_path, capsys):
    def interrupted(context):
        raise KeyboardInterrupt

    broken = [stub("a", calls), Stage("b", interrupted, reads=("a.txt",)),
              stub("c", calls, reads=("a.txt",))]
    with pytest.raises(KeyboardInterrupt):
        go(broken, tmp_path)
    assert calls == ["a"] and list(json.loads((tmp_path / RECORD).read_text())) == ["a"]
    capsys.readouterr()
    mtime = (tmp_path / "a.txt").stat().st_mtime_ns

    fixed = [stub("a", calls), stub("b", calls, reads=("a.txt",)),
             stub("c", calls, reads=("a.txt",))]
    _, logged = go(fixed, tmp_path, capsys, resume=True)
    assert calls == ["a", "b", "c"]
    assert skipped(logged) == {"a"}
    assert (tmp_path / "a.txt").stat().st_mtime_ns == mtime


def test_changed_setting_reruns_its_stage_and_the_ones_after(chain, calls, tmp_path, capsys):
    go(chain, tmp_path, capsys)
    calls.clear()
    _, logged = go(chain, tmp_path, capsys, resume=True, retrain_epochs=7)
    assert calls == ["b", "c"] and skipped(logged) == {"a"}
    calls.clear()
    _, logged = go(chain, tmp_path, capsys, resume=True, retrain_epochs=7)
    assert calls == [] and skipped(logged) == {"a", "b", "c"}
    calls.clear()
    go(chain, tmp_path, resume=True, retrain_epochs=7, seed=3)  # the last stage's key
    assert calls == ["c"]


def test_a_setting_no_stage_declares_reruns_nothing(chain, calls, tmp_path):
    go(chain, tmp_path)
    calls.clear()
    go(chain, tmp_path, resume=True, verbose=0, plots=False)
    assert calls == []


def test_damaged_or_missing_output_reruns_that_stage_and_the_ones_after(chain, calls, tmp_path,
                                                                       capsys):
    go(chain, tmp_path)
    calls.clear()
    (tmp_path / "b.txt").write_text("damaged")
    _, logged = go(chain, tmp_path, capsys, resume=True)
    assert calls == ["b", "c"] and skipped(logged) == {"a"}  # c read the new b.txt
    calls.clear()
    (tmp_path / "c.txt").unlink()
    go(chain, tmp_path, resume=True)
    assert calls == ["c"]


def test_unreadable_record_runs_everything(chain, calls, tmp_path):
    go(chain, tmp_path)
    calls.clear()
    (tmp_path / RECORD).write_text("{not json")
    go(chain, tmp_path, resume=True)
    assert calls == ["a", "b", "c"]


def test_without_resume_everything_runs_again(chain, calls, tmp_path):
    go(chain, tmp_path)
    go(chain, tmp_path)
    assert calls == ["a", "b", "c"] * 2


def test_always_run_stage_runs_when_resuming_and_keeps_no_result(calls, tmp_path, capsys):
    chain = [stub("a", calls), stub("summary", calls, always=True), stub("c", calls)]
    go(chain, tmp_path)
    calls.clear()
    results, logged = go(chain, tmp_path, capsys, resume=True)
    assert calls == ["summary"] and skipped(logged) == {"a", "c"}
    assert results["summary"]["stage"] == "summary"
    assert "result" not in json.loads((tmp_path / RECORD).read_text())["summary"]


def test_stop_after(chain, calls, tmp_path, capsys):
    results, logged = go(chain, tmp_path, capsys, stop_after="b")
    assert calls == ["a", "b"] and list(results) == ["a", "b"] and list(logged) == ["a", "b"]
    assert not (tmp_path / "c.txt").exists()
    calls.clear()
    go(chain, tmp_path, resume=True)
    assert calls == ["c"]
    with pytest.raises(TfpruneError, match="stop_after"):
        go(chain, tmp_path, stop_after="nap")


def test_disabled_stage_leaves_the_chain_as_if_absent(calls, tmp_path):
    extra = stub("extra", calls, keys=("seed",), enabled=lambda config: config.seed == 1)
    with_extra = [stub("a", calls), extra, stub("c", calls)]
    go(with_extra, tmp_path)
    assert calls == ["a", "c"]  # seed 0: disabled
    calls.clear()
    go([stub("a", calls), stub("c", calls)], tmp_path, resume=True)
    assert calls == []  # same hashes as the run without it
    go(with_extra, tmp_path, resume=True, seed=1)
    assert calls == ["extra", "c"]  # enabled: it and the stages after it run


def test_stage_reading_a_file_no_earlier_stage_writes(calls, tmp_path):
    chain = [stub("a", calls), stub("b", calls, reads=("nowhere.txt",))]
    with pytest.raises(TfpruneError, match="nowhere.txt"):
        go(chain, tmp_path / "run")
    assert calls == [] and not (tmp_path / "run").exists()


def test_output_not_declared_is_refused(tmp_path):
    def sloppy(context):
        (context.folder / "other.txt").write_text("x")
        return ["other.txt"], {}, ""

    with pytest.raises(RuntimeError, match="other.txt"):
        go([Stage("sloppy", sloppy, writes=("declared.txt",))], tmp_path)


def test_failing_check_runs_nothing_and_removes_the_folder_it_made(calls, tmp_path):
    def refuse(context):
        raise TfpruneError("bad input")

    chain = [stub("a", calls), stub("b", calls, check=refuse)]
    with pytest.raises(TfpruneError, match="bad input"):
        go(chain, tmp_path / "new" / "run")
    assert calls == [] and not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(TfpruneError):
        go(chain, tmp_path / "mine")
    assert (tmp_path / "mine").is_dir()  # a folder that existed stays


def test_context_loads_nothing_until_asked(tmp_path):
    context = Context(PipelineConfig(export_dir=str(tmp_path)))
    assert not {"data", "source_model"} & set(vars(context))


def test_hash_chain_of_the_real_declarations():
    """A stage's key changes its hash and those after it, never those before."""

    def hashes(config):
        previous, out = "", {}
        for stage in STAGES:
            if stage.applies(config):  # as the runner chains them
                out[stage.name] = previous = stage_hash(stage, config, previous)
        return out

    base = hashes(PipelineConfig())
    changed = hashes(PipelineConfig(retrain_epochs=9))
    names = [s.name for s in STAGES if s.applies(PipelineConfig())]
    cut = names.index("retrain")
    assert all(base[n] == changed[n] for n in names[:cut])
    assert all(base[n] != changed[n] for n in names[cut:])


def test_real_declarations_are_consistent():
    fields = set(PipelineConfig.__dataclass_fields__)
    for stage in STAGES:
        assert set(stage.keys) <= fields, stage.name
    config = PipelineConfig(quantize=("int8", "float16"))
    written = set()
    for stage in STAGES:  # each file read is written by an earlier stage
        assert set(stage.files_read(config)) <= written, stage.name
        written |= set(stage.files_written(config))
    assert "compressed_float16.tflite" in written
    assert stages.VERIFY.files_read(config) == stages.EXPORT.files_written(config)


def test_run_folder_readme_lists_every_declared_file():
    text = (ROOT / "export" / "README.md").read_text()
    config = PipelineConfig(quantize=("int8", "float16"))
    for stage in STAGES:
        for name in stage.files_written(config):
            shown = name.replace("_float16", "_<mode>")
            assert f"`{shown}` | {stage.name} |" in text, name


@pytest.mark.slow
def test_added_stage_needs_no_edit_to_runner_or_report(calls, tmp_path):
    """Stub model stages and a stub file stage before the real report declaration."""

    def measured(context):
        (context.folder / "small.bin").write_bytes(b"12345")
        return ["small.bin"], {"files": {"small.bin": {"model": "distilled", "bytes": 5,
                                                       "accuracy": 0.5}}}, "5 bytes"

    def model_stage(name, model, params):
        def run(context):
            (context.folder / f"{model}.keras").write_text(name)
            return [f"{model}.keras"], {"params": params, "layers": []}, name

        return Stage(name, run, model=model)

    chain = [model_stage("first", "start", 100), model_stage("distill", "distilled", 10),
             Stage("measure", measured, writes=("small.bin",)), stages.REPORT]
    results, _ = go(chain, tmp_path, plots=False)
    data = json.loads((tmp_path / "report.json").read_text())
    assert [(row["stage"], row["model"]) for row in data["stages"]] == [
        ("first", "start.keras"), ("distill", "distilled.keras")]
    assert data["summary"]["params_ratio"] == 10.0
    assert data["summary"]["compressed"]["bytes"] == 5
    assert data["files"]["small.bin"]["accuracy"] == 0.5
    assert set(data["seconds"]) == {"first", "distill", "measure"}
    assert results["report"] == data
    assert "| distill | `distilled.keras` |" in (tmp_path / "report.md").read_text()



# ----------------------------------------------------------------------------- faults


def test_one_run_per_folder(tmp_path):
    """flock is per open file: a second holder, even in this process, is refused."""
    with runner.folder_lock(tmp_path) as path:
        assert path.read_text().strip() == str(os.getpid())
        with pytest.raises(runner.FolderInUseError) as e:
            go([Stage("a", lambda context: ([], {}, ""))], tmp_path)
        message = str(e.value)
        assert f"pid {os.getpid()}" in message and "--export_dir" in message
        assert "\n" not in message
    go([Stage("a", lambda context: ([], {}, ""))], tmp_path)  # released: a run may start


def test_killed_writes_are_swept_and_a_rerun_drops_the_records_after_it(chain, calls,
                                                                       tmp_path):
    go(chain, tmp_path)
    (tmp_path / ".b.txt.partial-x1y2z3.txt").write_text("a write killed midway")
    (tmp_path / "a.txt").write_text("damaged")

    def killed(context):
        raise KeyboardInterrupt

    broken = [chain[0], Stage("b", killed, keys=("retrain_epochs",), reads=("a.txt",),
                              writes=("b.txt",)), chain[2]]
    with pytest.raises(KeyboardInterrupt):
        go(broken, tmp_path, resume=True)
    assert not (tmp_path / ".b.txt.partial-x1y2z3.txt").exists()
    # a ran again; the records of b and c described outputs made from the old a.txt
    assert list(json.loads((tmp_path / RECORD).read_text())) == ["a"]
    calls.clear()
    go(chain, tmp_path, resume=True)
    assert calls == ["b", "c"]


def test_each_stage_draws_the_same_random_numbers_resumed_or_not(tmp_path):
    def draw(name):
        def run(context):
            value = float(np.random.random())
            (context.folder / f"{name}.txt").write_text(str(value))
            return [f"{name}.txt"], {"value": value, "running": runner.running().name}, ""
        return Stage(name, run, writes=(f"{name}.txt",))

    chain = [draw("a"), draw("b")]
    whole, _ = go(chain, tmp_path / "whole")
    go(chain, tmp_path / "parts", stop_after="a")
    np.random.random()  # whatever happened in between
    resumed, _ = go(chain, tmp_path / "parts", resume=True)
    assert resumed == whole and whole["a"]["value"] != whole["b"]["value"]
    assert whole["b"]["running"] == "b" and runner.running() is None


def model_stub(name, val_accuracy, judged=False, finite=True):
    def run(context):
        (context.folder / f"{name}.keras").write_text(name)
        return [f"{name}.keras"], {"val_accuracy": val_accuracy, "finite": finite}, name

    return Stage(name, run, model=name, judged=judged)


def judged_run(folder, chain, **settings):
    """Runs `chain` with balanced labels: chance is 10%, the bound 15% on 1,000 images."""
    context = Context(PipelineConfig(export_dir=str(folder), **settings))
    labels = np.arange(10_000) % 10
    context.data = Splits((None, labels[:9000]), (None, labels[:1000]), (None, labels[:10]))
    return execute(chain, context)


def test_a_baseline_at_chance_stops_the_run(tmp_path):
    chain = [model_stub("baseline", 0.12), model_stub("retrain", 0.12, judged=True)]
    with pytest.raises(verdict.CheckFailed) as e:
        judged_run(tmp_path, chain)
    message = str(e.value)
    assert "chance level" in message and "12.00%" in message and "--keep_going" in message
    assert list(json.loads((tmp_path / RECORD).read_text())) == ["baseline"]  # kept
    results = judged_run(tmp_path, chain, keep_going=True, resume=True)
    assert results["baseline"]["checks"][0]["met"] is False  # recorded for the verdict
    assert judged_run(tmp_path, [model_stub("baseline", 0.9)])["baseline"]["checks"][0]["met"]


def test_a_judged_stage_that_falls_too_far_stops_the_run(tmp_path, capsys):
    chain = [model_stub("baseline", 0.95), model_stub("merge", 0.30),
             model_stub("retrain", 0.70, judged=True)]
    with pytest.raises(verdict.CheckFailed) as e:
        judged_run(tmp_path, chain)  # the merge is not judged: it recovers in retraining
    assert "retrain val accuracy 70.00%, 25.00 pp below" in str(e.value)
    assert "--max_stage_drop=20" in str(e.value)
    results = judged_run(tmp_path, chain, max_stage_drop=30)
    assert [c["met"] for c in results["retrain"]["checks"]] == [True]
    results = judged_run(tmp_path, chain, keep_going=True)
    assert "going on (--keep_going)" in capsys.readouterr().out
    assert not results["retrain"]["checks"][0]["met"]


def test_a_model_that_is_not_finite_stops_the_run_even_with_keep_going(tmp_path):
    chain = [model_stub("baseline", 0.95), model_stub("merge", 0.9, finite=False),
             Stage("export", lambda context: ([], {}, ""))]
    with pytest.raises(verdict.CheckFailed, match="non-finite weights"):
        judged_run(tmp_path, chain, keep_going=True)


def test_a_sub_list_runs_in_a_scratch_folder_and_the_run_takes_it(chain, calls, tmp_path,
                                                                  capsys):
    """`run_in_scratch` (the search's check): the stages run in another folder on a copy of
    the context; the run then takes their files and results instead of running them."""
    context = Context(PipelineConfig(export_dir=str(tmp_path / "run")))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "a.txt").write_text("a")
    scratch_folder = tmp_path / "run" / ".scratch"
    scratch_folder.mkdir()
    (scratch_folder / "a.txt").write_text("a")  # what b reads, as a scratch run is given it
    scratch, done = runner.run_in_scratch(chain[1:], context, scratch_folder,
                                          results={"a": {"stage": "a"}}, models={})
    assert calls == ["b", "c"] and sorted(done) == ["b", "c"]
    assert scratch.folder == scratch_folder and scratch.config.export_dir == str(scratch_folder)
    assert scratch.results["b"] == {"stage": "b", "pair": [1, 2]}  # kept as JSON keeps it
    assert context.results == {} and not (tmp_path / "run" / "b.txt").exists()
    context.precomputed.update(done)
    results = execute(chain, context)
    assert calls == ["b", "c", "a"]  # b and c were taken, not run again
    assert "b figure (trained by the search's check)" in capsys.readouterr().out
    assert results["c"] == {"stage": "c", "pair": [1, 2]} and not scratch_folder.exists()
