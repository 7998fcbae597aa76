"""Result files: atomic writes (temp name + fsync + rename) and record reading.

A run killed at any moment leaves no file that looks finished but is not: readers only ever see a
complete file or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 2  # 2: paired timing (timing.policy_s / baseline_s); 1 timed against the reference


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False, default=str) + "\n").encode())


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def write_frames(path: Path, frames: np.ndarray) -> None:
    """Lossless uint8 frames (F, H, W, 3): references are compared from these, not from the mp4."""
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, frames=frames)
    atomic_write_bytes(path, buf.getvalue())


def read_frames(path: Path) -> np.ndarray:
    with np.load(path) as data:
        return data["frames"]


def load_records(results_dir: Path) -> tuple[list[dict], list[str]]:
    """Every run record under ``results_dir`` (recursively), and a note per unreadable one."""
    records, problems = [], []
    for path in sorted(Path(results_dir).rglob("*.json")):
        if "references" in path.parts or path.name.startswith("."):
            continue
        try:
            rec = read_json(path)
        except (OSError, json.JSONDecodeError) as err:
            problems.append(f"{path}: unreadable ({err.__class__.__name__}), skipped")
            continue
        if not isinstance(rec, dict) or rec.get("kind") != "run":
            continue
        if rec.get("schema_version") != SCHEMA_VERSION:
            problems.append(f"{path}: schema version {rec.get('schema_version')} (expected {SCHEMA_VERSION}), skipped")
            continue
        rec["_path"] = str(path)
        records.append(rec)
    return records, problems
