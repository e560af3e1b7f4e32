"""The command line: bad input ends in one line on stderr, no traceback, a non-zero exit."""

import dataclasses
import os
import subprocess
import sys
import time
import zipfile

import keras
import pytest
from absl import app, flags
from absl.testing import flagsaver

from tfprune import cli, pipeline
from tfprune.pipeline.config import value_type

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(capsys, *argv):
    """Parses `argv` as the command line would and runs `cli.main`; returns (code, stderr)."""
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["tfprune", *argv])
        start = time.perf_counter()
        code = cli.main(["tfprune"])
        seconds = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    return code, err, seconds


def _assert_one_line_error(code, err, seconds, *words):
    assert code == 1
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("tfprune: error: ")
    for word in words:
        assert word in err
    assert seconds < 30  # before any training


def test_flags_build_the_config():
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["tfprune", "--model=lenet5", "--granularity=Conv2D:filter,Dense:filter",
                     "--quantize=int8,float16", "--prune_epochs=3", "--merge=approximate"])
        config = cli.config_from_flags()
    assert config.quantize == ("int8", "float16")
    assert config.prune_epochs == 3
    assert config.merge == "approximate"
    assert config.export_dir == os.path.join("export", "lenet5")
    assert pipeline.parse_granularity(config.granularity) == {"Conv2D": "filter",
                                                              "Dense": "filter"}


def test_every_config_field_is_a_flag_with_its_default():
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["tfprune"])
        assert cli.config_from_flags() == pipeline.PipelineConfig()


def _outside(bounds, kind):
    """Values just outside a range: what both the flag and `validate()` must refuse."""
    step = 1 if kind is int else 1e-9
    values = []
    if bounds.low is not None:
        values.append(bounds.low if bounds.low_open else bounds.low - step)
    if bounds.high is not None:
        values.append(bounds.high if bounds.high_open else bounds.high + step)
    return values


@pytest.mark.parametrize("field", [f for f in dataclasses.fields(pipeline.PipelineConfig)
                                   if f.metadata["range"] is not None], ids=lambda f: f.name)
def test_flag_bounds_and_validate_agree(field):
    bounds, kind = field.metadata["range"], value_type(field)
    inside = bounds.low if not bounds.low_open else bounds.low + (1 if kind is int else 0.5)
    for value in _outside(bounds, kind):
        with flagsaver.flagsaver():
            flags.FLAGS.unparse_flags()
            with pytest.raises(flags.IllegalFlagValueError):
                flags.FLAGS(["tfprune", f"--{field.name}={value}"])
        with pytest.raises(pipeline.TfpruneError, match=field.name):
            dataclasses.replace(pipeline.PipelineConfig(), **{field.name: value}).validate()
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["tfprune", f"--{field.name}={inside}"])
        assert getattr(cli.config_from_flags(), field.name) == inside


