"""A `.tflite` file and the LiteRT interpreter: read and check a file, size it, load it.

The layer every measurement stands on: `export` (accuracy and inspection of a file) and
`bench` (latency) both import it, and it imports neither. Loading runs the default
XNNPACK delegate when it takes the model and falls back to the builtin kernels, saying why,
when it does not. `format_table` is the plain-text table both print their findings in.
"""

import gzip
import re
from pathlib import Path

import numpy as np

from tfprune.errors import TfpruneError

DELEGATES = ("xnnpack", "builtin")
_TFLITE_IDENTIFIER = b"TFL3"


def file_sizes(path):
    """Size of a file in bytes, raw and gzipped (level 9) as a download would be.

    Args:
        path: Path to the file.

    Returns:
        A tuple `(raw_bytes, gzip_bytes)` of integers.

    Raises:
        TfpruneError: the file is missing.

    Example:

    >>> with open("zeros.bin", "wb") as f:
    ...     _ = f.write(bytes(10_000))
    >>> raw, gz = tfprune.bench.file_sizes("zeros.bin")
    >>> raw, gz < 100
    (10000, True)
    """
    return data_sizes(_read(path))


def data_sizes(data):
    """`(raw_bytes, gzip_bytes)` of bytes already in memory (gzip level 9, as `file_sizes`)."""
    return len(data), len(gzip.compress(data, compresslevel=9, mtime=0))


def read_tflite(path):
    """Returns the bytes of a `.tflite` file after checking that it is one.

    Args:
        path: Path to the file.

    Returns:
        The file's bytes.

    Raises:
        TfpruneError: the file is missing, empty, or not a TFLite flatbuffer.
    """
    data = _read(path)
    if not data:
        raise TfpruneError(f"File {str(path)!r} is empty: export the model again "
                           "(tfprune.export.to_tflite).")
    if len(data) < 8 or data[4:8] != _TFLITE_IDENTIFIER:
        raise TfpruneError(f"File {str(path)!r} is not a TFLite model (no 'TFL3' identifier): "
                           "pass a .tflite file written by the TFLite converter.")
    return data


def load_interpreter(path, threads=None, delegate="xnnpack"):
    """A LiteRT interpreter for a `.tflite` file, tensors allocated, with XNNPACK fallback.

    Args:
        path: Path to the `.tflite` file.
        threads: Integer or `None` (the interpreter's default), defaults to `None`.
        delegate: String, `"xnnpack"` (the default CPU delegate) or `"builtin"` (the builtin
            kernels only, `BUILTIN_WITHOUT_DEFAULT_DELEGATES`), defaults to `"xnnpack"`.

    Returns:
        A tuple `(interpreter, delegate_used, note)`: `delegate_used` is `"xnnpack"` when the
        delegate took at least one op, else `"builtin"`; `note` says why they differ, or is
        `""`.

    Raises:
        TfpruneError: the file is missing, empty, truncated or not a TFLite model, or
            `delegate` is unknown.
    """
    from ai_edge_litert import interpreter as litert

    if delegate not in DELEGATES:
        raise TfpruneError(f"Unknown delegate: use one of {DELEGATES}. Received: "
                           f"delegate={delegate!r}")
    data = read_tflite(path)
    builtin = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if delegate == "builtin":
        return _allocated(litert, data, path, threads, builtin), "builtin", ""
    try:
        interpreter = _allocated(litert, data, path, threads, litert.OpResolverType.AUTO)
    except _DelegateFailure as e:
        interpreter = _allocated(litert, data, path, threads, builtin)
        return interpreter, "builtin", f"XNNPACK failed to prepare ({e}); ran builtin kernels"
    if not _delegated(interpreter):
        return interpreter, "builtin", "XNNPACK took no ops; ran builtin kernels"
    return interpreter, "xnnpack", ""


class _DelegateFailure(Exception):
    """The model loads with the builtin kernels but the default delegate rejects it."""


def _make_interpreter(litert, data, threads, resolver):
    """Builds and allocates an interpreter (a seam tests use to make XNNPACK fail).

    With the default delegate it also runs once on random input: XNNPACK prepares some
    kernels (sparse int8 fully-connected ones, for instance) only at the first `invoke`.
    """
    interpreter = litert.Interpreter(model_content=bytes(data), num_threads=threads,
                                     experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    if resolver == litert.OpResolverType.AUTO:
        for detail, x in zip(interpreter.get_input_details(), random_inputs(interpreter),
                             strict=True):
            interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
    return interpreter


def _allocated(litert, data, path, threads, resolver):
    try:
        return _make_interpreter(litert, data, threads, resolver)
    except (ValueError, RuntimeError) as e:
        reason = first_line(e)
        if resolver == litert.OpResolverType.AUTO and _loads_without_delegate(litert, data):
            raise _DelegateFailure(reason) from e
        raise TfpruneError(f"Cannot load {str(path)!r} with the LiteRT interpreter ({reason}): "
                           "the file is truncated or corrupt; export it again.") from e


def _loads_without_delegate(litert, data):
    try:
        _make_interpreter(litert, data, 1, litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except (ValueError, RuntimeError):
        return False
    return True


def _delegated(interpreter):
    try:
        return any(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())
    except Exception:  # a private API of LiteRT's: if it changes, assume the delegate ran
        return True


def _read(path):
    path = Path(path)
    if not path.is_file():
        raise TfpruneError(f"File {str(path)!r} does not exist: check the path.")
    return path.read_bytes()


def first_line(error):
    """The first line of an interpreter error, at most 300 characters, for a one-line message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = lines[0] if lines else type(error).__name__
    # LiteRT glues its messages together ("...node #4failed to ..."): separate them.
    return re.sub(r"(#\d+)(?=[A-Za-z])", r"\1; ", line)[:300]


def random_inputs(interpreter, seed=0):
    """Random data for each input of an allocated interpreter, in its dtype and range."""
    rng = np.random.default_rng(seed)
    inputs = []
    for detail in interpreter.get_input_details():
        dtype, shape = np.dtype(detail["dtype"]), detail["shape"]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            inputs.append(rng.integers(max(info.min, -128), min(info.max, 127) + 1,
                                       size=shape).astype(dtype))
        else:
            inputs.append(rng.random(shape).astype(dtype))
    return inputs


def format_table(rows):
    """Left-aligned columns, two spaces apart: the first row is the header.

    Example:

    >>> print(tfprune.interpreter.format_table([("model", "µs"), ("a.tflite", "8.1")]))
    model     µs
    a.tflite  8.1
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)
