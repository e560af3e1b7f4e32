"""Faults, measured: kills, full disks, two runs in one folder, broken models, hostile files.

    python benchmarks/faults.py                      # everything, the long version
    python benchmarks/faults.py --fuzz_cases=200 --kinds=fuzz   # one kind, fewer cases

Each fault kind runs real `tfprune` processes (`python -m tfprune`, on a tiny run of a few
hundred MNIST images) or a pool of worker processes reading fuzzed files:

- **kill**: a run dies at a named point (`TFPRUNE_FAULT`, see `tfprune/faults.py`): SIGKILL
  inside training, after a file is written but before it is renamed, between a stage's
  files and its record; or SIGXFSZ in the middle of a write (a file-size limit left deadly).
  Then `--resume` must finish with the figures of an uninterrupted run, skipping every
  stage the killed run had recorded, and no partial file may ever be taken as finished.
- **fsize**: from a named point on, no file may grow past a few bytes (RLIMIT_FSIZE: the
  writes fail with EFBIG, as on a full disk). The run must stop with one line naming the
  file and the free space, keep every finished stage and the previous version of every
  file, and `--resume` without the limit must finish it.
- **enospc**: the same on a real full file system (a tmpfs, when this process may mount).
- **lock**: a second run into a folder a first run holds must fail at once, naming its
  pid; after the first is killed, `--resume` must not be blocked.
- **broken**: diverged training in each stage, a baseline at chance level, a stage that
  falls too far: never exit 0 (1: stopped; 3: finished but not earned).
- **fuzz**: mutated and truncated `.tflite`, `.keras` and flag files fed to every entry
  point that reads them, in worker processes so that a native crash is survived and
  counted: no crash, no hang past a bound, one line for an error, nothing written outside
  the worker's folder.

Prints a table and writes `benchmarks/out/faults.json`. `tests/test_faults.py` runs the
same functions with a few cases each.
"""

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"

# A whole run in seconds: a few hundred images, one or two epochs. Its compressed model is
# barely trained, so it goes on past the stage checks and finishes "not earned" (exit 3).
TINY = ("--train_limit=128", "--test_limit=100", "--baseline_epochs=1", "--prune_epochs=1",
        "--retrain_epochs=1", "--baseline_batch_size=32", "--prune_batch_size=32",
        "--retrain_batch_size=32", "--final_sparsity=0.5", "--frequency=1",
        "--granularity=Conv2D:filter,Dense:filter,ip2:none", "--merge=approximate",
        "--quantize=int8", "--representative_size=16", "--bench_runs=3", "--bench_warmup=1",
        "--verbose=0", "--noplots", "--keep_going")

# SIGKILL (or death by SIGXFSZ mid-write) at each of these, from a fresh folder.
KILL_POINTS = (
    "kill@train:baseline#2", "kill@written:baseline.keras", "kill@record:baseline",
    "kill@written:stages.json", "kill@train:prune#3", "xfsz=100000@write:pruned.keras",
    "kill@record:prune", "kill@written:merged.keras", "kill@record:merge",
    "kill@train:retrain#2", "xfsz=200000@write:retrained.keras", "kill@record:retrain",
    "kill@written:compressed.keras", "kill@record:shrink", "kill@written:baseline.tflite",
    "xfsz=50000@write:compressed.tflite", "kill@written:compressed.tflite",
    "kill@record:export", "kill@record:verify", "kill@record:benchmark",
    "kill@written:report.json", "kill@written:report.md", "kill@written:stages.json#6",
)
# The file-size limit from each of these on: EFBIG at that write.
FSIZE_POINTS = (
    "fsize=4096@write:baseline.keras", "fsize=4096@write:pruned.keras",
    "fsize=600@write:stages.json#2", "fsize=4096@write:merged.keras",
    "fsize=4096@write:retrained.keras", "fsize=4096@write:compressed.keras",
    "fsize=4096@write:baseline.tflite", "fsize=4096@write:compressed.tflite",
    "fsize=1000@write:report.json", "fsize=1000@write:report.md",
)


def environment(**extra):
    """The environment of a `tfprune` subprocess: this checkout first on the path."""
    env = dict(os.environ)
    env.pop("TFPRUNE_FAULT", None)
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
               TF_CPP_MIN_LOG_LEVEL="3", **{k: v for k, v in extra.items() if v is not None})
    return env


class Run:
    """A finished `tfprune` process: exit code, output, and the stages it logged."""

    def __init__(self, code, out, err, seconds):
        self.code, self.out, self.err, self.seconds = code, out, err, seconds

    @property
    def logged(self):
        """Stage name -> its `[tfprune]` line."""
        return {line.split()[1]: line for line in self.out.splitlines()
                if line.startswith("[tfprune]") and len(line.split()) > 2
                and not line.split()[2].startswith("going")}

    @property
    def skipped(self):
        return {name for name, line in self.logged.items() if "skipped (resumed)" in line}

    @property
    def errors(self):
        """The lines tfprune itself printed on stderr (not the libraries' logs)."""
        return [line for line in self.err.splitlines() if line.startswith("tfprune")]

    @property
    def traceback(self):
        return "Traceback (most recent call last)" in self.err

    def __repr__(self):
        return f"Run(code={self.code}, errors={self.errors}, seconds={self.seconds:.0f})"