@pytest.mark.slow
def test_import_tfprune_is_light_and_exposes_everything():
    code = ("import sys, tfprune, tfprune.cli; "
            "assert not {'tensorflow', 'keras'} & set(sys.modules), 'heavy import'; "
            "assert tfprune.models.lenet5().count_params() == 431080; "
            "assert callable(tfprune.shrink) and callable(tfprune.pipeline.run); "
            "[getattr(tfprune, name) for name in tfprune.__all__]; "
            "import tfprune.shrinking; assert callable(tfprune.shrink)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_positional_arguments_are_a_usage_error():
    with pytest.raises(app.UsageError, match="only flags"):
        cli.main(["tfprune", "lenet5"])


@pytest.mark.slow
def test_bad_flag_is_one_line_before_tensorflow_loads():
    proc = subprocess.run([sys.executable, "-m", "tfprune", "--final_sparsity=2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "tfprune: error: flag --final_sparsity=2.0: Expected final_sparsity in [0.0, 1.0)."]
    # A setting only validate() can judge, through main(): still no TensorFlow.
    code = ("import sys; from absl import flags; from tfprune import cli; "
            "flags.FLAGS(['tfprune', '--granularity=Conv2D:rows']); "
            "assert cli.main(['tfprune']) == 1; "
            "assert not {'tensorflow', 'keras'} & set(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().startswith("tfprune: error: Unknown granularity")


def test_failed_run_leaves_no_folder_it_made(capsys, tmp_path):
    run = tmp_path / "new" / "run"
    out = _main(capsys, f"--export_dir={run}", f"--data_dir={tmp_path / 'no_mnist'}")
    _assert_one_line_error(*out, "does not exist")
    assert not (tmp_path / "new").exists()


def test_bad_granularity_value(capsys, tmp_path, mnist_dir):
    out = _main(capsys, "--granularity=Conv2D:bogus", f"--export_dir={tmp_path}",
                f"--data_dir={mnist_dir}")
    _assert_one_line_error(*out, "granularity='bogus'")


def test_unknown_zoo_model(capsys, tmp_path, mnist_dir):
    out = _main(capsys, "--model=lenet6", f"--export_dir={tmp_path}", f"--data_dir={mnist_dir}")
    _assert_one_line_error(*out, "model='lenet6'")


def test_missing_model_file(capsys, tmp_path, mnist_dir):
    out = _main(capsys, f"--model={tmp_path / 'nope.keras'}", f"--export_dir={tmp_path / 'run'}",
                f"--data_dir={mnist_dir}")
    _assert_one_line_error(*out, "not found")


def test_corrupt_model_file(capsys, tmp_path, mnist_dir):
    bad = tmp_path / "corrupt.keras"
    bad.write_bytes(b"\x00garbage" * 100)
    out = _main(capsys, f"--model={bad}", f"--export_dir={tmp_path / 'run'}",
                f"--data_dir={mnist_dir}")
    _assert_one_line_error(*out, "Cannot load")


def test_zip_that_is_not_a_keras_model(capsys, tmp_path, mnist_dir):
    bad = tmp_path / "other.keras"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("hello.txt", "not a model")
    out = _main(capsys, f"--model={bad}", f"--export_dir={tmp_path / 'run'}",
                f"--data_dir={mnist_dir}")
    _assert_one_line_error(*out, "Cannot load")


def test_file_that_is_not_keras_format(capsys, tmp_path, mnist_dir):
    bad = tmp_path / "weights.h5"
    bad.write_bytes(b"\x89HDF")
    out = _main(capsys, f"--model={bad}", f"--export_dir={tmp_path / 'run'}",
                f"--data_dir={mnist_dir}")
    _assert_one_line_error(*out, ".keras")


def test_model_whose_input_is_not_an_image(capsys, tmp_path, mnist_dir):
    # Images are resized and converted to any image input (tests/test_data.py); a vector
    # input gets the fix named.
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax")])
    path = tmp_path / "flat.keras"
    model.save(path)
    out = _main(capsys, f"--model={path}", f"--export_dir={tmp_path / 'run'}",
                f"--data_dir={mnist_dir}")
    _assert_one_line_error(*out, "not an image")
    assert "keras.Input((28, 28, 1))" in out[1]
    assert not (tmp_path / "run" / "baseline.keras").exists()


@pytest.mark.slow
def test_model_with_wrong_number_of_classes(capsys, tmp_path, mnist_dir):
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")])
    path = tmp_path / "three.keras"
    model.save(path)
    out = _main(capsys, f"--model={path}", f"--export_dir={tmp_path / 'run'}",
                f"--data_dir={mnist_dir}")
    _assert_one_line_error(*out, "3 outputs")


def test_unwritable_export_folder(capsys, tmp_path, mnist_dir):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = _main(capsys, f"--export_dir={blocker / 'run'}", f"--data_dir={mnist_dir}")
    _assert_one_line_error(*out, "Cannot write")


def test_missing_data_folder(capsys, tmp_path):
    out = _main(capsys, f"--export_dir={tmp_path}", f"--data_dir={tmp_path / 'no_mnist'}")
    _assert_one_line_error(*out, "does not exist")


def test_python_dash_m_rejects_unknown_flag_value():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "tfprune", "--merge=sideways"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "--merge=sideways" in proc.stderr


def test_python_dash_m_is_the_command():
    proc = subprocess.run([sys.executable, "-m", "tfprune", "--helpshort"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    # absl's help flags exit with 1 after printing the help.
    assert "--final_sparsity" in proc.stdout
    assert "--granularity" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_flagfiles_parse_and_validate():
    for name in ("quick.flags", "lenet5_paper.flags"):
        with flagsaver.flagsaver():
            flags.FLAGS.unparse_flags()
            flags.FLAGS(["tfprune", f"--flagfile={os.path.join(ROOT, 'flags', name)}"])
            config = cli.config_from_flags().validate()
        assert config.merge == "approximate"
        assert 0.5 < pipeline.parse_layer_sparsity(config.layer_sparsity)["ip1"] < 1.0
        assert config.export_dir.startswith("export/")


@pytest.mark.slow
def test_layer_sparsity_naming_a_missing_layer(capsys, tmp_path, mnist_dir):
    out = _main(capsys, "--layer_sparsity=conv9:0.5", f"--export_dir={tmp_path}",
                f"--data_dir={mnist_dir}")
    _assert_one_line_error(*out, "conv9")


def _verdict_run(monkeypatch, capsys, tmp_path, earned):
    report = {"summary": {"size_ratio": 10.0, "speedup": 0.8 if not earned else 2.0,
                          "accuracy_delta": 0.0},
              "verdict": {"earned": earned, "unmet": [] if earned else ["slower: 0.80x"]}}
    monkeypatch.setattr(pipeline, "run", lambda config: report)
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["tfprune", f"--export_dir={tmp_path}"])
        code = cli.main(["tfprune"])
    return code, capsys.readouterr()


def test_exit_code_says_whether_the_result_was_earned(monkeypatch, capsys, tmp_path):
    code, out = _verdict_run(monkeypatch, capsys, tmp_path, earned=True)
    assert code == cli.EXIT_EARNED == 0
    assert out.out.splitlines()[-1].startswith("tfprune: earned: 10.0x smaller, 2.0x faster")
    code, out = _verdict_run(monkeypatch, capsys, tmp_path, earned=False)
    assert code == cli.EXIT_NOT_EARNED == 3
    last = out.err.splitlines()[-1]
    assert last.startswith("tfprune: NOT EARNED (slower: 0.80x): 10.0x smaller, 1.2x SLOWER")
    assert "report.md" in last


def test_a_full_disk_outside_an_atomic_write_is_one_line(monkeypatch, capsys, tmp_path):
    def full(config):
        raise OSError(28, "No space left on device", str(tmp_path / "events.out"))

    monkeypatch.setattr(pipeline, "run", full)
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["tfprune", f"--export_dir={tmp_path}"])
        code = cli.main(["tfprune"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "free there" in err


def test_a_flag_file_that_is_not_text_is_one_line(tmp_path):
    bad = tmp_path / "bad.flags"
    bad.write_bytes(b"--seed=1\n--model=\xff\xfe\n")
    proc = subprocess.run([sys.executable, "-m", "tfprune", f"--flagfile={bad}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "UTF-8" in proc.stderr
