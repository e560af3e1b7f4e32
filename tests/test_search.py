"""The search: targets read and refused, a target met on a tiny model, resume after an
interruption, and, in the pipeline, the search stage deciding on validation only."""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfprune
from tfprune import pipeline, stats
from tfprune.pipeline import Context, PipelineConfig, execute
from tfprune.search import Target
from tfprune.stats import accuracy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- targets


def test_targets_read_ratios_bytes_and_counts():
    target = Target.parse(size="40KB", speedup="12.5x", latency=800, macs="300K",
                          max_accuracy_drop=0.1)
    assert (target.size_bytes, target.speedup, target.latency_us, target.macs) == (
        40_000, 12.5, 800.0, 300_000)
    assert Target.parse(size="1.5 KiB").size_bytes == 1536
    assert Target.parse(size="50x", macs="8x").macs_ratio == 8.0
    assert not Target.parse(max_accuracy_drop=0.1)  # the bound alone is no search
    goals = {g.name: g for g in Target.parse(size="50x", speedup="10").goals(
        {"bytes": 1_000_000, "macs": 10})}
    assert goals["size"].met({"bytes": 20_000}) and not goals["size"].met({"bytes": 20_001})
    assert goals["speedup"].met({"speedup": 10.0}) and goals["speedup"].met({}) is None
    assert goals["accuracy"].met({"drop_pp": 0.5}) and not goals["accuracy"].met(
        {"drop_pp": 0.51})
    # 99.10% -> 99.00% on 10,000 images is 10 images, a drop of 0.1 pp: floats say 0.1000...1.
    tight = {g.name: g for g in Target.parse(size="50x", max_accuracy_drop=0.1).goals(
        {"bytes": 1_000_000, "macs": 10})}
    assert tight["accuracy"].met({"drop_pp": 100 * (0.9910 - 0.9900)})
    assert not tight["accuracy"].met({"drop_pp": 0.11})


@pytest.mark.parametrize("settings, words", [
    ({"target_size": "0.5x"}, "ratio above 1x"),
    ({"target_size": "tiny"}, "Cannot read target_size"),
    ({"target_size": "40QB"}, "Unknown unit"),
    ({"target_speedup": "0.9x"}, "ratio above 1x"),
    ({"target_macs": "-3"}, "Cannot read target_macs"),
    ({"target_size": "50x", "max_accuracy_drop": -0.1}, "max_accuracy_drop >= 0"),
    ({"target_size": "50x", "layer_sparsity": "conv1:0.5"}, "ambiguous"),
    ({"target_size": "50x", "validation_split": 0.0}, "validation split"),
    ({"target_size": "50x", "search_method": "random"}, "search_method"),
])
def test_bad_targets_are_refused_by_the_config(settings, words):
    with pytest.raises(tfprune.TfpruneError, match=words):
        PipelineConfig(**settings).validate()


def test_bad_target_is_one_line_before_tensorflow_loads():
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from tfprune import cli; from absl import flags; "
         "flags.FLAGS(['tfprune', '--target_size=0.5x']); code = cli.main(['tfprune']); "
         "assert not {'tensorflow', 'keras'} & set(sys.modules); sys.exit(code)"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "tfprune: error: A size target is a reduction: expected a ratio above 1x (like 50x) "
        "or bytes (like 40KB). Received: target_size='0.5x'"]


# ----------------------------------------------------------------------------- library


def _problem():
    """A tiny conv net (2 filters, 16 neurons: few candidates to export, but weights enough
    to outweigh the file's fixed bytes) and a learnable two-class problem on 12x12 images."""
    rng = np.random.default_rng(0)
    x = rng.random((320, 12, 12, 1), dtype="float32")
    y = (x[:, :6].mean(axis=(1, 2, 3)) > x[:, 6:].mean(axis=(1, 2, 3))).astype("int32")
    model = keras.Sequential([
        keras.Input((12, 12, 1)), keras.layers.Conv2D(2, 3, name="conv"),
        keras.layers.Flatten(), keras.layers.Dense(16, activation="relu", name="fc"),
        keras.layers.Dense(2, activation="softmax", name="out")])
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x[:256], y[:256], batch_size=32, epochs=10, verbose=0)
    return model, (x[:256], y[:256]), (x[256:], y[256:])


FAST = dict(finetune_steps=0, grid_step=0.5, export={"quantize": "none"}, log=None)