def tfprune(folder, *flags, fault=None, fsize=None, timeout=900, cwd=None, kill_after=None):
    """Runs `python -m tfprune` on the tiny run into `folder`; returns a `Run`.

    Args:
        folder: The run folder (`--export_dir`).
        *flags: More flags (`--resume`, ...); they come after the tiny run's.
        fault: A `TFPRUNE_FAULT` value, or `None`.
        fsize: Integer: the file-size limit of the whole process (RLIMIT_FSIZE), or `None`.
        timeout: Seconds before the process is killed (then `TimeoutError`).
        kill_after: Seconds after which the process gets SIGKILL, wherever it is, or `None`.
    """
    def limit():
        if fsize is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))

    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfprune", *TINY, f"--export_dir={folder}", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd or ROOT,
        env=environment(TFPRUNE_FAULT=fault), preexec_fn=limit)
    try:
        out, err = proc.communicate(timeout=kill_after or timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        if kill_after is None:
            raise TimeoutError(f"tfprune {flags} ran past {timeout} s: {err[-2000:]}") from None
    return Run(proc.returncode, out, err, time.perf_counter() - start)


def figures(folder):
    """The figures of a finished run that must not depend on how it got there.

    Everything in `report.json` but times: per stage its validation accuracy and counts,
    per file its size, test accuracy and quantization.
    """
    report = json.loads((Path(folder) / "report.json").read_text())
    stages = [{k: v for k, v in row.items() if k != "seconds"} for row in report["stages"]]
    timing = {"latency_us", "speedup", "load_average", "delegate", "rounds", "cpu_count",
              "threads", "batch_size", "speedup_over"}
    files = {name: {k: v for k, v in facts.items() if k not in timing}
             for name, facts in report["files"].items()}
    claims = [{k: v for k, v in c.items() if k != "reason"} for c in report["verdict"]["claims"]
              if c["name"] != "faster"]
    return {"stages": stages, "files": files, "layers": report["layers"], "claims": claims}


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(folder):
    """Name -> SHA-256 of every file in `folder` (the lock file aside)."""
    return {p.name: sha256(p) for p in Path(folder).iterdir()
            if p.is_file() and p.name != ".tfprune.lock"}


def audit(folder):
    """What is wrong with a run folder: a problem per line, none when all is well.

    Every stage recorded in `stages.json` has its outputs with their recorded SHA-256; every
    file with a final name (not a `.partial-` temporary) is complete: a `.keras` zip passes
    its CRC check, a `.tflite` parses, a `.json` parses.
    """
    folder, problems = Path(folder), []
    if not folder.is_dir():
        return problems
    records = {}
    if (folder / "stages.json").exists():
        try:
            records = json.loads((folder / "stages.json").read_text())
        except ValueError as e:
            problems.append(f"stages.json does not parse: {e}")
    for stage, record in records.items():
        for name, digest in record.get("outputs", {}).items():
            if not (folder / name).is_file() or sha256(folder / name) != digest:
                problems.append(f"{stage}: recorded output {name} is missing or changed")
    for path in folder.iterdir():
        if ".partial-" in path.name or not path.is_file():
            continue
        try:
            if path.suffix == ".keras":
                with zipfile.ZipFile(path) as z:
                    bad = z.testzip()
                if bad:
                    problems.append(f"{path.name}: member {bad} is corrupt")
            elif path.suffix == ".tflite":
                from tfprune import export

                export.inspect(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
        except Exception as e:  # any failure to read a finished file is the finding
            problems.append(f"{path.name}: incomplete ({type(e).__name__}: {e})"[:200])
    return problems


# ----------------------------------------------------------------------------- kills, disks


def recorded(folder):
    path = Path(folder) / "stages.json"
    try:
        return set(json.loads(path.read_text())) - {"report"} if path.exists() else set()
    except ValueError:
        return set()


def fault_then_resume(folder, fault, reference, before=None, changed=()):
    """Runs the tiny run into `folder` with `fault`, audits, resumes without it, compares.

    Args:
        folder: The run folder (fresh, or holding a finished run when `before` is given).
        fault: The `TFPRUNE_FAULT` value.
        reference: `figures()` of an uninterrupted run.
        before: Extra flags of the faulty run (`--resume --quantize=float16`), or `None`.
        changed: The stages `before` changes the settings of: their old records describe
            another configuration, so running them again loses nothing.

    Returns:
        A dict: the fault, how the faulty run ended (code, its error line), the problems
        found after it, the stages it had recorded and the resume skipped, whether a
        finished stage was lost, whether the resume's figures equal the reference.
    """
    old = snapshot(folder) if before else {}
    first = tfprune(folder, *(before or ()), fault=fault)
    problems = audit(folder)
    if before:  # the rerun failed at its first write: every file is still its old self
        now = snapshot(folder)
        problems += [f"{name}: previous version lost" for name, digest in old.items()
                     if now.get(name) != digest]
    kept = recorded(folder)
    second = tfprune(folder, "--resume", *(before[1:] if before else ()))
    lost = sorted(kept - second.skipped - {"report"} - set(changed))
    partials = sorted(p.name for p in Path(folder).glob("*.partial-*"))
    same = second.code in (0, 3) and figures(folder) == reference
    return {"fault": fault, "code": first.code, "error": (first.errors or [""])[-1][:300],
            "traceback": first.traceback, "problems": problems + audit(folder),
            "recorded": sorted(kept), "resume_code": second.code, "lost": lost,
            "partials_left": partials, "same_figures": same, "seconds": round(
                first.seconds + second.seconds, 1)}


@contextlib.contextmanager
def tiny_filesystem(megabytes):
    """A tmpfs of `megabytes` mounted for the block (root only), or `None` if not allowed."""
    folder = Path(tempfile.mkdtemp(prefix="tfprune-tmpfs-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs",
                              str(folder)], capture_output=True).returncode == 0
    try:
        yield folder if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def enospc_case(reference):
    """A run into a 32 MB tmpfs that a 20 MB ballast file fills; resumed once it is freed."""
    with tiny_filesystem(32) as fs:
        if fs is None:
            return None
        ballast = fs / "ballast"
        ballast.write_bytes(b"\0" * 20_000_000)
        folder = fs / "run"
        first = tfprune(folder)
        problems, kept = audit(folder), recorded(folder)
        ballast.unlink()  # the user frees space
        second = tfprune(folder, "--resume")
        return {"fault": "ENOSPC on a 32 MB tmpfs, 20 MB taken", "code": first.code,
                "error": (first.errors or [""])[-1][:300], "traceback": first.traceback,
                "problems": problems + audit(folder), "recorded": sorted(kept),
                "resume_code": second.code, "lost": sorted(kept - second.skipped - {"report"}),
                "partials_left": sorted(p.name for p in folder.glob(".*.partial-*")),
                "same_figures": second.code in (0, 3) and figures(folder) == reference}


def lock_case(root):
    """Two runs into one folder: the second fails at once naming the first's pid; after
    the first is killed, `--resume` is not blocked by its lock."""
    folder = Path(root) / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(folder), str(Path(root) / "started")],
        env=environment(), cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not (Path(root) / "started").exists():
            if holder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the first run did not start (exit {holder.returncode})")
            time.sleep(0.05)
        second = tfprune(folder, "--stop_after=baseline", timeout=120)
        named = str(holder.pid) in " ".join(second.errors)
    finally:
        holder.kill()
        holder.wait()
    third = subprocess.run([sys.executable, "-c", _TAKER, str(folder)], env=environment(),
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    return {"second_code": second.code, "second_error": (second.errors or [""])[-1],
            "second_seconds": round(second.seconds, 1), "pid_named": named,
            "resume_after_kill_code": third.returncode, "both_exit_0": second.code == 0}


# The first run: holds the folder's lock inside a stage that waits to be killed.
_HOLDER = """
import sys, time
from pathlib import Path
from tfprune.pipeline import Context, PipelineConfig, Stage, execute

def wait(context):
    Path(sys.argv[2]).write_text("started")
    time.sleep(600)

execute([Stage("wait", wait)], Context(PipelineConfig(export_dir=sys.argv[1])))
"""
# After the holder was killed: a run takes the folder, with --resume.
_TAKER = """
import sys
from tfprune.pipeline import Context, PipelineConfig, Stage, execute

execute([Stage("done", lambda context: ([], {}, "done"))],
        Context(PipelineConfig(export_dir=sys.argv[1], resume=True)))
"""

BROKEN = {  # the flags that make the tiny run broken, and the exit codes allowed
    "diverged baseline": (("--baseline_learning_rate=1e8",), (1,)),
    "diverged prune": (("--prune_learning_rate=1e9",), (1,)),
    "diverged retrain": (("--retrain_learning_rate=1e9",), (1,)),
    "baseline at chance (untrained)": (("--baseline_epochs=0", "--nokeep_going"), (1,)),
    "stage drop, no --keep_going": (("--nokeep_going", "--max_stage_drop=1",
                                     "--final_sparsity=0.98", "--retrain_epochs=0"), (1,)),
    "not earned (accuracy)": ((), (3,)),
}


def broken_case(folder, name):
    flags, allowed = BROKEN[name]
    run = tfprune(folder, *flags)
    exported = sorted(p.name for p in Path(folder).glob("*.tflite")) if run.code == 1 else []
    return {"case": name, "code": run.code, "allowed": list(allowed), "error": (
        run.errors or [""])[-1][:300], "traceback": run.traceback, "exported": exported}


# ----------------------------------------------------------------------------- fuzzing

READERS = {  # reader -> the kind of file it takes
    "inspect": "tflite", "evaluate": "tflite", "bench": "tflite",
    "load_model": "keras", "to_tflite": "keras", "flags": "flags",
    "tflm": "micro",  # a full-int8 file for TFLite Micro, run on its interpreter
}
_INTERESTING = (0, 1, 0x7F, 0x80, 0xFF)
_INTS = (0, 1, -1, 0x7FFFFFFF, -0x80000000, 0xFFFF, 1 << 20, 1 << 30)


def mutate_bytes(data, rng, hot=None):
    """`data` with one to three random mutations: flips, bytes, ints, cuts, chunks.

    Args:
        data: Bytes.
        rng: A `random.Random`.
        hot: Integer or `None`: half the offsets fall in the first and last `hot` bytes
            (where a flatbuffer keeps its tables), the rest anywhere.
    """
    data = bytearray(data)

    def offset():
        if hot and rng.random() < 0.5 and len(data) > 2 * hot:
            return rng.choice([rng.randrange(hot), len(data) - 1 - rng.randrange(hot)])
        return rng.randrange(max(1, len(data)))

    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(7)
        if not data:
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind == 0:
            for _ in range(rng.randint(1, 8)):
                i = offset()
                data[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[offset()] = rng.choice(_INTERESTING)
        elif kind == 2:
            i = offset()
            data[i:i + 4] = rng.choice(_INTS).to_bytes(8, "little", signed=True)[:4]
        elif kind == 3:
            del data[rng.randrange(len(data) + 1):]
        elif kind == 4:
            i = offset()
            del data[i:i + rng.randint(1, 64)]
        elif kind == 5:
            i, j = offset(), offset()
            data[i:i] = data[j:j + rng.randint(1, 64)]
        else:
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return bytes(data)


_JSON_VALUES = (None, True, -1, 0, 1, 2**31, 1e308, -1e308, "", "Lambda", "builtins",
                "os.system", "keras.layers", "../../x", [], {}, [[[[]]]], "Dense", "float64",
                {"class_name": "Lambda", "config": {"function": "x"}})


def mutate_keras(data, rng):
    """A `.keras` zip mutated: its bytes, or one member (JSON values, bytes), or cut."""
    if rng.random() < 0.3:
        return mutate_bytes(data, rng)
    source = zipfile.ZipFile(io.BytesIO(data))
    members = {info.filename: source.read(info) for info in source.infolist()}
    name = rng.choice(sorted(members))
    content = members[name]
    if name.endswith(".json") and rng.random() < 0.7:
        try:
            tree = json.loads(content)
            for _ in range(rng.randint(1, 3)):
                tree = _mutate_json(tree, rng)
            content = json.dumps(tree).encode()
        except ValueError:
            content = mutate_bytes(content, rng)
    elif rng.random() < 0.2:
        members.pop(name)
        content = None
    else:
        content = mutate_bytes(content, rng, hot=512)
    if content is not None:
        members[name] = content
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for member, body in members.items():
            z.writestr(member, body)
    return out.getvalue()


def _mutate_json(tree, rng, depth=0):
    if isinstance(tree, dict) and tree and depth < 12:
        key = rng.choice(sorted(tree))
        if rng.random() < 0.35:
            if rng.random() < 0.3:
                tree.pop(key)
            else:
                tree[key] = rng.choice(_JSON_VALUES)
        else:
            tree[key] = _mutate_json(tree[key], rng, depth + 1)
        return tree
    if isinstance(tree, list) and tree and depth < 12:
        i = rng.randrange(len(tree))
        if rng.random() < 0.35:
            tree[i] = rng.choice(_JSON_VALUES)
        else:
            tree[i] = _mutate_json(tree[i], rng, depth + 1)
        return tree
    if isinstance(tree, int) and not isinstance(tree, bool) and rng.random() < 0.5:
        return rng.choice((0, -1, tree * 1000, 2**31 - 1, tree + 1))
    return rng.choice(_JSON_VALUES)


_FLAG_VALUES = ("", "-1", "0", "1e308", "nan", "inf", "-inf", "x" * 5000, "../../etc",
                "none", "true", "1,2,3", ":", "conv1:2", "Conv2D:", "\\", "'", '"',
                "/dev/null", "1" * 400)


def mutate_flagfile(text, rng, own_path):
    """A flag file mutated line by line (values, flags, nesting) or byte by byte."""
    if rng.random() < 0.25:
        return mutate_bytes(text.encode(), rng)
    lines = text.splitlines()
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        i = rng.randrange(max(1, len(lines)))
        if kind == 0 and lines:
            lines.pop(i)
        elif kind == 1 and lines:
            lines.insert(i, lines[i])
        elif kind in (2, 3) and lines and "=" in lines[i]:
            name = lines[i].split("=", 1)[0]
            lines[i] = f"{name}={rng.choice(_FLAG_VALUES)}"
        elif kind == 4:
            lines.insert(i, rng.choice((f"--flagfile={own_path}", "--flagfile=/nonexistent",
                                        "--no_such_flag=1", "--", "-x", "--model",
                                        "--export_dir=", "--stop_after=nothing",
                                        "--quantize=int8,int9", "--resume=maybe")))
        else:
            lines.insert(i, "".join(rng.choice("-=_az09 ,:\t\x00\x7f\u00e9")
                                    for _ in range(rng.randint(1, 40))))
    return ("\n".join(lines) + "\n").encode("utf-8", errors="surrogateescape")


def seeds(root):
    """The files the fuzzing mutates, made in `root/seeds`: small models and a flag file.

    A `.tflite` float and an int8 one with sparse weights, a `.keras` model, a `.keras`
    model with a Lambda layer that would write `root/pwned` if it were ever run (safe mode
    must refuse it), and `flags/quick.flags`.
    """
    import keras
    import numpy as np

    from tfprune import export

    folder = Path(root) / "seeds"
    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                              keras.layers.Dense(10, name="fc")])
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[..., :2] = 0
    model.get_layer("conv").set_weights([kernel, bias])
    images = np.random.default_rng(0).random((16, 8, 8, 1), dtype="float32")
    export.to_tflite(model, folder / "float.tflite")
    export.to_tflite(model, folder / "int8.tflite", quantize="int8", sparse=True,
                     representative_data=images)
    export.to_tflite(model, folder / "micro.tflite", target="tflm", representative_data=images)
    model.save(folder / "model.keras")
    pwned = str(Path(root) / "pwned")
    hostile = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Lambda(lambda x: x + len(open(pwned, "w").write("pwned") * [0]))])
    hostile.save(folder / "lambda.keras")
    Path(pwned).unlink(missing_ok=True)  # building it ran the function once, here
    shutil.copy(ROOT / "flags" / "quick.flags", folder / "quick.flags")
    return {"tflite": [folder / "float.tflite", folder / "int8.tflite"],
            "micro": [folder / "micro.tflite"],
            "keras": [folder / "model.keras", folder / "lambda.keras"],
            "flags": [folder / "quick.flags"]}


