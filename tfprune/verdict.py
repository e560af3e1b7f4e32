"""The run's verdict: which claims the compressed model earned, and why not.

Never claim what the model did not earn: a diverged, slower, larger or less accurate
result is reported as such, with the reason, in the one-line summary and at the top of the
report, and the command exits with 3 (not 0). A claim is a `Claim(name, met, reason)`;
they come from three places, and `judge` gathers them all:

- **While the run goes** (`stage_checks`, called by the runner after each stage that
  makes a model): a model with non-finite weights (it always stops the run); a baseline
  whose validation accuracy is at chance level; a stage declared `judged` whose
  validation accuracy fell more than `max_stage_drop` points below the baseline's. The
  last two stop the run unless `keep_going`, and are kept in the stage's result under
  `"checks"`.
- **From any stage**: a stage may report claims of its own as a list of dicts under
  `result["claims"]` (`{"name": ..., "met": ..., "reason": ...}`), a search stage its
  targets, say.
- **At the end** (`CHECKS`, on the report's summary): every figure finite; the compressed
  file no larger and no slower than the baseline's (with the benchmark's `slower_reason`
  when it gives one); the `.tflite` test accuracy within `max_accuracy_drop` points. A
  check returns `None` when its figure was not measured: no claim is then made. The
  accuracy claim judges the measured drop, and gives its paired 95% interval (verify's,
  `tfprune.stats`), saying when the drop is within noise (the interval holds no change
  or the bound).

Adding a check is a function `check(report) -> Claim | None` appended to `CHECKS`. This
module loads nothing heavy: it reads numbers.
"""

import dataclasses
import math

from tfprune import stats
from tfprune.errors import TfpruneError


class CheckFailed(TfpruneError):
    """A run stopped by a check: a non-finite model, a baseline at chance, a stage's drop."""


@dataclasses.dataclass(frozen=True)
class Claim:
    """One thing the run says about its result, and whether the numbers bear it out.

    Args:
        name: String, what is claimed ("faster", "baseline above chance").
        met: Boolean, whether the numbers bear it out.
        reason: String, the figures that decide it, as a clause of a sentence.
        fix: String, what the user can do when it is not met, defaults to `""`.
        fatal: Boolean, stop the run even with `keep_going` (a model that is not finite),
            defaults to `False`.

    Example:

    >>> from tfprune.verdict import Claim
    >>> Claim("faster", False, "0.8x the baseline's speed").to_dict()["met"]
    False
    """

    name: str
    met: bool
    reason: str
    fix: str = ""
    fatal: bool = False

    def to_dict(self):
        """The claim as a JSON-ready dict."""
        return dataclasses.asdict(self)


def chance_bound(labels, count=None):
    """The validation accuracy a model must beat not to be at chance level.

    Chance is what always guessing the commonest class of `labels` (the training labels)
    scores: 1/classes on balanced data. The bound adds three standard errors of that score
    measured on `count` images (the validation split's size), and at least 5 points, so a
    model that learned nothing stays under it.

    Args:
        labels: The training labels (integers).
        count: Integer, how many images the accuracy is measured on, defaults to
            `len(labels)`.

    Returns:
        A tuple `(chance, bound)` of floats in [0, 1], or `None` without labels or images.

    Example:

    >>> from tfprune.verdict import chance_bound
    >>> chance, bound = chance_bound([0, 1] * 500)
    >>> chance, round(bound, 3)
    (0.5, 0.55)
    """
    labels = list(labels)
    count = len(labels) if count is None else count
    if not labels or not count:
        return None
    counts = {}
    for label in labels:
        counts[int(label)] = counts.get(int(label), 0) + 1
    chance = max(counts.values()) / len(labels)
    error = math.sqrt(chance * (1 - chance) / count)
    return chance, min(1.0, chance + max(0.05, 3 * error))