@pytest.mark.slow
def test_a_size_target_is_met_and_prune_consumes_the_plan(tmp_path):
    model, train, validation = _problem()
    plan = tfprune.search.widths(model, train, validation,
                                 {"size": "1.8x", "max_accuracy_drop": 100}, epochs=1, **FAST)
    assert plan.all_met and plan.checked and plan.met == {"size": True, "accuracy": True}
    assert plan.figures["bytes"] * 1.8 <= plan.baseline["bytes"]
    assert plan.widths != plan.units  # something had to go
    # The cost is the real file's: the trained model exports to exactly the bytes measured.
    path = tfprune.export.to_tflite(plan.model, tmp_path / "chosen.tflite", batch_size=1)
    assert os.path.getsize(path) == plan.figures["bytes"]
    assert {row["name"]: row["role"] for row in plan.candidates}[plan.name] == "checked"
    # The plan as prune takes it: each searched layer ends at exactly its width.
    pruned = plan.prune(model, tfprune.ConstantSparsity(0.5, begin_step=0))
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(*train, batch_size=64, epochs=1, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    small = tfprune.shrink(tfprune.strip(pruned))
    assert {layer.name: layer.kernel.shape[-1] for layer in small.layers
            if layer.name in plan.widths} == plan.widths
    assert plan.layer_sparsity == ",".join(f"{k}:{v:g}" for k, v in plan.sparsities.items())


@pytest.mark.slow
def test_a_checked_candidate_carries_its_paired_interval_and_the_plan_its_margin(tmp_path):
    model, train, validation = _problem()
    lines, warnings = [], []
    plan = tfprune.search.widths(model, train, validation,
                                 {"size": "1.8x", "max_accuracy_drop": 100}, epochs=1,
                                 trace=tmp_path / "trace.json",
                                 **dict(FAST, log=lines.append), warn=warnings.append)
    base = accuracy(model, validation)
    margin = plan.margin
    assert margin["validation_images"] == 64 and not warnings and margin["resolved"]
    assert margin["margin_pp"] == pytest.approx(stats.margin_pp(64, base))
    assert margin["planned_pp"] == pytest.approx(100 - margin["margin_pp"])
    assert plan.goals[-1].bound == margin["planned_pp"]  # the plan's accuracy goal
    assert json.loads((tmp_path / "trace.json").read_text())["plan"]["margin"] == margin
    # The checked candidate, paired with the baseline on the same validation images.
    figures = plan.figures
    lost, gained = figures["discordant"]
    assert figures["drop_pp"] == pytest.approx(100 * (lost - gained) / 64)
    low, high = figures["drop_ci_pp"]
    assert low <= figures["drop_pp"] <= high
    assert figures["drop_ci_pp"] == pytest.approx(list(stats.paired(
        tfprune.search.sensitivity.correct(model, validation),
        tfprune.search.sensitivity.correct(plan.model, validation)).ci_pp))
    checked = next(line for line in lines if line.startswith("checked "))
    assert "95% CI" in checked and "planned to lose at most" in checked
    assert any(line.startswith("accuracy: planning against") for line in lines)
    assert "planned against" in plan.note


@pytest.mark.slow
def test_the_search_plans_against_the_bound_less_the_margin():
    model, train, validation = _problem()
    base = accuracy(model, validation)
    margin = stats.margin_pp(len(validation[1]), base)
    bound = margin + 2.0  # a candidate losing 3 pp is within the bound, not within the plan
    check, calls = _scripted_check([base - 0.03])
    lines = []
    plan = tfprune.search.widths(model, train, validation,
                                 {"size": "1.6x", "max_accuracy_drop": bound}, check=check,
                                 warn=None, **{**FAST, "log": lines.append})
    assert plan.margin["planned_pp"] == pytest.approx(2.0)
    assert plan.met["accuracy"] is False and not plan.all_met
    assert any(" loses 3.00 pp > 2.00 pp" in line and "widening" in line for line in lines)
    # Told to plan on the point estimate alone (no margin), the first candidate does.
    check, calls = _scripted_check([base - 0.03])
    plan = tfprune.search.widths(model, train, validation,
                                 {"size": "1.6x", "max_accuracy_drop": bound}, check=check,
                                 margin_pp=0.0, **FAST)
    assert plan.all_met and len(calls) == 1 and plan.margin["planned_pp"] == bound


@pytest.mark.slow
def test_a_split_too_small_for_the_bound_is_said_before_any_training(capsys):
    model, train, validation = _problem()
    events = []

    def check(sparsities):
        events.append("check")
        return None, accuracy(model, validation)

    plan = tfprune.search.widths(model, train, validation,
                                 {"size": "1.8x", "max_accuracy_drop": 0.1}, check=check,
                                 warn=lambda line: events.append(line), **FAST)
    warning, *rest = events
    assert rest and set(rest) == {"check"}  # the warning came first, once
    needed = stats.split_size(0.1, accuracy(model, validation))
    assert warning.startswith("the validation split (64 images) cannot resolve "
                              "max_accuracy_drop=0.1 pp")
    assert f"about {needed:,} validation images would resolve it" in warning
    assert "\n" not in warning and plan.margin["planned_pp"] == 0.0
    assert plan.margin["needed_images"] == needed and not plan.margin["resolved"]
    # By default the line goes to stderr, as a warning.
    tfprune.search.widths(model, train, validation,
                          {"size": "1.8x", "max_accuracy_drop": 0.1}, check=check, **FAST)
    assert "tfprune: warning: the validation split (64 images)" in capsys.readouterr().err


@pytest.mark.slow
def test_unreachable_target_is_refused_before_any_training():
    model, _, _ = _problem()
    with pytest.raises(tfprune.TfpruneError, match="No width can reach size 1000x.*smallest"):
        tfprune.search.check_target(model, {"size": "1000x"}, export={"quantize": "none"})


@pytest.mark.slow
def test_unreachable_target_stops_the_run_before_training(mnist_dir, tmp_path):
    config = PipelineConfig(data_dir=mnist_dir, train_limit=256, target_size="100000x",
                            granularity="Conv2D:filter,Dense:filter,ip2:none",
                            quantize=("dynamic",), export_dir=str(tmp_path / "run"))
    with pytest.raises(tfprune.TfpruneError, match=r"No width can reach size 100000x .*"
                       r"smallest model \(\{'conv1': 1, 'conv2': 1, 'ip1': 1\} units\)"):
        pipeline.run(config)
    assert not (tmp_path / "run").exists()  # nothing trained, the folder it made removed


def _scripted_check(accuracies, interrupt_at=None):
    """A stand-in for training: the n-th candidate checked gets `accuracies[n]`."""
    calls = []

    def check(sparsities):
        calls.append(dict(sparsities))
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return None, accuracies[min(len(calls), len(accuracies)) - 1]

    return check, calls


@pytest.mark.slow
def test_interrupted_search_resumes_from_its_last_finished_candidate(tmp_path, monkeypatch):
    model, train, validation = _problem()
    target = {"size": "1.6x", "max_accuracy_drop": 0.1}
    trace = tmp_path / "trace.json"
    lost = accuracy(model, validation) - 0.2  # a candidate that loses 20 points
    # The first candidate trained misses the accuracy bound, so the search backs off and
    # trains a second; the run is killed while training that second one.
    check, calls = _scripted_check([lost, lost], interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        tfprune.search.widths(model, train, validation, target, check=check, trace=trace,
                              **FAST)
    recorded = json.loads(trace.read_text())
    assert len(recorded["checks"]) == 1 and len(calls) == 2
    measured_before = set(recorded["costs"])

    exports = []
    real_export = tfprune.export.to_tflite
    monkeypatch.setattr(tfprune.export, "to_tflite",
                        lambda *a, **k: exports.append(a[1]) or real_export(*a, **k))
    check, resumed_calls = _scripted_check([lost])  # every candidate misses the bound
    plan = tfprune.search.widths(model, train, validation, target, check=check, trace=trace,
                                 resume=True, **FAST)
    assert resumed_calls[0] == calls[1]  # the unfinished candidate is the first trained
    assert calls[0] not in resumed_calls  # the finished one is read back, not trained again
    measured_after = set(json.loads(trace.read_text())["costs"])
    assert len(exports) == len(measured_after - measured_before)  # nothing measured twice

    # No candidate met every target: the plan says so, and keeps the best one trained.
    assert len(resumed_calls) >= 1 and not plan.all_met
    assert plan.met["accuracy"] is False and plan.met["size"] is True
    assert plan.note.startswith("No candidate meets all targets") and "accuracy" in plan.note
    assert plan.figures["drop_pp"] == pytest.approx(20.0) and plan.checked
    trained = [c for c in plan.candidates if c["role"] == "checked"]
    assert len(trained) == 1 + len(resumed_calls) and plan.name in [c["name"] for c in trained]


# ----------------------------------------------------------------------------- pipeline


def _tiny_model(path):
    model = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 5, name="c1"),
        keras.layers.MaxPooling2D(2, name="p1"), keras.layers.Flatten(name="flat"),
        keras.layers.Dense(16, activation="relu", name="fc"),
        keras.layers.Dense(10, activation="softmax", name="out")])
    model.save(path)
    return str(path)


