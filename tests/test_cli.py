"""The command line: bad input ends in one line on stderr, no traceback, a non-zero exit."""

import os
import subprocess
import sys
import time
import zipfile

import keras
from absl import flags
from absl.testing import flagsaver

from tfprune import cli, pipeline

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


def test_every_config_field_is_a_flag():
    names = set(flags.FLAGS)
    for field in pipeline.PipelineConfig.__dataclass_fields__:
        assert field in names, field


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


def test_model_whose_input_the_dataset_does_not_fit(capsys, tmp_path, mnist_dir):
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    path = tmp_path / "rgb.keras"
    model.save(path)
    out = _main(capsys, f"--model={path}", f"--export_dir={tmp_path / 'run'}",
                f"--data_dir={mnist_dir}")
    _assert_one_line_error(*out, "do not fit")
    assert not (tmp_path / "run" / "baseline.keras").exists()


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


def test_layer_sparsity_naming_a_missing_layer(capsys, tmp_path, mnist_dir):
    out = _main(capsys, "--layer_sparsity=conv9:0.5", f"--export_dir={tmp_path}",
                f"--data_dir={mnist_dir}")
    _assert_one_line_error(*out, "conv9")