def stage_checks(name, result, config, baseline=None, judged=False, chance=None):
    """The checks of one stage's model, made as soon as the stage is done.

    Args:
        name: String, the stage's name.
        result: Dict, the stage's result (`"finite"` and `"val_accuracy"` are read).
        config: The run's `PipelineConfig` (`max_stage_drop` is read).
        baseline: Dict, the baseline stage's result; `None` when this is the baseline.
        judged: Boolean, hold this stage's accuracy to the baseline's (`max_stage_drop`).
        chance: `(chance, bound)` from `chance_bound`, for the baseline; or `None`.

    Returns:
        A list of `Claim`s.
    """
    claims = []
    if result.get("finite") is False:
        claims.append(Claim(
            "finite", False, f"the {name} model has non-finite weights (nan or inf)",
            fix="lower the learning rates, or check the model and data; nothing was "
                "exported", fatal=True))
    accuracy = result.get("val_accuracy")
    if accuracy is None:
        return claims
    if baseline is None and chance is not None:
        level, bound = chance
        claims.append(Claim(
            "baseline above chance", accuracy > bound,
            f"baseline val accuracy {accuracy:.2%} is chance level (the commonest class "
            f"alone: {level:.2%}; it must beat {bound:.2%})",
            fix="it learned nothing: check the data and labels, train it longer or lower "
                "--baseline_learning_rate (--keep_going goes on anyway)"))
    base = (baseline or {}).get("val_accuracy")
    if judged and base is not None:
        drop = 100 * (base - accuracy)
        ci = result.get("val_drop_ci_pp")
        paired = "" if ci is None else f" (paired 95% CI of the drop {ci[0]:.2f} to {ci[1]:.2f})"
        claims.append(Claim(
            f"{name} within max_stage_drop", drop <= config.max_stage_drop,
            f"{name} val accuracy {accuracy:.2%}, {drop:.2f} pp below the baseline's "
            f"{base:.2%}{paired} (more than --max_stage_drop={config.max_stage_drop:g} pp)",
            fix="prune less, retrain longer (--retrain_epochs), or pass --keep_going to "
                "finish anyway (the verdict will say so)"))
    return claims


def stop_message(name, claim):
    """The one line a run stopped by `claim` (after stage `name`) prints."""
    return (f"Stopped after stage {name!r}: {claim.reason}. {claim.fix[:1].upper()}"
            f"{claim.fix[1:]}. The finished stages are kept (--resume).")


# ----------------------------------------------------------------------------- at the end


def _finite(value):
    return value is None or (isinstance(value, (int, float)) and math.isfinite(value))


def finite_figures(report):
    """Every figure of the summary is a finite number, and every stage's model is finite."""
    s = report.get("summary") or {}
    figures = [v for v in s.values() if not isinstance(v, (dict, str, list, tuple))]
    figures += [x for v in s.values() if isinstance(v, (list, tuple)) for x in v]  # intervals
    for side in ("baseline", "compressed"):
        figures += [v for v in (s.get(side) or {}).values()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)]
    bad = [v for v in figures if not _finite(v)]
    broken = [name for name, result in (report.get("results") or {}).items()
              if isinstance(result, dict) and result.get("finite") is False]
    if not bad and not broken:
        return Claim("finite", True, "every figure is a finite number")
    what = (f"the models of {broken} are not finite" if broken
            else f"the figures hold {bad[0]!r}")
    return Claim("finite", False, f"{what}: no ratio is stated for them", fatal=True)


def smaller(report):
    """The compressed `.tflite` file is no larger than the baseline's."""
    s = report["summary"]
    b, c = s["baseline"].get("bytes"), s["compressed"].get("bytes")
    if b is None or c is None:
        return None
    reason = f"{s['compressed'].get('file')} {c:,} bytes, {s['baseline'].get('file')} {b:,}"
    return Claim("smaller", c <= b, reason if c <= b else f"larger: {reason}")


def faster(report):
    """The compressed `.tflite` file is no slower than the baseline's (speedup >= 1)."""
    s = report["summary"]
    speedup = s.get("speedup")
    if speedup is None:
        return None
    facts = (report.get("files") or {}).get(s["compressed"].get("file")) or {}
    reason = f"{speedup:.2f}x the baseline's speed"
    if speedup < 1:
        reason = f"slower: {reason}"
        if facts.get("slower_reason"):
            reason += f" ({facts['slower_reason']})"
    return Claim("faster", speedup >= 1, reason)