def _watched(stages, seen, current):
    """The stages, each noting itself as the one running (for the data accesses)."""

    def wrap(stage):
        def run(context):
            current[0] = stage.name
            return stage.run(context)

        return dataclasses.replace(stage, run=run)

    return [wrap(stage) for stage in stages]


class _Watching(Context):
    """A context that records which stage reads the test and validation splits."""

    def __init__(self, config, seen, current):
        super().__init__(config)
        self.seen, self.current = seen, current

    @property
    def test(self):
        self.seen.append(("test", self.current[0]))
        return super().test

    @property
    def validation(self):
        self.seen.append(("validation", self.current[0]))
        return super().validation


@pytest.mark.slow
def test_search_stage_decides_on_validation_and_the_run_follows_its_plan(mnist_dir, tmp_path):
    model = _tiny_model(tmp_path / "tiny.keras")
    config = PipelineConfig(
        model=model, data_dir=mnist_dir, train_limit=600, validation_split=0.2,
        test_limit=200, baseline_epochs=2, prune_epochs=1, retrain_epochs=1, frequency=1,
        granularity="Conv2D:filter,Dense:filter,out:none", merge="approximate",
        quantize=("none",), export_batch_size=1, bench_runs=10, bench_warmup=2,
        target_size="1.8x", max_accuracy_drop=100.0, search_step=0.5,
        search_finetune_steps=0, export_dir=str(tmp_path / "run"), verbose=0,
        keep_going=True)  # a tiny model on 480 images may stay near chance: not under test
    seen, current = [], [None]
    results = execute(_watched(pipeline.STAGES, seen, current),
                      _Watching(config.validate(), seen, current))
    # The test set is measured once, by verify; the search decided on validation.
    assert {stage for split, stage in seen if split == "test"} == {"verify"}
    assert ("validation", "search") in seen
    search, run = results["search"], tmp_path / "run"
    assert json.loads((run / "search.json").read_text())["widths"] == search["widths"]
    assert (run / "search_trace.json").is_file() and (run / "search.png").is_file()
    assert search["all_met"] and search["checked"]
    # The prune stage took the searched sparsities, with the baseline as teacher.
    assert results["prune"]["layer_sparsity"] == search["sparsities"]
    assert results["prune"]["distilled"]
    kept = {row["name"]: row["units_kept"] for row in results["report"]["layers"]}
    assert {name: kept[name] for name in search["widths"]} == search["widths"]
    # Measured, not guessed: the run's file has the bytes the search measured, and the
    # stages, seeded, trained the same model as the search's check.
    assert results["export"]["files"]["compressed.tflite"]["bytes"] == search["figures"]["bytes"]
    assert results["shrink"]["val_accuracy"] == search["figures"]["val_accuracy"]
    # ... so the run took those stages from the check instead of training them again.
    records = json.loads((run / "stages.json").read_text())
    assert all("trained by the search's check" in records[name]["figure"]
               for name in ("prune", "retrain", "shrink"))
    assert not list(run.glob(".search-*"))  # no scratch folder left behind
    targets = {t["name"]: t for t in results["report"]["targets"]}
    assert targets["size"]["met"] and targets["size"]["value"] == search["figures"]["bytes"]
    report = (run / "report.md").read_text()
    assert "## Search" in report and "## Targets" in report and "(chosen)" in report
    # The bound it planned against, and the checked candidate's paired interval.
    assert search["margin"]["validation_images"] == 120
    assert "less the validation split's margin" in report and "95% CI" in report
    assert search["figures"]["drop_pp"] == pytest.approx(results["shrink"]["val_drop_pp"])


