"""Faults on purpose: a run that dies, or runs out of room, at a named point (for tests).

The reliability tests and `benchmarks/faults.py` need a run to fail at an exact place, the
same place every time. The code marks such places with `point(name)`; the environment
variable `TFPRUNE_FAULT` picks one and says what happens there:

    TFPRUNE_FAULT=kill@record:shrink            SIGKILL when the point is first reached
    TFPRUNE_FAULT=kill@train:prune#5            ... the 5th time it is reached
    TFPRUNE_FAULT=fsize=20000@write:compressed.tflite
                                                from there on no file may grow past 20,000
                                                bytes (RLIMIT_FSIZE, SIGXFSZ ignored): the
                                                writes fail with EFBIG, as on a full disk
    TFPRUNE_FAULT=xfsz=20000@write:baseline.keras
                                                the same limit, SIGXFSZ left deadly: the
                                                process dies in the middle of the write

The points: `train:<stage>` (after each training batch), `write:<file>` (an atomic write
is about to start), `written:<file>` (the temporary file is complete, not yet renamed),
`record:<stage>` (a stage's files are written, its record not yet). Unset, `point` costs
one comparison.
"""

import os
import re
import signal

from tfprune.errors import TfpruneError

ENV = "TFPRUNE_FAULT"
_SPEC = os.environ.get(ENV) or None
_FAULT = None  # parsed on the first point reached
_hits = {}


def point(name):
    """Marks a point where a fault may be injected; does nothing unless `TFPRUNE_FAULT` names it.

    Args:
        name: String, the point, like `"record:shrink"` or `"write:compressed.tflite"`.

    Raises:
        TfpruneError: `TFPRUNE_FAULT` is set but malformed.
    """
    if _SPEC is None:
        return
    global _FAULT
    if _FAULT is None:
        _FAULT = parse(_SPEC)
    action, argument, where, count = _FAULT
    if name != where:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != count:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    # Python ignores SIGXFSZ from the start; "xfsz" makes it deadly again, as in C.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN if action == "fsize" else signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_FSIZE,
                       (argument, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def parse(spec):
    """`(action, argument, point, count)` from a `TFPRUNE_FAULT` value.

    Example:

    >>> from tfprune import faults
    >>> faults.parse("fsize=20000@write:compressed.tflite#2")
    ('fsize', 20000, 'write:compressed.tflite', 2)
    """
    match = re.fullmatch(r"(kill|fsize=(\d+)|xfsz=(\d+))@([^#]+)(?:#(\d+))?", spec.strip())
    if not match:
        raise TfpruneError(f"Expected {ENV} like 'kill@record:shrink', 'kill@train:prune#5' or "
                           f"'fsize=20000@write:compressed.tflite'. Received: {ENV}={spec!r}")
    kind, fsize, xfsz, where, count = match.groups()
    action = kind.split("=")[0]
    return action, int(fsize or xfsz or 0), where, int(count or 1)
