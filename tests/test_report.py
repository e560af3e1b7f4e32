"""The report: the summary ratios, the Markdown table and the plots, from stage results."""

import json

import pytest

from tfprune import report
from tfprune.pipeline import STAGES, PipelineConfig, Stage


def _results():
    layers = [{"name": "conv1", "class": "Conv2D", "units": 20, "weights": 500,
               "kernel_zeros": 0.0}]
    small = [{"name": "conv1", "class": "Conv2D", "units": 8, "weights": 200,
              "kernel_zeros": 0.1}]
    return {
        "baseline": {"params": 1000, "nonzeros": 1000, "macs": 8000, "val_accuracy": 0.99,
                     "layers": layers},
        "retrain": {"params": 1000, "nonzeros": 300, "macs": 8000, "val_accuracy": 0.985,
                    "layers": [dict(layers[0], kernel_zeros=0.6)]},
        "shrink": {"params": 250, "nonzeros": 200, "macs": 1000, "val_accuracy": 0.985,
                   "layers": small},
        "export": {"files": {
            "baseline.tflite": {"model": "baseline", "quantize": "none", "sparse": False,
                                "bytes": 5000, "gzip_bytes": 4000},
            "compressed.tflite": {"model": "compressed", "quantize": "int8", "sparse": True,
                                  "bytes": 500, "gzip_bytes": 250}}},
        "verify": {"files": {"baseline.tflite": {"accuracy": 0.99},
                             "compressed.tflite": {"accuracy": 0.9895}}},
        "benchmark": {"files": {
            "baseline.tflite": {"latency_us": 100.0, "delegate": "XNNPACK"},
            "compressed.tflite": {"latency_us": 10.0, "delegate": "XNNPACK", "speedup": 9.5,
                                  "speedup_over": "baseline.tflite", "rounds": 300,
                                  "cpu_count": 2, "load_average": [1.5, 1.0, 1.0]}}},
    }


def test_the_files_to_ship_are_the_front_within_the_accuracy_bound():
    results = _results()
    files = {"compressed.tflite": ("int8", 500, 10.0, 0.05),
             "compressed_dynamic.tflite": ("dynamic", 600, 8.0, 0.0),
             "compressed_float16.tflite": ("float16", 700, 9.0, 0.0),  # dynamic beats it
             "compressed_int4.tflite": ("int4", 300, 20.0, 0.08),
             "compressed_tiny.tflite": ("int4", 200, 5.0, 1.0)}  # beyond the bound
    for name, (mode, size, latency, drop) in files.items():
        results["export"]["files"][name] = {"model": "compressed", "quantize": mode,
                                            "bytes": size, "gzip_bytes": size}
        results["verify"]["files"][name] = {"accuracy": 0.99 - drop / 100, "drop_pp": drop,
                                            "drop_ci_pp": [drop - 0.1, drop + 0.1]}
        results["benchmark"]["files"].setdefault(name, {})["latency_us"] = latency
    data = report.build(PipelineConfig(max_accuracy_drop=0.5), STAGES, results, {})
    chosen = data["ship"]
    assert chosen["front"] == ["compressed_int4.tflite", "compressed.tflite",
                               "compressed_dynamic.tflite"]
    assert chosen["smallest"] == "compressed_int4.tflite"
    assert chosen["fastest"] == "compressed_dynamic.tflite"
    assert "compressed_tiny.tflite" not in chosen["within"]
    assert "baseline.tflite" not in chosen["within"]
    rows = {line.split(" | ")[0][3:-1]: line for line in report.markdown(data).splitlines()
            if line.startswith("| `")}
    assert rows["compressed_int4.tflite"].endswith(" | front, smallest |")
    assert rows["compressed_dynamic.tflite"].endswith(" | front, fastest |")
    assert rows["compressed_float16.tflite"].endswith(" | — |")
    tight = report.build(PipelineConfig(max_accuracy_drop=0.06), STAGES, results, {})["ship"]
    assert tight["front"] == ["compressed.tflite", "compressed_dynamic.tflite"]
    assert chosen["fastest_tflm"] is None  # no file ran on TFLite Micro
    # For a microcontroller, only the files TFLite Micro ran are marked on its figures.
    results["tflm"] = {"files": {
        "compressed.tflite": {"tflm_latency_us": 90.0, "arena_bytes": 4000},
        "compressed_tiny.tflite": {"tflm_latency_us": 40.0, "arena_bytes": 2000}}}
    data = report.build(PipelineConfig(max_accuracy_drop=0.5), STAGES, results, {})
    assert data["ship"]["fastest_tflm"] == data["ship"]["smallest_arena"] == "compressed.tflite"
    assert "fastest on TFLM, smallest TFLM arena |" in report.markdown(data)