def test_search_stage_is_in_the_chain_only_with_a_target_and_covers_what_it_trains_with():
    from tfprune.pipeline.runner import stage_hash
    from tfprune.pipeline.stages import SEARCH

    assert not SEARCH.applies(PipelineConfig())
    searched = PipelineConfig(target_size="50x")
    assert SEARCH.applies(searched)
    # It trains candidates with the later stages' settings: they decide its result too.
    for change in ({"retrain_epochs": 9}, {"quantize": ("dynamic",)}, {"bench_runs": 7},
                   {"distill_weight": 0.9}, {"max_accuracy_drop": 0.2}):
        assert stage_hash(SEARCH, dataclasses.replace(searched, **change), "") != stage_hash(
            SEARCH, searched, ""), change
    assert "layer_sparsity" not in SEARCH.keys


@pytest.mark.slow
def test_a_cut_narrows_a_mobile_cnn_by_channel_group_as_prune_does():
    """Depthwise convs and BatchNorms follow the filters before them: the searched widths
    are the producing convs', and shrinking the cut model changes no output."""
    import tfprune
    from tfprune.search.candidates import Layers, cut

    model = tfprune.models.mobilenet_tiny()
    layers = Layers(model, "filter")
    assert list(layers.units) == ["stem_conv", "block1_pw", "block2_pw", "block3_pw",
                                  "block4_pw"]
    widths = {"stem_conv": 12, "block1_pw": 40, "block2_pw": 64, "block3_pw": 64,
              "block4_pw": 100}
    narrowed = cut(model, widths, layers, "filter")
    small = tfprune.shrink(tfprune.fuse(narrowed))
    kept = {name: small.get_layer(name).filters for name in widths}
    assert kept == widths  # block2/3 are coupled by a residual Add: one width for both
    assert small.get_layer("block1_dw").get_weights()[0].shape[2] == 12
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype="float32")
    np.testing.assert_allclose(np.asarray(small(x)), np.asarray(narrowed(x)), atol=1e-5)


