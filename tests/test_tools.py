"""tfprune-bench and tfprune-inspect as a user runs them: output, JSON, one-line errors."""

import json
import os
import subprocess
import sys

import keras
import pytest
from absl import flags

from tfprune import export, tools


@pytest.fixture(scope="module")
def tflite(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tools")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="hidden"),
                              keras.layers.Dense(2, name="out")])
    return export.to_tflite(model, folder / "tiny.tflite")


@pytest.fixture
def main():
    """Calls a tool's `main` in this process, with its flags parsed as absl would; removes
    the flags afterwards so that other tests in this process see absl's FLAGS unchanged."""
    before = set(flags.FLAGS)
    tools._define_bench_flags()
    tools._define_inspect_flags()

    def call(main_fn, *args):
        argv = flags.FLAGS([main_fn.__name__, *map(str, args)])
        return main_fn(argv)

    yield call
    flags.FLAGS.unparse_flags()
    for name in set(flags.FLAGS) - before:
        delattr(flags.FLAGS, name)


def test_bench_prints_table_and_writes_json(main, tflite, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(tools.bench_main, tflite, tflite, "--runs=3", "--warmup=0",
                "--delegates=builtin", f"--json={out}")
    assert code == 0
    stdout = capsys.readouterr().out
    assert "median µs" in stdout and "speedup" in stdout and "runs=3" in stdout
    result = json.loads(out.read_text())
    assert [t["delegate"] for t in result["timings"]] == ["builtin", "builtin"]


def test_inspect_prints_report(main, tflite, tmp_path, capsys):
    out = tmp_path / "inspect.json"
    assert main(tools.inspect_main, tflite, f"--json={out}") == 0
    stdout = capsys.readouterr().out
    assert "FULLY_CONNECTED x2" in stdout and "gzipped" in stdout
    assert json.loads(out.read_text())[0]["ops"]["FULLY_CONNECTED"] == 2


def test_profile_flag_prints_and_writes_the_profile(main, tflite, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(tools.bench_main, tflite, "--runs=3", "--warmup=0", "--delegates=builtin",
                "--profile", f"--json={out}") == 0
    stdout = capsys.readouterr().out
    assert "each op timed alone" in stdout and "by kernels: builtin" in stdout
    profile = json.loads(out.read_text())["profiles"][0]
    assert [o["op"] for o in profile["ops"]] == ["FULLY_CONNECTED", "FULLY_CONNECTED"]
    assert main(tools.inspect_main, tflite, "--profile") == 0
    assert capsys.readouterr().out.count("each op timed alone") == 2  # xnnpack and builtin


def test_errors_are_one_line(main, tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_text("no model here")
    assert main(tools.inspect_main, bad) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfprune-inspect: error:")
    assert "not a TFLite model" in err[0]
    assert main(tools.bench_main, tmp_path / "missing.tflite", "--runs=1") == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(tools.app.UsageError, match="Pass one or more .tflite files"):
        main(tools.bench_main)


def test_a_full_disk_is_one_line_in_the_tools_too(main, tflite, tmp_path, monkeypatch, capsys):
    """The tools and `tfprune` share one handler (`tools.one_line_errors`)."""
    def full(path, payload):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(tools, "_write_json", full)
    assert main(tools.inspect_main, tflite, f"--json={tmp_path / 'out.json'}") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tfprune-inspect: error:")
    assert "free there" in err


@pytest.mark.parametrize("tool", ["bench_main", "inspect_main"])
def test_stray_positional_arguments_are_usage_errors(main, tflite, tool):
    with pytest.raises(tools.app.UsageError, match="Unexpected argument 'runs=3'.*--name=value"):
        main(getattr(tools, tool), tflite, "runs=3")
    with pytest.raises(tools.app.UsageError, match="Pass one or more .tflite files"):
        main(getattr(tools, tool))


def test_an_existing_file_of_another_name_is_read(main, tflite, tmp_path, capsys):
    other = tmp_path / "model.bin"
    other.write_bytes(tflite.read_bytes())
    assert main(tools.inspect_main, other) == 0
    assert "FULLY_CONNECTED x2" in capsys.readouterr().out


@pytest.mark.slow
def test_console_script_exits_nonzero_without_traceback(tmp_path):
    """One real process: the entry point, absl's flag parsing and exit status."""
    code = "import sys; from tfprune.tools import bench_run; sys.argv[0] = 'tfprune-bench'; " \
           "bench_run()"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing.tflite")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "tfprune-bench: error: File" in proc.stderr and "does not exist" in proc.stderr