def test_targets_are_met_by_any_file_the_run_exported():
    results = _results()
    files = {"compressed_int4.tflite": ("int4", 300, 0.08),
             "compressed_tiny.tflite": ("int4", 200, 1.0)}  # beyond the accuracy bound
    for name, (mode, size, drop) in files.items():
        results["export"]["files"][name] = {"model": "compressed", "quantize": mode,
                                            "bytes": size, "gzip_bytes": size}
        results["verify"]["files"][name] = {"accuracy": 0.99 - drop / 100, "drop_pp": drop,
                                            "drop_ci_pp": [drop - 0.1, drop + 0.1]}
    # 15x is 333 bytes: the first file (500) misses it, the int4 file meets every target.
    data = report.build(PipelineConfig(target_size="15x", max_accuracy_drop=0.5), STAGES,
                        results, {})
    assert data["summary"]["compressed"]["file"] == "compressed_int4.tflite"
    assert all(t["met"] for t in data["targets"]) and data["verdict"]["earned"]
    assert report.headline(data).startswith(
        "compressed_int4.tflite (meets every target): 16.7x smaller")
    assert "the first file of the run that meets every target" in report.markdown(data)
    # When no file meets them all, the first file is judged, and the run did not earn them.
    data = report.build(PipelineConfig(target_size="30x", max_accuracy_drop=0.5), STAGES,
                        results, {})
    assert data["summary"]["compressed"]["file"] == "compressed.tflite"
    assert not data["verdict"]["earned"] and "judged_file" not in data["summary"]


def test_summary_ratios():
    data = report.build(PipelineConfig(), STAGES, _results(), {"baseline": {"seconds": 3.0}})
    s = data["summary"]
    assert s["params_ratio"] == 4.0 and s["nonzeros_ratio"] == 5.0 and s["macs_ratio"] == 8.0
    assert s["size_ratio"] == 10.0 and s["gzip_ratio"] == 16.0
    assert s["speedup"] == 9.5  # the per-round ratio, not the ratio of medians
    assert abs(s["accuracy_delta"] - (-0.0005)) < 1e-12
    assert s["compressed"]["file"] == "compressed.tflite"
    assert [st["stage"] for st in data["stages"]] == ["baseline", "retrain", "shrink"]
    assert [st["model"] for st in data["stages"]] == [
        "baseline.keras", "retrained.keras", "compressed.keras"]
    assert data["stages"][0]["seconds"] == 3.0
    row = data["layers"][0]
    assert row["units_kept"] == 8
    assert row["kernel_zeros"] == {"baseline": 0.0, "retrain": 0.6, "shrink": 0.1}
    assert data["files"]["compressed.tflite"] == {
        **_results()["export"]["files"]["compressed.tflite"], "accuracy": 0.9895,
        **_results()["benchmark"]["files"]["compressed.tflite"]}
    json.dumps(data)  # JSON-ready


def test_model_rows_come_from_the_declarations():
    stages = [Stage("start", None, model="first"), Stage("middle", None),
              Stage("end", None, model="last")]
    results = {"start": {"params": 10}, "middle": {"params": 99}, "end": {"params": 5}}
    data = report.build(PipelineConfig(), stages, results, {})
    assert [(st["stage"], st["model"]) for st in data["stages"]] == [
        ("start", "first.keras"), ("end", "last.keras")]
    assert data["summary"]["params_ratio"] == 2.0


def test_markdown_table():
    md = report.markdown(report.build(PipelineConfig(), STAGES, _results(), {}))
    assert "| .tflite size (bytes) | 5,000 | 500 | 10.0x |" in md
    assert "| .tflite test accuracy | 99.00% | 98.95% | -0.05 pp |" in md
    assert "| Latency median, µs (1 thread, batch 1) | 100.0 | 10.0 | 9.5x |" in md
    assert "Ratios are baseline / compressed: for latency, the speedup." in md
    assert "| zeros after baseline | zeros after retrain | zeros after shrink |" in md
    assert "| conv1 | Conv2D | 20 | 8 | 500 | 200 | 0.0% | 60.0% | 10.0% |" in md
    row = next(line for line in md.splitlines() if line.startswith("| `compressed.tflite`"))
    assert row.startswith("| `compressed.tflite` | compressed | int8 | True | 500 | 250 | "
                          "98.95% | ")
    assert row.endswith(" | — | 10.0 | 9.5x | — |"), row  # no test drop known: not judged
    assert "over 300 rounds" in md and "load average 1.5" in md