@pytest.mark.slow
def test_the_tuner_cuts_by_channel_group_and_keeps_the_cuts_of_its_state():
    """Fine-tuning along the path cuts a BatchNorm and a depthwise conv with the filters
    they follow (else the channel stays a constant the final model does not have), and a
    cut from a state keeps what that state had cut."""
    import warnings

    import keras

    import tfprune
    from tfprune.search.candidates import Layers
    from tfprune.search.sensitivity import Tuner

    model = tfprune.models.mobilenet_tiny()
    layers = Layers(model, "filter")
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 32, 32, 3), dtype="float32"), rng.integers(0, 10, 64)
    tuner = Tuner(model, layers, (x, y), (x[:16], y[:16]), steps=1, batch_size=32,
                  optimizer=lambda: keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy")
    _, state = tuner.cut(tuner.start, {"stem_conv": 16})
    _, state = tuner.cut(state, {"block2_pw": 64})

    def widths(state):
        tuner.wrapped.set_weights(state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            small = tfprune.shrink(tfprune.strip(tuner.wrapped))
        return {name: small.get_layer(name).filters for name in layers.units}

    assert widths(state) == {"stem_conv": 16, "block1_pw": 64, "block2_pw": 64,
                             "block3_pw": 64, "block4_pw": 256}
    bn = tuner.wrapped.get_layer("prune_low_magnitude_stem_bn")
    assert int((np.asarray(bn.channel_mask) == 0).sum()) == 16


# ----------------------------------------------------------------------------- latency


@pytest.mark.slow
def test_the_latency_table_is_timed_once_and_read_back(tmp_path):
    from tfprune.search.latency_table import LatencyTable

    model, _, _ = _problem()
    path = tmp_path / "table.json"
    first = LatencyTable(runs=30, warmup=3, path=path)
    predicted = first.predict(model, "dynamic")
    # The file that does almost nothing, then conv, flatten, fc and out, each alone.
    assert first.timed == 5 and predicted > 0
    entries = first.entries.values()
    overhead = next(e["us"] for e in entries if e["layer"].startswith("ReLU"))
    assert predicted == pytest.approx(overhead + sum(e["net_us"] for e in entries))

    again = LatencyTable(runs=30, warmup=3, path=path)  # another search, another process
    assert again.predict(model, "dynamic") == predicted and again.timed == 0
    narrower = keras.Sequential([
        keras.Input((12, 12, 1)), keras.layers.Conv2D(2, 3, name="conv"),
        keras.layers.Flatten(), keras.layers.Dense(8, activation="relu", name="fc"),
        keras.layers.Dense(2, activation="softmax", name="out")])
    again.predict(narrower, "dynamic")
    assert again.timed == 2  # only fc and out changed shape: the rest is in the table
    assert LatencyTable(path=path).entries == again.entries  # merged into the file

    path.write_text("{not json")  # a damaged table is timed again, not trusted
    assert LatencyTable(path=path).entries == {}


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["dynamic", "int8"])
def test_the_latency_table_times_layers_of_several_inputs(quantize):
    from tfprune.search.latency_table import LatencyTable

    # A residual Add, an SE gate's broadcast Multiply and a Concatenate of unequal widths:
    # each is timed alone as a one-input file (the others constants).
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.Add(name="add")([inputs, x])
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    x = keras.layers.Multiply(name="scale")([x, gate])
    x = keras.layers.Concatenate(name="concat")([x, keras.layers.Conv2D(
        2, 1, name="side")(x)])
    model = keras.Model(inputs, x)
    table = LatencyTable(runs=20, warmup=2, path=False)
    assert table.predict(model, quantize) > 0
    described = sorted(e["layer"].split()[0] for e in table.entries.values())
    assert described == ["Add", "Concatenate", "Conv2D", "Conv2D", "GlobalAveragePooling2D",
                         "Multiply", "ReLU"]


def _speed_problem():
    """A conv net wide enough that narrowing it pays in time, with its two splits."""
    rng = np.random.default_rng(0)
    x = rng.random((96, 24, 24, 1), dtype="float32")
    y = (x[:, :12].mean(axis=(1, 2, 3)) > x[:, 12:].mean(axis=(1, 2, 3))).astype("int32")
    model = keras.Sequential([
        keras.Input((24, 24, 1)), keras.layers.Conv2D(32, 3, activation="relu", name="conv"),
        keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu", name="fc"),
        keras.layers.Dense(2, activation="softmax", name="out")])
    return model, (x[:64], y[:64]), (x[64:], y[64:])


@pytest.mark.slow
def test_a_speed_search_ranks_on_the_table_and_gives_the_same_widths_again(tmp_path,
                                                                        monkeypatch):
    from tfprune.bench import latency
    from tfprune.search.latency_table import LatencyTable

    model, train, validation = _speed_problem()
    whole = []
    real = latency.compare
    monkeypatch.setattr(latency, "compare", lambda *paths, **kw: whole.append(
        [os.path.basename(p) for p in paths]) or real(*paths, **kw))
    kept = accuracy(model, validation)
    plans, tables = [], []
    for run in range(2):
        check, _ = _scripted_check([kept])
        tables.append(LatencyTable(runs=200, warmup=20, path=tmp_path / "table.json"))
        plans.append(tfprune.search.widths(
            model, train, validation, {"speedup": "1.3x", "max_accuracy_drop": 100},
            check=check, trace=tmp_path / f"trace{run}.json", latency_table=tables[-1],
            **{**FAST, "grid_step": 0.3, "bench": {"runs": 200, "warmup": 20}}))
    assert plans[0].widths == plans[1].widths
    assert tables[0].timed > 0 and tables[1].timed == 0  # the second read the first's table
    # Whole files timed: the baseline, then the full-width candidate against it (the
    # table's calibration), and the candidate to check before and after training; every
    # other candidate's latency came from the table.
    files = [name for session in whole for name in session if "tfprune-table" not in name]
    assert not [f for f in files if f not in ("baseline.tflite", "@full.tflite")
                and not f.endswith(("@whole.tflite", "@trained.tflite"))], files
    for plan in plans:
        rows = [row for row in plan.candidates if row["role"] != "checked"]
        assert rows and all(row["figures"].get("predicted") for row in rows)


@pytest.mark.slow
def test_a_candidate_slower_whole_than_planned_is_planned_again_before_training(
        tmp_path, monkeypatch):
    from tfprune.search import candidates
    from tfprune.search.latency_table import LatencyTable

    model, train, validation = _speed_problem()
    real = candidates.Costs.measure_model
    slowed = []

    def first_whole_slower(self, key, compressed):  # as a file paying more at its edges
        figures = real(self, key, compressed)
        if key.endswith("@whole") and not slowed:
            slowed.append(key)
            figures = {**figures, "speedup": figures["speedup"] / 2,
                       "latency_us": 2 * figures["latency_us"],
                       "latency_p10_us": 2 * figures["latency_p10_us"]}
            self.memo[key] = figures
        return figures

    monkeypatch.setattr(candidates.Costs, "measure_model", first_whole_slower)
    check, calls = _scripted_check([accuracy(model, validation)])
    lines = []
    plan = tfprune.search.widths(
        model, train, validation, {"speedup": "1.3x", "max_accuracy_drop": 100},
        check=check, latency_table=LatencyTable(runs=200, warmup=20, path=False),
        **{**FAST, "grid_step": 0.3, "bench": {"runs": 200, "warmup": 20},
           "log": lines.append})
    first = slowed[0].split("@")[0]
    assert any(line.startswith(f"{first} before training") and "misses" in line
               for line in lines), lines
    assert any(line.startswith("recalibrated") for line in lines)
    # Only the candidate planned again was trained, and it is narrower than the first.
    assert len(calls) == 1 and plan.checked and candidates.name(plan.widths) != first
    assert sum(plan.widths.values()) < sum(int(w) for w in first.split("-"))


@pytest.mark.slow
def test_a_count_of_checks_ends_the_search_where_time_would_not():
    model, train, validation = _problem()
    lost = accuracy(model, validation) - 0.2
    check, calls = _scripted_check([lost])  # every candidate misses the bound
    plan = tfprune.search.widths(model, train, validation,
                                 {"size": "1.8x", "max_accuracy_drop": 0.1}, check=check,
                                 max_checks=1, **FAST)
    assert len(calls) == 1 and plan.checked and not plan.all_met
    assert "it trained the 1 candidate(s) allowed" in plan.note


# ----------------------------------------------------------------------------- many layers


def _residual_problem():
    """Ten searched convs, two pairs of them coupled by residual Adds, on 12x12 images."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((320, 12, 12, 1), dtype="float32")
    y = (x[:, :6].mean(axis=(1, 2, 3)) > x[:, 6:].mean(axis=(1, 2, 3))).astype("int32")
    inputs = keras.Input((12, 12, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    for block in range(2):
        e = keras.layers.Conv2D(16, 1, activation="relu", name=f"b{block}_expand")(h)
        e = keras.layers.DepthwiseConv2D(3, padding="same", name=f"b{block}_dw")(e)
        p = keras.layers.Conv2D(8, 1, name=f"b{block}_project")(e)
        h = keras.layers.Add(name=f"b{block}_add")([h, p])
    for i, filters in enumerate((12, 12, 16, 16)):
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                name=f"c{i}")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(24, activation="relu", name="fc")(h)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(h))
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x[:256], y[:256], batch_size=32, epochs=3, verbose=0)
    return model, (x[:256], y[:256]), (x[256:], y[256:])


@pytest.mark.slow
def test_a_few_layers_are_allocated_when_asked():
    model, train, validation = _problem()
    lines = []
    plan = tfprune.search.widths(
        model, train, validation, {"size": "1.6x", "max_accuracy_drop": 100}, epochs=1,
        method="allocate", **{**FAST, "log": lines.append})
    assert plan.all_met and plan.checked
    assert any("allocated all at once" in line for line in lines)
    assert not any(line.startswith("step ->") for line in lines)  # no greedy step
    with pytest.raises(tfprune.TfpruneError, match="method"):
        tfprune.search.widths(model, train, validation, {"size": "1.6x"}, method="best")


@pytest.mark.slow
def test_many_layers_are_allocated_at_once_coupled_ones_together():
    from tfprune.search import allocate, candidates

    model, train, validation = _residual_problem()
    layers = candidates.Layers(model, "filter", 0.75)
    assert len(layers.units) > allocate.GREEDY_LAYERS
    sets = allocate.tied(model, layers)
    assert ["stem", "b0_project", "b1_project"] in sets and ["c0"] in sets
    share = allocate.shares(model, sets)
    # c2 (12 -> 16 channels, 3x3) reads c1's channels: c1's share counts c2's inputs too.
    assert share["c1"] > share["c0"] and 0 < sum(share.values()) < 2.5

    lines = []
    plan = tfprune.search.widths(
        model, train, validation, {"size": "2x", "max_accuracy_drop": 100}, epochs=1,
        finetune_steps=0, grid_step=0.75, export={"quantize": "none"}, log=lines.append)
    assert plan.all_met and plan.checked
    assert plan.figures["bytes"] * 2 <= plan.baseline["bytes"]
    # The coupled convs keep one width; the search saw a handful of candidates, not one per
    # layer per step.
    assert plan.widths["stem"] == plan.widths["b0_project"] == plan.widths["b1_project"]
    assert any("allocated all at once" in line for line in lines)
    assert sum(line.startswith("allocate at price") for line in lines) <= 4 + allocate.BISECTIONS
    # The price's stair step overshot the size; the fill widened groups back, coupled ones
    # together, while the measured file stayed within it.
    assert any(line.startswith("fill ->") for line in lines)
    # Sensitivity: two widths per channel group, the coupled ones cut together, and the
    # uncut control; no group below the narrowest width measured (a quarter).
    assert len(plan.sensitivity) == 2 * len(sets) + 1 and "@control" in plan.sensitivity
    assert all(4 * plan.widths[layer] >= units - 3 for layer, units in plan.units.items())


@pytest.mark.slow
def test_the_uniform_candidate_is_trained_beside_the_allocation_and_kept_if_it_suffices():
    model, train, validation = _residual_problem()
    lost = accuracy(model, validation) - 0.2  # the allocation's candidate misses the bound
    check, calls = _scripted_check([lost, accuracy(model, validation)])
    lines = []
    plan = tfprune.search.widths(
        model, train, validation, {"size": "2x", "max_accuracy_drop": 1}, check=check,
        max_checks=2, finetune_steps=0, grid_step=0.75, export={"quantize": "none"},
        log=lines.append)
    assert len(calls) == 2 and plan.all_met
    uniform = [row for row in plan.candidates if row.get("uniform")]
    assert len(uniform) == 1 and plan.name == uniform[0]["name"]
    # Every searched layer at one fraction of its units (to rounding).
    kept = [plan.widths[layer] / units for layer, units in plan.units.items()]
    assert max(kept) - min(kept) <= 1 / min(plan.units.values())
    assert plan.figures["bytes"] * 2 <= plan.baseline["bytes"]
    assert "the uniform candidate" in plan.note and "missed a target" in plan.note
    from tfprune.pipeline.stages.search_report import _candidate_row

    assert " | checked (uniform) | " in _candidate_row(uniform[0], plan.name, plan.baseline)
    assert any("as the allocation's reference" in line for line in lines)


def test_of_two_candidates_that_meet_the_targets_the_fewer_macs_win_within_noise():
    from tfprune.search.greedy import Greedy

    def row(name, right, macs):
        return {"name": name, "figures": {"val_accuracy": float(np.mean(right)), "macs": macs,
                                          "bytes": 1000}}

    search = Greedy.__new__(Greedy)
    search.base_right = np.ones(2000, bool)
    checks = {}
    search.record = type("Record", (), {"section": lambda self, key: checks})()
    right = np.ones(2000, bool)
    right[-20:] = False
    close = right.copy()
    close[:6], close[-3:] = False, True  # 6 lost, 3 gained: within noise
    far = right.copy()
    far[:100] = False  # 5 pp: beyond it
    for name, answers in {"wide": right, "close": close, "far": far}.items():
        checks[name] = {"right": np.packbits(answers).tobytes().hex()}
    wide = row("wide", right, 900)
    assert search._preferred([wide, row("close", close, 500)])["name"] == "close"
    assert search._preferred([wide, row("far", far, 500)])["name"] == "wide"
    # Without the answers image by image, only an equal accuracy ties.
    checks.clear()
    assert search._preferred([wide, row("close", close, 500)])["name"] == "wide"


@pytest.mark.slow
def test_a_run_of_several_modes_searches_in_the_one_nearest_its_targets():
    from types import SimpleNamespace

    from tfprune.pipeline.stages.search import _search_mode

    model, train, _ = _problem()
    config = PipelineConfig(quantize=("none", "dynamic"), target_size="3x",
                            granularity="Conv2D:filter,Dense:filter,out:none")
    float32 = tfprune.search.shortfall(model, {"size": "3x"}, export={"quantize": "none"})
    int8 = tfprune.search.shortfall(model, {"size": "3x"}, export={"quantize": "dynamic"})
    assert float32 > int8 >= 0
    lines = []
    context = SimpleNamespace(config=config, train=train)
    assert _search_mode(context, model, lines.append) == "dynamic"
    assert lines[0].endswith("costing candidates in dynamic")
    # One mode, or a target no mode changes (MACs): the first mode, nothing exported.
    only_macs = dataclasses.replace(config, target_size=None, target_macs="2x")
    assert _search_mode(SimpleNamespace(config=only_macs, train=train), model, None) == "none"