def fuzz_cases(root, seed_files, reader, count, seed=0):
    """`count` mutated files for `reader`, written under `root/cases/<reader>/`."""
    kind = READERS[reader]
    rng = random.Random(f"{seed}:{reader}")
    folder = Path(root) / "cases" / reader
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for i in range(count):
        source = rng.choice(seed_files[kind])
        suffix = {"tflite": ".tflite", "micro": ".tflite", "keras": ".keras",
                  "flags": ".flags"}[kind]
        path = folder / f"{i:05d}{suffix}"
        if kind == "keras" and i == 0:
            data = (Path(seed_files["keras"][1])).read_bytes()  # the Lambda model, as is
        elif kind in ("tflite", "micro"):
            data = mutate_bytes(source.read_bytes(), rng, hot=1024)
        elif kind == "keras":
            data = mutate_keras(source.read_bytes(), rng)
        else:
            data = mutate_flagfile(source.read_text(), rng, path)
        path.write_bytes(data)
        cases.append({"reader": reader, "path": str(path), "id": i})
    return cases


class Pool:
    """Worker processes that read fuzzed files; a crash or a hang kills only that worker.

    Each worker (`python benchmarks/faults.py --worker`) imports everything once, then
    reads one case per line on stdin and answers one JSON line on stdout. A worker that
    dies mid-case is counted as a crash of that case, one that passes `timeout` seconds as
    a hang; either is replaced.
    """

    def __init__(self, root, jobs=2, timeout=60):
        self.root, self.timeout = Path(root), timeout
        for sub in ("run", "home", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.workers = [self._start() for _ in range(jobs)]
        for worker in self.workers:
            self._ready(worker)
        self.home = snapshot_tree(self.root / "home")

    def _start(self):
        env = environment(HOME=str(self.root / "home"), TMPDIR=str(self.root / "tmp"))
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=self.root / "run", env=env)
        return {"proc": proc, "buffer": b"", "case": None, "deadline": None}

    def _ready(self, worker):
        line = self._line(worker, time.monotonic() + 300)
        if line != {"ready": True}:
            raise RuntimeError(f"a fuzz worker did not start: {line}")

    def _line(self, worker, deadline):
        """The worker's next JSON line, `None` at EOF, `"timeout"` past `deadline`."""
        fd = worker["proc"].stdout.fileno()
        while b"\n" not in worker["buffer"]:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                if not sel.select(left):
                    return "timeout"
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            worker["buffer"] += chunk
        line, worker["buffer"] = worker["buffer"].split(b"\n", 1)
        return json.loads(line)

    def run(self, cases):
        """Runs every case; returns one result dict per case, in order."""
        results, pending = [None] * len(cases), list(enumerate(cases))
        sel = selectors.DefaultSelector()
        busy = {}
        while pending or busy:
            for worker in self.workers:
                if worker["case"] is None and pending:
                    index, case = pending.pop(0)
                    worker.update(case=(index, case), deadline=time.monotonic() + self.timeout)
                    worker["proc"].stdin.write((json.dumps(case) + "\n").encode())
                    worker["proc"].stdin.flush()
                    busy[worker["proc"].stdout.fileno()] = worker
                    sel.register(worker["proc"].stdout.fileno(), selectors.EVENT_READ)
            wait = min(w["deadline"] for w in busy.values()) - time.monotonic()
            ready = sel.select(max(0.0, wait))
            now = time.monotonic()
            for key, _ in ready:
                worker = busy[key.fd]
                self._finish(worker, self._line(worker, now + 0.5), results, busy, sel)
            for worker in [w for w in busy.values() if w["deadline"] <= now]:
                self._finish(worker, "timeout", results, busy, sel)
        sel.close()
        return results

    def _finish(self, worker, answer, results, busy, sel):
        if answer == "timeout" and worker["deadline"] > time.monotonic():
            return  # a partial line: wait for the rest
        index, case = worker["case"]
        fd = worker["proc"].stdout.fileno()
        if isinstance(answer, dict):
            results[index] = {**case, **answer}
        else:
            proc = worker["proc"]
            if answer == "timeout":
                proc.kill()
            code = proc.wait()
            results[index] = {**case, "outcome": "hang" if answer == "timeout" else "crash",
                              "detail": f"worker exit {code}"}
            sel.unregister(fd)
            busy.pop(fd)
            self.workers[self.workers.index(worker)] = replacement = self._start()
            self._ready(replacement)
            return
        sel.unregister(fd)
        busy.pop(fd)
        worker.update(case=None, deadline=None)

    def close(self):
        for worker in self.workers:
            with contextlib.suppress(OSError):
                worker["proc"].stdin.close()
            worker["proc"].kill()
            worker["proc"].wait()

    def written_outside(self):
        """Files that appeared or changed outside the workers' run folder since start."""
        now = snapshot_tree(self.root / "home")
        changed = [name for name in now if self.home.get(name) != now[name]]
        return changed + (["pwned"] if (self.root / "pwned").exists() else [])