def test_missing_stages_render_as_dashes():
    md = report.markdown(report.build(PipelineConfig(), STAGES,
                                      {"baseline": _results()["baseline"]}, {}))
    assert "| .tflite size (bytes) | — | — | — |" in md
    assert report.headline(report.build(PipelineConfig(), STAGES, {}, {})) == (
        "— smaller, — faster, accuracy —")


def _with_part(part):
    """The run's stages with a stub stage `extra`, bringing `part`, before the report."""
    return (*STAGES[:-1], Stage("extra", None, report=part), STAGES[-1])


def test_a_stage_brings_its_part_of_the_report():
    part = report.Part(facts=lambda models, files: {"files": len(files)},
                       sparsity=lambda data, name: f"as {name} chose",
                       rows=lambda data, name: [("Widgets", "1", "2", "0.5x")],
                       section=lambda data, name: ["", f"## {name}: {data[name]['files']} files"],
                       appendix=lambda data, name: ["## How extra did it", ""])
    stages = _with_part(part)
    data = report.build(PipelineConfig(), stages, _results(), {})
    assert data["extra"] == {"files": 2}
    md = report.markdown(data, stages)
    assert " | 9.5x |\n| Widgets | 1 | 2 | 0.5x |" in md  # after the latency row
    assert ", sparsity as extra chose." in md
    order = ["## Files", "## extra: 2 files", "Stage times total", "## How extra did it"]
    assert [md.index(text) for text in order] == sorted(md.index(text) for text in order)
    bare = report.markdown(data)  # without the stages, only the generic report
    assert "Widgets" not in bare and "## extra" not in bare and "sparsity 0.8." in bare


