"""Why a compressed `.tflite` file runs slower than its baseline, from what the files hold.

A smaller file is not always a faster one: XNNPACK may refuse an op of it (a sparse int8
`FULLY_CONNECTED`) so that the slower builtin kernels run it, the converter's sparse
encoding adds `DENSIFY` ops, quantization adds `QUANTIZE`/`DEQUANTIZE` ops, or the model
simply does no less work. `reason` names what the files and the interpreter show, so that a
slower file is reported as slower, with the reason, and never as "0.4x faster".
"""

import re

from tfprune import tflite


def reason(baseline, compressed, macs=None):
    """Why `compressed` is slower than `baseline`, in one line.

    Args:
        baseline: The baseline's `tfprune.bench.Timing` (from `tfprune.bench.compare`).
        compressed: The compressed file's `Timing`.
        macs: Optional pair `(baseline MACs, compressed MACs)` of the Keras models.

    Returns:
        A string naming the facts found, most telling first: an op or a whole file the
        delegate refused, the sparse encoding's `DENSIFY` ops, the quantization's extra ops,
        no fewer MACs; or, when none applies, the kernels that ran each file.

    Example:

    >>> model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, name="fc"),
    ...                           keras.layers.Dense(10, name="out")])
    >>> fc = model.get_layer("fc")
    >>> _ = fc.kernel.assign(fc.kernel * (np.random.default_rng(0).random((32, 64)) > 0.9))
    >>> a = tfprune.export.to_tflite(model, "a.tflite")
    >>> b = tfprune.export.to_tflite(model, "b.tflite", quantize="dynamic", sparse=True)
    >>> timings = tfprune.bench.compare(a, b, runs=20, delegates=("xnnpack",))
    >>> print(tfprune.bench.slower.reason(timings.timing(0), timings.timing(1)))
    XNNPACK refused it (failed to delegate FULLY_CONNECTED node #1), so the builtin kernels ran \
it; its sparse encoding adds 1 DENSIFY op
    """
    found = []
    if compressed.delegate_used != baseline.delegate_used:
        refused = re.search(r"failed to delegate \w+ node #\d+", compressed.note)
        found.append(f"XNNPACK refused it ({refused.group(0) if refused else compressed.note}),"
                     " so the builtin kernels ran it")
    a, b = tflite.inspect(baseline.path), tflite.inspect(compressed.path)
    extra = {op: n - a.ops.get(op, 0) for op, n in b.ops.items()
             if op in ("DENSIFY", "QUANTIZE", "DEQUANTIZE") and n > a.ops.get(op, 0)}
    if "DENSIFY" in extra:
        found.append(f"its sparse encoding adds {_ops(extra.pop('DENSIFY'), 'DENSIFY')}")
    if extra:
        found.append("quantization adds " + ", ".join(_ops(n, op) for op, n in extra.items()))
    if macs and macs[1] >= macs[0]:
        found.append(f"the model does no fewer MACs ({macs[1]:,} vs {macs[0]:,})")
    if not found:
        found.append(f"no op fell back: its kernels ({compressed.delegate_used}) are slower "
                     f"here than the baseline's ({baseline.delegate_used})")
    return "; ".join(found)


def _ops(count, name):
    return f"{count} {name} op{'s' if count > 1 else ''}"
