"""Result files: atomic writes (temp name + fsync + rename) and validated reads.

A run killed at any moment leaves no file that looks finished but is not: readers only ever see a
complete file or none. Everything read back is checked before use (docs/reliability.md): a
reference's JSON records the sha256 and shape of its frames file and is trusted only when both
match; a run record counts as done only when it parses as a complete record of this schema. A
full disk or an unwritable folder is one BenchError line, with the temporary file removed.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import BenchError

SCHEMA_VERSION = 2  # 2: paired timing (timing.policy_s / baseline_s); 1 timed against the reference
# What aggregation reads from every run record: a record lacking one of these is not a finished record.
RECORD_KEYS = ("kind", "schema_version", "model", "policy", "setting", "nfe", "flops", "latency", "metrics",
               "reference")


def _no_room(path: Path, err: OSError) -> BenchError:
    """ENOSPC / EACCES / EROFS ... as one line naming the file and what to do."""
    reason = os.strerror(err.errno) if err.errno else str(err)
    return BenchError(f"cannot write {path}: {reason}; free space or choose a writable output.dir, then rerun "
                      f"(finished records are kept)")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either the old file, absent, or complete."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None:
            raise _no_room(path, err) from None
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


def write_frames(path: Path, frames: np.ndarray) -> dict:
    """Lossless uint8 frames (F, H, W, 3): references are compared from these, not from the mp4.

    Returns what the reference's JSON records to check the file later: its sha256 and the shape.
    """
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, frames=frames)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "shape": [int(n) for n in frames.shape]}


def read_frames(path: Path) -> np.ndarray:
    with np.load(path) as data:
        return data["frames"]


def _reference_problem(meta_path: Path, frames_path: Path) -> tuple[str | None, tuple | None]:
    """(what is wrong, None) or (None, (meta, frames)) for one stored reference."""
    try:
        meta = json.loads(meta_path.read_bytes())
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError and UnicodeDecodeError
        return f"{meta_path.name} is unreadable ({err.__class__.__name__})", None
    if not isinstance(meta, dict) or meta.get("kind") != "reference":
        return f"{meta_path.name} is not a reference record", None
    if meta.get("schema_version") != SCHEMA_VERSION:
        return f"{meta_path.name} has schema version {meta.get('schema_version')} (expected {SCHEMA_VERSION})", None
    if not frames_path.is_file():
        return f"{frames_path.name} is missing", None
    want = meta.get("frames_file")
    if isinstance(want, dict):
        try:
            digest = sha256_file(frames_path)
        except OSError as err:
            return f"{frames_path.name} is unreadable ({err.__class__.__name__})", None
        if digest != want.get("sha256"):
            return f"{frames_path.name} does not match the sha256 its JSON records", None
    try:
        frames = read_frames(frames_path)
    except Exception as err:  # noqa: BLE001 - zipfile, pickle and numpy raise many kinds on a damaged file
        return f"{frames_path.name} is unreadable ({err.__class__.__name__})", None
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        return f"{frames_path.name} holds {frames.dtype} {tuple(frames.shape)}, not uint8 (F, H, W, 3) frames", None
    if isinstance(want, dict) and list(frames.shape) != list(want.get("shape", [])):
        return f"{frames_path.name} has shape {tuple(frames.shape)}, its JSON records {tuple(want.get('shape', []))}", None
    for key in ("key", "nfe", "nfe_per_branch", "flops", "flops_parts", "latency", "peak_memory_mb"):
        if key not in meta:
            return f"{meta_path.name} lacks {key!r}", None
    return None, (meta, frames)


def load_reference(meta_path: Path, frames_path: Path, log=None) -> tuple[dict, np.ndarray] | None:
    """A stored reference ``(meta, frames)`` when it checks out; None when it must be (re)made.

    Absent: None silently. Present but damaged (unreadable JSON or frames, frames whose sha256 or
    shape differ from what the JSON records): one warning line through ``log``, the files are removed
    and None is returned, so the caller remakes it and nothing is ever scored against it. A reference
    made before the digest was recorded is accepted when its frames load as uint8 (F, H, W, 3).
    """
    meta_path, frames_path = Path(meta_path), Path(frames_path)
    if not meta_path.exists() and not frames_path.exists():
        return None
    if not meta_path.exists():  # frames without their JSON: a run stopped between the two writes
        return None
    problem, found = _reference_problem(meta_path, frames_path)
    if problem is None:
        return found
    if log is not None:
        log(f"warning: reference {meta_path.stem} is damaged ({problem}): remaking it")
    for path in (meta_path, frames_path):
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
    return None


def record_problem(rec) -> str | None:
    """Why a parsed run record cannot be used (None: it is a complete record of this schema)."""
    if not isinstance(rec, dict) or rec.get("kind") != "run":
        return "not a run record"
    if rec.get("schema_version") != SCHEMA_VERSION:
        return f"schema version {rec.get('schema_version')} (expected {SCHEMA_VERSION})"
    missing = [k for k in RECORD_KEYS if k not in rec]
    if missing:
        return f"incomplete (no {', '.join(missing)})"
    return None


def record_done(path: Path) -> bool:
    """A finished run record sits at ``path`` (an unreadable or incomplete one is redone)."""
    try:
        rec = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return False
    return record_problem(rec) is None


@contextmanager
def _no_cyclic_gc():
    """Parsed JSON holds no reference cycles, but tens of thousands of records kept alive make Python's cyclic
    collector traverse every object already loaded, again and again as allocation goes on (loading 20,000
    records took 2.4x the time of parsing them, and every later step paid full collections over them too).
    So: collect what is garbage now, pause the collector while loading, then move everything alive into the
    permanent generation (``gc.freeze``), which later collections skip; objects are still freed by reference
    counting as ever (only a cycle through a frozen object would wait for ``gc.unfreeze``)."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def load_records(results_dir: Path) -> tuple[list[dict], list[str]]:
    """Every run record under ``results_dir`` (recursively), and a note per unreadable one."""
    with _no_cyclic_gc():
        return _load_records(results_dir)


def _load_records(results_dir: Path) -> tuple[list[dict], list[str]]:
    records, problems = [], []
    for path in sorted(Path(results_dir).rglob("*.json")):
        if "references" in path.parts or path.name.startswith("."):
            continue
        try:
            rec = json.loads(path.read_bytes())
        except (OSError, ValueError) as err:  # ValueError: JSONDecodeError and UnicodeDecodeError
            problems.append(f"{path}: unreadable ({err.__class__.__name__}), skipped; "
                            f"rerun its spec to redo it")
            continue
        if not isinstance(rec, dict) or rec.get("kind") != "run":
            continue
        problem = record_problem(rec)
        if problem is not None:
            problems.append(f"{path}: {problem}, skipped; rerun its spec to redo it")
            continue
        rec["_path"] = str(path)
        records.append(rec)
    return records, problems