def test_the_tflm_stage_brings_its_facts_rows_and_section():
    results = _results()
    results["export"]["files"]["baseline_int8.tflite"] = {
        "model": "baseline", "quantize": "int8", "sparse": False, "bytes": 1500}
    arena = {"baseline.tflite": (5000, 9000, None), "baseline_int8.tflite": (1500, 4000, 0.99),
             "compressed.tflite": (500, 1000, 0.985)}
    results["tflm"] = {"files": {name: {
        "flash_bytes": flash, "arena_bytes": size, "arena_activations": size // 2,
        "arena_persistent": size // 4, **({"tflm_accuracy": accuracy} if accuracy else {})}
        for name, (flash, size, accuracy) in arena.items()}}
    data = report.build(PipelineConfig(), STAGES, results, {})
    assert data["tflm"]["baseline_int8"] == "baseline_int8.tflite"
    assert data["tflm"]["arena_ratio_int8"] == 4.0
    md = report.markdown(data, STAGES)
    assert ("| Tensor arena on TFLite Micro (bytes, measured; baseline: full int8) | 4,000 | "
            "1,000 | 4.0x |") in md
    assert "| Test accuracy on TFLite Micro (baseline: full int8) | 99.00% | 98.50% | " in md
    assert "## TensorFlow Lite Micro" in md and "| `compressed.tflite` | 500 | 1,000 | 500 |" in md
    assert "TensorFlow Lite Micro" not in report.markdown(report.build(
        PipelineConfig(), STAGES, _results(), {}), STAGES)


def test_the_report_stage_declares_the_plots_of_the_stages_before_it():
    from tfprune.pipeline.stages import report_stage

    part = report.Part(plots=(("extra.png", None),))
    stage = report_stage(_with_part(part)[:-1])
    assert stage.files_written(PipelineConfig()) == (*report.FILES, *report.PLOTS, "extra.png")
    assert stage.files_written(PipelineConfig(plots=False)) == report.FILES


@pytest.mark.slow
def test_write_files(tmp_path):
    part = report.Part(plots=(("extra.png", lambda plt, data, name: plt.figure()),
                              ("nothing.png", lambda plt, data, name: None)))
    data = report.build(PipelineConfig(), STAGES, _results(), {})
    written = report.write(tmp_path, data, stages=_with_part(part))
    assert written == [*report.FILES, *report.PLOTS, "extra.png"]
    for name in written:
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "stages.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["size_ratio"] == 10.0


# ----------------------------------------------------------------------------- the verdict


def _build(results, **settings):
    return report.build(PipelineConfig(**settings), STAGES, results, {})


def test_an_earned_result_says_so():
    data = _build(_results())
    assert data["verdict"]["earned"] and data["verdict"]["unmet"] == []
    assert {c["name"] for c in data["verdict"]["claims"]} == {
        "finite", "smaller", "faster", "accuracy"}
    assert report.headline(data) == "10.0x smaller, 9.5x faster, accuracy -0.05 pp"
    assert report.markdown(data).splitlines()[2].startswith("**Verdict: earned**")


def test_slower_larger_or_less_accurate_is_not_earned_and_says_why():
    results = _results()
    results["benchmark"]["files"]["compressed.tflite"].update(
        speedup=0.8, slower_reason="sparse kernels are slower than dense ones at this size")
    results["export"]["files"]["compressed.tflite"]["bytes"] = 6000
    results["verify"]["files"]["compressed.tflite"]["accuracy"] = 0.97
    data = _build(results)
    unmet = data["verdict"]["unmet"]
    assert not data["verdict"]["earned"] and len(unmet) == 3
    line = report.headline(data)
    assert line.startswith("NOT EARNED (")
    assert "larger: compressed.tflite 6,000 bytes, baseline.tflite 5,000" in line
    assert "slower: 0.80x the baseline's speed (sparse kernels are slower" in line
    assert "-2.00 pp (more than --max_accuracy_drop=0.5 pp lost)" in line
    md = report.markdown(data)
    assert "**Verdict: NOT EARNED.**" in md.split("| |")[0]  # before the table
    assert _build(results, max_accuracy_drop=3.0)["verdict"]["unmet"] == unmet[:2]


def test_claims_from_the_stages_join_the_verdict():
    """The stage checks the runner keeps, and claims any stage makes (a search's targets)."""
    results = _results()
    results["retrain"]["checks"] = [{"name": "retrain within max_stage_drop", "met": False,
                                     "reason": "retrain val accuracy -30 pp"}]
    results["shrink"]["claims"] = [{"name": "target size 50x", "met": True, "reason": "52x"}]
    data = _build(results)
    assert data["verdict"]["unmet"] == ["retrain val accuracy -30 pp"]
    assert "target size 50x" in {c["name"] for c in data["verdict"]["claims"]}


def test_no_ratio_is_stated_for_a_model_that_is_not_finite():
    results = _results()
    results["shrink"]["finite"] = False
    data = _build(results)
    assert not data["verdict"]["finite"] and not data["verdict"]["earned"]
    assert all(data["summary"][key] is None for key in report.RATIOS)
    assert "x smaller" not in report.headline(data).split("): ")[-1].replace("—", "")
    md = report.markdown(data)
    assert "10.0x" not in md and "9.5x" not in md
    results = _results()
    results["verify"]["files"]["compressed.tflite"]["accuracy"] = float("nan")
    assert not _build(results)["verdict"]["finite"]


# ----------------------------------------------------------------------------- intervals


def _paired(results, table, bound=0.1, **settings):
    """`results` with verify's paired figures for the compressed file, from `table`
    (both right, only the baseline, only the compressed, neither) on the test images."""
    from tfprune import stats

    drop = stats.PairedDrop.of(*table)
    facts = results["verify"]["files"]["compressed.tflite"]
    facts.update(drop.to_dict(), drop_vs="baseline.tflite",
                 accuracy=(table[0] + table[2]) / drop.images)
    results["verify"]["files"]["baseline.tflite"]["accuracy"] = (table[0] + table[1]) / sum(table)
    return _build(results, max_accuracy_drop=bound, **settings), drop


def test_the_accuracy_change_carries_its_paired_interval_in_summary_table_and_verdict():
    # 10,000 test images, 15 more lost than gained: -0.15 pp, but 35 images went each way.
    data, drop = _paired(_results(), (9855, 40, 25, 80), bound=0.5)
    lo, hi = drop.ci_pp
    assert data["summary"]["accuracy_drop_ci_pp"] == [lo, hi] and lo < 0 < hi
    text = f"-0.15 pp (95% CI {-hi:+.2f} to {-lo:+.2f})"
    assert f"| .tflite test accuracy | 98.95% | 98.80% | {text} |" in report.markdown(data)
    claim = next(c for c in data["verdict"]["claims"] if c["name"] == "accuracy")
    assert claim["met"]  # the rule is the point estimate against the bound ...
    assert text in claim["reason"]  # ... said with its interval
    assert claim["reason"].endswith("within noise: 10,000 test images cannot tell it from "
                                    "no change")
    # Earned, and said so with the interval and the noise, in the last line and report.md.
    assert data["verdict"]["earned"]
    assert report.headline(data) == f"10.0x smaller, 9.5x faster, accuracy {text}"
    first = report.markdown(data).splitlines()[2]
    assert first.startswith("**Verdict: earned**") and f"Accuracy: {claim['reason']}." in first


def test_the_verdict_keeps_its_rule_and_says_when_the_drop_is_within_noise_of_the_bound():
    # -0.15 pp against a 0.1 pp bound: not earned, though the images cannot tell.
    data, _ = _paired(_results(), (9855, 40, 25, 80), bound=0.1)
    claim = next(c for c in data["verdict"]["claims"] if c["name"] == "accuracy")
    assert not claim["met"] and not data["verdict"]["earned"]
    assert "(more than --max_accuracy_drop=0.1 pp lost)" in claim["reason"]
    assert "cannot tell it from no change or the 0.1 pp bound" in claim["reason"]
    # A clear drop, well measured: no noise to speak of.
    data, _ = _paired(_results(), (9700, 250, 10, 40), bound=0.1)
    claim = next(c for c in data["verdict"]["claims"] if c["name"] == "accuracy")
    assert not claim["met"] and "noise" not in claim["reason"]
    assert data["verdict"]["finite"]  # the interval's numbers count as figures, finite


def test_the_stage_table_shows_each_change_from_the_baseline_with_its_interval():
    results = _results()
    results["shrink"].update(val_drop_pp=0.5, val_drop_ci_pp=[0.2, 0.8],
                             val_discordant=[40, 10], val_images=6000)
    data = _build(results)
    row = next(st for st in data["stages"] if st["stage"] == "shrink")
    assert row["val_drop_pp"] == 0.5 and row["val_drop_ci_pp"] == [0.2, 0.8]
    md = report.markdown(data)
    assert "change from the baseline (paired 95% CI)" in md
    assert "| 98.50% | -0.50 pp (95% CI -0.80 to -0.20) |" in md
    assert "| baseline | `baseline.keras` | 1,000 | 1,000 | 8,000 | 99.00% | — |" in md


def test_a_judged_stage_names_the_interval_of_its_drop():
    from tfprune import verdict

    result = {"val_accuracy": 0.95, "val_drop_pp": 4.0, "val_drop_ci_pp": [3.1, 4.9]}
    claims = verdict.stage_checks("retrain", result, PipelineConfig(max_stage_drop=2.0),
                                  baseline={"val_accuracy": 0.99}, judged=True)
    assert not claims[0].met
    assert "4.00 pp below the baseline's 99.00% (paired 95% CI of the drop 3.10 to 4.90)" in (
        claims[0].reason)


def test_the_search_section_says_its_margin_and_each_candidates_interval():
    results = _results()
    figures = {"bytes": 100, "macs": 500, "val_accuracy": 0.988, "drop_pp": 0.2,
               "drop_ci_pp": [-0.05, 0.45]}
    results["search"] = {
        "name": "8", "note": "8 meets every target", "units": {"conv1": 20}, "measured": 3,
        "seconds": 12.0, "layer_sparsity": "conv1:0.6",
        "baseline": {"bytes": 5000, "val_accuracy": 0.99},
        "margin": {"bound_pp": 0.1, "margin_pp": 0.26, "planned_pp": 0.0,
                   "validation_images": 6000, "needed_images": 38875, "resolved": False},
        "candidates": [
            {"name": "10", "role": "step", "predicted_drop_pp": 0.1, "tuned_val_accuracy": 0.99,
             "tuned_drop_pp": 0.0, "tuned_drop_ci_pp": [-0.07, 0.07],
             "figures": {"bytes": 150, "macs": 600}},
            {"name": "8", "role": "checked", "predicted_drop_pp": 0.3, "figures": figures}]}
    data, _ = _paired(results, (9855, 40, 25, 80), bound=0.1, target_size="5x")
    md = report.markdown(data, STAGES)  # the search stage's part of the report
    assert ("The accuracy bound, 0.1 pp, was planned against less the validation split's "
            "margin: ±0.26 pp on 6,000 images (95%, paired), so 0.00 pp.") in md
    assert "**The split is too small for the bound**: about 38,875 images would resolve" in md
    assert "| 99.00%, +0.00 pp (95% CI -0.07 to +0.07) | — |" in md  # a step, fine-tuned
    assert "| 98.80%, -0.20 pp (95% CI -0.45 to +0.05) |" in md  # the check, trained
    lo, hi = data["summary"]["accuracy_drop_ci_pp"]
    assert (f"| accuracy | 0.1 pp | <= 0.10 pp | 0.15 (95% CI {lo:.2f} to {hi:.2f}) | **no** |"
            in md)