def accurate(report):
    """The compressed file's test accuracy is within `max_accuracy_drop` points.

    The rule is the point estimate against the bound. With the paired 95% interval of the
    drop (`summary["accuracy_drop_ci_pp"]`, from verify), the reason gives it, and says
    when the drop is within noise: the interval holds no change, or the bound itself.
    """
    s = report["summary"]
    delta = s.get("accuracy_delta")
    if delta is None:
        return None
    bound = (report.get("config") or {}).get("max_accuracy_drop", 0.5)
    met = 100 * delta >= -bound - 1e-9
    ci = s.get("accuracy_drop_ci_pp")
    shown = f"{100 * delta:+.2f} pp" if ci is None else stats.change_text(-100 * delta, ci)
    reason = f".tflite test accuracy {shown}"
    if not met:
        reason += f" (more than --max_accuracy_drop={bound:g} pp lost)"
    if ci is not None and stats.within_noise(ci, bound):
        images = (s.get("compressed") or {}).get("test_images")
        on = f"{images:,} test images" if images else "the test set"
        apart = " or ".join(what for what, value in (("no change", 0),
                                                     (f"the {bound:g} pp bound", bound))
                            if ci[0] <= value <= ci[1])
        reason += f"; within noise: {on} cannot tell it from {apart}"
    return Claim("accuracy", met, reason)


def targets(report):
    """The run's targets (`--target_size` and the like, `tfprune.report.targets`), each met
    on the final figures; the accuracy target is the `accurate` claim already."""
    rows = [t for t in report.get("targets") or () if t.get("figure") != "drop_pp"]
    if not rows:
        return None
    missed = [f"{t['name']} {t['text']} missed" + (" (not measured)" if t["met"] is None else "")
              for t in rows if not t["met"]]
    return Claim("targets", not missed, "; ".join(missed) if missed else
                 "every target met: " + ", ".join(f"{t['name']} {t['text']}" for t in rows))


CHECKS = [finite_figures, smaller, faster, accurate, targets]


def judge(report):
    """The verdict of a finished run.

    Args:
        report: The report dict (`tfprune.report.build`): its `summary`, `files`,
            `config` and raw stage `results` are read.

    Returns:
        A dict: `earned` (every claim met), `finite` (no model or figure is nan or inf),
        `claims` (each claim as a dict), `unmet` (the reasons of the claims not met).

    Example:

    >>> from tfprune import verdict
    >>> report = {"config": {"max_accuracy_drop": 0.5}, "files": {}, "results": {},
    ...           "summary": {"baseline": {"bytes": 100, "file": "b.tflite"},
    ...                       "compressed": {"bytes": 10, "file": "c.tflite"},
    ...                       "speedup": 0.8, "accuracy_delta": -0.001}}
    >>> result = verdict.judge(report)
    >>> result["earned"], result["unmet"]
    (False, ["slower: 0.80x the baseline's speed"])
    """
    claims = [claim.to_dict() for check in CHECKS if (claim := check(report)) is not None]
    for result in (report.get("results") or {}).values():
        if isinstance(result, dict):
            claims += [dict(c) for key in ("checks", "claims") for c in result.get(key) or ()
                       if isinstance(c, dict) and "met" in c]
    unmet = [c.get("reason") or c.get("name") for c in claims if not c["met"]]
    return {"earned": not unmet, "finite": all(c["met"] for c in claims if c["name"] == "finite"),
            "claims": claims, "unmet": unmet}


def line(report, headline):
    """The run's one-line summary: `headline`, led by what was not earned and why.

    Example:

    >>> from tfprune import verdict
    >>> verdict.line({"verdict": {"earned": False, "unmet": ["slower: 0.80x"]}}, "10x smaller")
    'NOT EARNED (slower: 0.80x): 10x smaller'
    """
    result = report.get("verdict") or {}
    if result.get("earned", True):
        return headline
    return f"NOT EARNED ({'; '.join(result['unmet'])}): {headline}"