def snapshot_tree(folder):
    return {str(p.relative_to(folder)): sha256(p) for p in Path(folder).rglob("*")
            if p.is_file()}


def fuzz(root, reader, count, pool, seed_files, seed=0):
    """Feeds `count` mutated files to `reader` through `pool`; returns counts and samples."""
    cases = fuzz_cases(root, seed_files, reader, count, seed)
    inputs = snapshot_tree(Path(root) / "cases" / reader)
    results = pool.run(cases)
    counts = {"cases": len(results)}
    for outcome in ("ok", "error", "uncaught", "multiline", "crash", "hang"):
        counts[outcome] = sum(r["outcome"] == outcome for r in results)
    counts["inputs_changed"] = int(snapshot_tree(Path(root) / "cases" / reader) != inputs)
    counts["samples"] = [{k: r.get(k) for k in ("id", "outcome", "detail")} for r in results
                         if r["outcome"] not in ("ok", "error")][:10]
    return counts


# ----------------------------------------------------------------------------- the worker


def _worker():
    """Runs cases from stdin, one per line, and answers on stdout (see `Pool`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(ROOT))
    import keras  # noqa: F401  (its first import writes ~/.keras: before the snapshot)
    import matplotlib  # noqa: F401  (the same for its font cache)
    import numpy as np
    from absl import flags

    from tfprune import cli, export, micro, tools
    from tfprune.errors import TfpruneError
    from tfprune.micro import csource
    from tfprune.pipeline.context import load_model

    answer = os.fdopen(os.dup(1), "w", buffering=1)
    tools._define_bench_flags()
    images = np.random.default_rng(0).random((20, 8, 8, 1), dtype="float32")
    labels = np.arange(20) % 10

    def bench(path):
        flags.FLAGS.unparse_flags()
        argv = flags.FLAGS(["tfprune-bench", "--runs=2", "--warmup=0", path, path])
        return tools.bench_main(argv)

    def parse(path):
        flags.FLAGS.unparse_flags()
        try:
            cli.parse_flags(["tfprune", f"--flagfile={path}"])
            cli.config_from_flags().validate()
        except TfpruneError as e:
            print(f"tfprune: error: {e}", file=sys.stderr)
            return 1
        except SystemExit as e:
            return e.code
        return 0

    def on_tflm(path):  # what fits, the arena on TFLM's interpreter, its outputs, the C source
        micro.measure_arena(path)
        micro.predict(path, images[:2])
        csource.write(path, out_dir=".")  # the worker's own folder

    readers = {
        "inspect": lambda path: export.inspect(path),
        "evaluate": lambda path: export.evaluate(path, images, labels),
        "bench": bench,
        "load_model": lambda path: load_model(path),
        "to_tflite": lambda path: export.to_tflite(path, "converted.tflite"),
        "flags": parse,
        "tflm": on_tflm,
    }
    answer.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        case = json.loads(line)
        answer.write(json.dumps(_one_case(readers[case["reader"]], case["path"],
                                          TfpruneError)) + "\n")


def _one_case(read, path, error_type):
    """Runs one reader with stdout and stderr captured at the file-descriptor level."""
    captured = tempfile.TemporaryFile()
    saved = os.dup(1), os.dup(2)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(captured.fileno(), 1)
    os.dup2(captured.fileno(), 2)
    outcome, detail = "ok", ""
    try:
        code = read(path)
        if isinstance(code, int) and code != 0:
            outcome = "error"
    except error_type as e:
        outcome, detail = "error", str(e)
        if "\n" in detail:
            outcome = "multiline"
    except Exception as e:  # any other exception would reach the user as a traceback
        outcome, detail = "uncaught", f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    captured.seek(0)
    text = captured.read().decode(errors="replace")
    ours = [ln for ln in text.splitlines() if ln.startswith(("tfprune", "Traceback"))]
    if outcome == "error" and not detail:
        detail = "\n".join(ours)
        if len(ours) != 1 or "Traceback" in text:
            outcome = "multiline"
    return {"outcome": outcome, "detail": detail[:400]}


# ----------------------------------------------------------------------------- main


def reference_run(root):
    """Two uninterrupted tiny runs: their figures must agree (else nothing can be compared)."""
    runs = [tfprune(Path(root) / f"reference{i}") for i in (1, 2)]
    assert all(run.code == 3 for run in runs), runs
    first, second = (figures(Path(root) / f"reference{i}") for i in (1, 2))
    return first, first == second, min(run.seconds for run in runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fuzz_cases", type=int, default=1000, help="cases per reader")
    parser.add_argument("--jobs", type=int, default=2, help="fuzz worker processes")
    parser.add_argument("--readers", default=",".join(READERS), help="the readers to fuzz")
    parser.add_argument("--timeout", type=float, default=120,
                        help="seconds a fuzz case may take before it counts as a hang")
    parser.add_argument("--kinds", default="kill,randomkill,fsize,enospc,lock,broken,fuzz")
    parser.add_argument("--random_kills", type=int, default=8, help="kills at random times")
    parser.add_argument("--out", default="faults.json", help="file name in benchmarks/out")
    parser.add_argument("--root", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    if args.worker:
        return _worker()
    kinds = set(args.kinds.split(","))
    root = Path(args.root or tempfile.mkdtemp(prefix="tfprune-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    results, started = {"command": " ".join(sys.argv), "root": str(root)}, time.time()
    sys.path.insert(0, str(ROOT))
    if kinds & {"kill", "randomkill", "fsize", "enospc"}:
        reference, repeatable, seconds = reference_run(root)
        results["reference_repeatable"] = repeatable
        print(f"reference: two uninterrupted runs agree: {repeatable}", flush=True)
    if "randomkill" in kinds:
        rng = random.Random(0)
        results["randomkill"] = []
        for i in range(args.random_kills):
            row = random_kill_case(root / f"randomkill{i}", reference,
                                   rng.uniform(3, 0.95 * seconds))
            results["randomkill"].append(row)
            print(_row_line(row), flush=True)
    for kind, points in (("kill", KILL_POINTS), ("fsize", FSIZE_POINTS)):
        if kind not in kinds:
            continue
        results[kind] = []
        for i, fault in enumerate(points):
            row = fault_then_resume(root / f"{kind}{i}", fault, reference)
            results[kind].append(row)
            print(_row_line(row), flush=True)
    if "fsize" in kinds:
        # A finished run whose export reruns (another mode) under the limit: its old files
        # must stay as they were.
        folder = root / "fsize_rerun"
        shutil.copytree(root / "reference1", folder)
        row = fault_then_resume(folder, "fsize=4096@write:baseline.tflite", _float16(root),
                                before=("--resume", "--quantize=float16"),
                                changed=("export", "verify", "benchmark"))
        results["fsize"].append(row)
        print(_row_line(row), flush=True)
    if "enospc" in kinds:
        row = enospc_case(reference)
        results["enospc"] = [row] if row else []
        print(_row_line(row) if row else "enospc: cannot mount a tmpfs here: skipped")
    if "lock" in kinds:
        results["lock"] = [lock_case(root / f"lock{i}") for i in range(5)]
        for row in results["lock"]:
            print(f"lock: {row}", flush=True)
    if "broken" in kinds:
        results["broken"] = [broken_case(root / f"broken{i}", name)
                             for i, name in enumerate(BROKEN)]
        for row in results["broken"]:
            print(f"broken: {row['case']}: exit {row['code']} {row['error'][:120]}", flush=True)
    if "fuzz" in kinds:
        import keras  # noqa: F401  (the seeds are made here)

        seed_files = seeds(root / "fuzz")
        pool = Pool(root / "fuzz", jobs=args.jobs, timeout=args.timeout)
        try:
            results["fuzz"] = {}
            for reader in args.readers.split(","):
                t = time.time()
                counts = fuzz(root / "fuzz", reader, args.fuzz_cases, pool, seed_files)
                counts["seconds"] = round(time.time() - t, 1)
                results["fuzz"][reader] = counts
                print(f"fuzz {reader}: {counts}", flush=True)
            results["fuzz_written_outside"] = pool.written_outside()
        finally:
            pool.close()
    results["seconds"] = round(time.time() - started)
    OUT.mkdir(exist_ok=True)
    from tfprune import atomic

    atomic.write_text(OUT / args.out, json.dumps(results, indent=1, default=str))
    print(table(results))
    return 0


def random_kill_case(folder, reference, after):
    """A run killed (SIGKILL) `after` seconds in, wherever it is; then resumed."""
    first = tfprune(folder, kill_after=after)
    problems, kept = audit(folder), recorded(folder)
    second = tfprune(folder, "--resume")
    return {"fault": f"SIGKILL after {after:.1f} s", "code": first.code,
            "error": (first.errors or [""])[-1][:300], "traceback": first.traceback,
            "problems": problems + audit(folder), "recorded": sorted(kept),
            "resume_code": second.code, "lost": sorted(kept - second.skipped - {"report"}),
            "partials_left": sorted(p.name for p in Path(folder).glob(".*.partial-*")),
            "same_figures": second.code in (0, 3) and figures(folder) == reference,
            "seconds": round(first.seconds + second.seconds, 1)}


def tables(*paths):
    """The table of one or more results files (`benchmarks/out/*.json`), merged."""
    merged = {}
    for path in paths:
        merged.update(json.loads(Path(path).read_text()))
    return table(merged)


def _float16(root):
    """The reference figures of the tiny run exported as float16 (resumed from reference1)."""
    folder = root / "reference_float16"
    shutil.copytree(root / "reference1", folder)
    run = tfprune(folder, "--resume", "--quantize=float16")
    assert run.code in (0, 3), run
    return figures(folder)


def _row_line(row):
    return (f"{row['fault']}: exit {row['code']}, resume exit {row['resume_code']}, "
            f"same figures {row['same_figures']}, lost {row['lost']}, problems "
            f"{row['problems']} | {row['error'][:100]}")


def table(results):
    """The README's Reliability table from a results dict."""
    lines = ["| fault | cases | crashes | runs that lost a finished stage | runs that exited 0 "
             "on a broken model | other failures |", "|---|---:|---:|---:|---:|---|"]
    for kind, label in (("kill", "SIGKILL / SIGXFSZ at a named point, then --resume"),
                        ("randomkill", "SIGKILL at a random time, then --resume"),
                        ("fsize", "file-size limit (EFBIG) at a write, then --resume"),
                        ("enospc", "full tmpfs (ENOSPC), then --resume")):
        rows = results.get(kind)
        if not rows:
            continue
        crashes = sum(r["traceback"] for r in rows)
        lost = sum(bool(r["lost"]) for r in rows)
        # The tiny run's model earns nothing: exit 0 from either run would be a false claim.
        zero = sum(r["code"] == 0 or r["resume_code"] == 0 for r in rows)
        other = sum(bool(r["problems"]) or not r["same_figures"] or bool(r["partials_left"])
                    for r in rows)
        lines.append(f"| {label} | {len(rows)} | {crashes} | {lost} | {zero} | {other} |")
    if results.get("lock"):
        rows = results["lock"]
        bad = sum(not r["pid_named"] or r["second_code"] != 1 or r["resume_after_kill_code"]
                  for r in rows)
        lines.append(f"| second run into a held folder | {len(rows)} | 0 | 0 | "
                     f"{sum(r['both_exit_0'] for r in rows)} | {bad} |")
    if results.get("broken"):
        rows = results["broken"]
        lines.append(f"| diverged, chance-level or fallen model | {len(rows)} | "
                     f"{sum(r['traceback'] for r in rows)} | 0 | "
                     f"{sum(r['code'] == 0 for r in rows)} | "
                     f"{sum(r['code'] not in r['allowed'] or bool(r['exported']) for r in rows)} |")
    for reader, counts in (results.get("fuzz") or {}).items():
        lines.append(f"| fuzzed {READERS[reader]} -> {reader} | {counts['cases']} | "
                     f"{counts['crash']} | — | — | {counts['uncaught']} uncaught, "
                     f"{counts['multiline']} multi-line, {counts['hang']} hangs |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
