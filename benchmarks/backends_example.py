"""The README's "Other Keras backends" example on all of MNIST, under JAX and TensorFlow.

    python benchmarks/backends_example.py [--slice]

The README's script runs in a process of each backend (its slice of 10,000 images removed,
its schedule stretched to `end_step=600, frequency=60` for the 469 steps of an epoch; with
`--slice`, as printed), each writes `small.keras`, and this process (TensorFlow) exports
each with the README's command and measures the `.tflite` files on the 10,000 test images.
Printed: each backend's sparsity and test accuracy, and JAX - TensorFlow paired on the same
images with its 95% interval. The folders are kept in `benchmarks/out/backends_example/`.
"""

import argparse
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "backends_example"
BACKENDS = ("jax", "tensorflow")


def readme_example():
    """The section's script and its export command's Python."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Other Keras backends"):text.index("## The Python API")]
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    export = re.search(r'KERAS_BACKEND=tensorflow python -c "(.*?)"', section).group(1)
    return script, export


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slice", action="store_true", help="the script as printed")
    args = parser.parse_args(argv)
    script, export = readme_example()
    if not args.slice:
        for old, new in (("x, y = x[:10000], y[:10000]", ""),
                         ("end_step=100, frequency=10", "end_step=600, frequency=60")):
            if old not in script:
                raise SystemExit(f"The README's example changed: {old!r} is gone; update "
                                 "this benchmark.")
            script = script.replace(old, new)
    sparsity = {}
    for backend in BACKENDS:
        folder = OUT / backend
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "prune_example.py").write_text(script)
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([sys.executable, "prune_example.py"], cwd=folder, env=env,
                              text=True, capture_output=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{backend}: the example failed:\n{done.stderr[-2000:]}")
        line = next(ln for ln in done.stdout.splitlines() if ln.startswith(f"{backend} {{"))
        sparsity[backend] = ast.literal_eval(line.split(" ", 1)[1])

    import numpy as np

    import tfprune

    x, y = tfprune.data.mnist_arrays("test")
    right = {}
    for backend in BACKENDS:
        os.chdir(OUT / backend)
        exec(export, {})  # the README's export command, in this TensorFlow process
        right[backend] = np.argmax(tfprune.export.predict("small.tflite", x), -1) == y
        print(f"{backend}: sparsity {sparsity[backend]}, .tflite test accuracy "
              f"{right[backend].mean():.2%}")
    paired = tfprune.stats.paired(right["tensorflow"], right["jax"])
    print(f"JAX - TensorFlow: {paired.text()}")
    print(f"\n{' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
