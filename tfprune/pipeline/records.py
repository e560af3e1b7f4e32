"""The run's records (`stages.json`): each stage's hash, chained from the stage before;
whether a recorded stage is intact (its hash and its outputs' SHA-256 match), and the
records read back. What `--resume` decides from; the runner writes them."""

import hashlib
import json
from pathlib import Path

import numpy as np

RECORD = "stages.json"
# Starts the hash chain; bump it when the shape of a recorded result changes, so that
# records written by an older tfprune are not resumed.
RECORD_FORMAT = "tfprune-stages-2"


def chain(stages, config):
    """Each stage's hash, chained from `RECORD_FORMAT`."""
    digests, previous = [], RECORD_FORMAT
    for stage in stages:
        previous = stage_hash(stage, config, previous)
        digests.append(previous)
    return digests


def stage_hash(stage, config, previous):
    """The stage's hash: its settings chained with `previous`, the hash of the stage before."""
    text = json.dumps([previous, stage.name, stage.settings(config)], sort_keys=True,
                      default=jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def intact(folder, record, digest):
    """Whether `record` carries `digest` and a result, and every output it lists still has
    its recorded SHA-256 in `folder`: the stage can be skipped on a resume."""
    if not record or record.get("hash") != digest or "result" not in record:
        return False
    for name, sha in record.get("outputs", {}).items():
        path = Path(folder) / name
        if not path.is_file() or file_sha256(path) != sha:
            return False
    return True


def read_records(folder):
    """The stage records in `folder/stages.json`, or `{}` when missing or unreadable."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return {}
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # an unreadable record means nothing can be trusted: run everything
    return records if isinstance(records, dict) else {}


def file_sha256(path):
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def jsonable(value):
    """`value` as JSON can hold it: NumPy scalars and arrays, tuples, paths made plain."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
