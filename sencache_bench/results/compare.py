"""The CI regression gate: compare a results folder with a committed baseline.

Per (model, policy, setting) the gate checks that a policy did not get worse beyond tolerance:
more NFE at equal settings, lower PSNR or SSIM, higher LPIPS, more FLOPs, or a gated value the baseline
has and the results no longer do. Latency is reported but never gated (machines are noisy).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import BenchError
from .store import write_json

BASELINE_VERSION = 1
# metric -> (direction in which it gets worse, default tolerance, relative?)
GATED = {
    "nfe": ("up", 0.0, False),
    "pflops": ("up", 0.01, True),
    "psnr": ("down", 0.5, False),
    "ssim": ("down", 0.005, False),
    "lpips": ("up", 0.005, False),
}
REPORTED = ("latency_s", "speedup", "videos")


@dataclass
class Change:
    key: str
    metric: str
    baseline: float | None
    current: float | None
    worse: bool
    note: str = ""


def row_key(row: dict) -> str:
    return f"{row['model']} | {row['policy']} | {row['setting']}"


def make_baseline(rows: list[dict]) -> dict:
    entries = {row_key(r): {m: r.get(m) for m in (*GATED, *REPORTED)} for r in rows}
    return {"schema_version": BASELINE_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "entries": entries}


def parse_tolerances(items: list[str]) -> dict[str, float]:
    tol = {m: spec[1] for m, spec in GATED.items()}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in GATED:
            raise BenchError(f"--tolerance {item!r}: expected METRIC=VALUE with METRIC one of {', '.join(GATED)}")
        try:
            tol[name] = float(value)
        except ValueError:
            raise BenchError(f"--tolerance {item!r}: {value!r} is not a number") from None
    return tol


def load_baseline(path: Path) -> dict:
    if not path.is_file():
        raise BenchError(f"baseline {path} not found: create it with `sencache-bench compare RESULTS {path} --update`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BenchError(f"baseline {path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    if data.get("schema_version") != BASELINE_VERSION or not isinstance(data.get("entries"), dict):
        raise BenchError(f"baseline {path}: schema version {data.get('schema_version')} "
                         f"(expected {BASELINE_VERSION}); regenerate it with --update")
    return data


def compare(rows: list[dict], baseline: dict, tolerances: dict[str, float]) -> list[Change]:
    current = {row_key(r): r for r in rows}
    changes = []
    for key, base in baseline["entries"].items():
        row = current.get(key)
        if row is None:
            changes.append(Change(key, "-", None, None, True, "missing from the results"))
            continue
        for metric, (direction, _, relative) in GATED.items():
            b, c = base.get(metric), row.get(metric)
            if b is None and c is None:
                continue
            if c is None:  # measured in the baseline, gone now (e.g. LPIPS turning None): not a pass
                changes.append(Change(key, metric, b, c, True, "no longer measured"))
                continue
            if b is None:
                changes.append(Change(key, metric, b, c, False, "not in the baseline"))
                continue
            delta = c - b if direction == "up" else b - c
            allowed = tolerances[metric] * abs(b) if relative else tolerances[metric]
            if delta != 0:
                changes.append(Change(key, metric, b, c, delta > allowed + 1e-12))
    for key in current.keys() - baseline["entries"].keys():
        changes.append(Change(key, "-", None, None, False, "new (not in the baseline)"))
    return changes


def update_baseline(path: Path, rows: list[dict]) -> None:
    write_json(path, make_baseline(rows))
