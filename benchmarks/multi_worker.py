"""A multi-worker run on this machine, killed mid-prune and resumed: what each worker did.

    python benchmarks/multi_worker.py [--workers=2] [--kill_at_epoch=2] [--prune_epochs=4]

Starts `python -m tfprune --distribute=multi_worker` once per worker on 127.0.0.1 (free
ports, one `TF_CONFIG` each) on slices of MNIST. With `--kill_at_epoch=N` (0: no kill) it
SIGKILLs every worker as soon as the chief has backed up epoch N of the prune stage, then
starts them all again with `--resume`. Printed: each worker's stages as it logged them, the
epoch each resumed the prune stage from (the workers agree on it: one may have been killed
while writing its backup), the sparsity each reached, the wall times, and the `.tflite`
accuracy. The run folder is `benchmarks/out/multi_worker/`.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "benchmarks" / "out" / "multi_worker"


def flags(args):
    return ["--train_limit=640", "--test_limit=1000", "--baseline_epochs=1",
            f"--prune_epochs={args.prune_epochs}", "--retrain_epochs=1",
            "--baseline_batch_size=32", "--prune_batch_size=32", "--retrain_batch_size=32",
            "--final_sparsity=0.5", "--frequency=1",
            "--granularity=Conv2D:filter,Dense:filter,ip2:none", "--merge=exact",
            "--quantize=int8", "--representative_size=32", "--bench_runs=100",
            "--noplots", "--verbose=0", f"--export_dir={FOLDER}", "--distribute=multi_worker"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, extra, tag):
    cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(args.workers)]}
    processes = []
    for i in range(args.workers):
        env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="",
                   TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=json.dumps(
                       {"cluster": cluster, "task": {"type": "worker", "index": i}}))
        log = open(FOLDER.parent / f"multi_worker_{tag}_{i}.log", "w")  # noqa: SIM115
        processes.append(subprocess.Popen([sys.executable, "-m", "tfprune", *flags(args),
                                           *extra], cwd=ROOT, env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
    return processes


def logged(tag, i):
    text = (FOLDER.parent / f"multi_worker_{tag}_{i}.log").read_text()
    return [line for line in text.splitlines() if line.startswith("[tfprune]")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill_at_epoch", type=int, default=2)
    parser.add_argument("--prune_epochs", type=int, default=4)
    args = parser.parse_args()
    shutil.rmtree(FOLDER, ignore_errors=True)
    FOLDER.mkdir(parents=True)
    start = time.perf_counter()
    processes = launch(args, [], "first")
    if args.kill_at_epoch:
        wanted = f"backup/prune-*/epoch-{args.kill_at_epoch}.weights.h5"
        while not list(FOLDER.glob(wanted)):
            if any(p.poll() is not None for p in processes):
                sys.exit("A worker ended before the kill: see benchmarks/out/multi_worker_*.log")
            time.sleep(0.1)
        for p in processes:
            p.send_signal(signal.SIGKILL)
    for p in processes:
        p.wait()
    first = time.perf_counter() - start
    resumed = 0.0
    if args.kill_at_epoch:
        start = time.perf_counter()
        processes = launch(args, ["--resume"], "resumed")
        for p in processes:
            p.wait()
        resumed = time.perf_counter() - start
    tag = "resumed" if args.kill_at_epoch else "first"
    codes = [p.returncode for p in processes]
    print(f"python benchmarks/multi_worker.py --workers={args.workers} "
          f"--kill_at_epoch={args.kill_at_epoch} --prune_epochs={args.prune_epochs}")
    print(f"first run {first:.1f} s{' (killed)' if args.kill_at_epoch else ''}, "
          f"resumed run {resumed:.1f} s, exit codes {codes}")
    for i in range(args.workers):
        folder = FOLDER if i == 0 else FOLDER / f"workertemp_{i}"
        prune = json.loads((folder / "stages.json").read_text())["prune"]["result"]
        zeros = {row["name"]: row["kernel_zeros"] for row in prune["layers"]}
        print(f"\nworker {i}: prune resumed from epoch {prune['resumed_from_epoch']}, "
              f"{prune['nonzeros']:,} non-zero, kernel zeros {zeros}")
        print("\n".join(logged(tag, i)))
    report = json.loads((FOLDER / "report.json").read_text())
    print(f"\n.tflite test accuracy {report['files']['compressed.tflite']['accuracy']:.2%} "
          f"({report['summary']['size_ratio']:.1f}x smaller); backups left: "
          f"{sorted(str(p.relative_to(FOLDER)) for p in FOLDER.rglob('backup'))}")


if __name__ == "__main__":
    main()
