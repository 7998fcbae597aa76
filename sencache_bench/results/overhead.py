"""The ``overhead`` table layout: how much of its own Amdahl bound each policy reaches, and where the rest goes.

A policy's bound (:func:`sencache_bench.results.speedup.amdahl_bound`) is the speedup it would reach if the
denoising phase shrank exactly with the transformer FLOPs it computes. Per video, the time beyond that ideal is

    lost = T_policy - T_baseline / bound

and the record's call trace (:mod:`sencache_bench.measure.calls`) says how much of it the policy spent deciding
(``decide_s``: ``PolicyHook.decide``) and in its own hooks besides (``hook_s``: TMM's gathers and scatters,
SemCache's layer sums and norms, ``after_compute``), summed over the video's calls. ``Rest`` is the lost time
neither explains (a reused call's fixed cost, the framework's hooks, timing noise; negative when the
policy beat the bound within the noise). Policies decided outside the harness (diffusers' and cache-dit's caches)
have no ``decide_s``: their columns are empty and all their lost time is ``Rest``. Means over the row's steady
videos; the trace is that of the record's last timed generation (one per item at ``timing.repeats: 1``).
"""

from __future__ import annotations

import json
from statistics import fmean

from .cells import Column, fmt_value
from .paper_rows import layout_rows
from .speedup import amdahl_bound
from .tables import render_cells

COLUMNS = [Column("model", "Model"), Column("method", "Method"), Column("videos", "Videos"),
           Column("speedup", "Speedup"), Column("speedup_bound", "Bound"), Column("reached", "Reached"),
           Column("lost_ms", "Lost"), Column("decide_ms", "Decide"), Column("hook_ms", "Hooks"),
           Column("rest_ms", "Rest"), Column("explained", "Explained")]
LABEL = 24  #: longest method label printed in the table (a longer one: the policy and a footnote number)


def video_overhead(record: dict) -> dict | None:
    """Seconds per video: lost against the bound, deciding, in the policy's hooks (None: untimed or unsteady)."""
    timing = record.get("timing") or {}
    bound = amdahl_bound(record)
    if not timing.get("speedup") or not timing.get("steady", True) or not bound:
        return None
    trace = record.get("trace") or []
    decided = [c for c in trace if "decide_s" in c]
    lost = record["latency"]["total_s"] - record["baseline"]["latency_s"] / bound
    decide = sum(c["decide_s"] for c in decided) if decided else None
    hook = sum(c.get("hook_s", 0.0) for c in decided) if decided else None
    return {"lost_s": lost, "decide_s": decide, "hook_s": hook}


def overhead_row(records: list[dict], speedup: float | None, bound: float | None) -> dict:
    """The overhead columns of one row from its records (``speedup`` and ``bound``: the row's own)."""
    videos = [v for v in (video_overhead(r) for r in records) if v is not None]
    mean = lambda key: (fmean(v[key] for v in videos)  # noqa: E731 - mean over videos that have the value
                        if videos and all(v[key] is not None for v in videos) else None)
    lost, decide, hook = mean("lost_s"), mean("decide_s"), mean("hook_s")
    spent = decide + hook if decide is not None else None
    return {"reached": speedup / bound if speedup and bound else None,
            "lost_ms": None if lost is None else 1e3 * lost, "decide_ms": None if decide is None else 1e3 * decide,
            "hook_ms": None if hook is None else 1e3 * hook,
            "rest_ms": None if lost is None or spent is None else 1e3 * (lost - spent),
            "explained": spent / lost if spent is not None and lost and lost > 0 else None}


def _fmt(key: str, value) -> str:
    if value is None:
        return ""
    if key in ("reached", "explained"):
        return f"{100 * value:.0f}%"
    if key.endswith("_ms"):
        return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"
    if key == "videos":
        return str(value)
    if key == "speedup_bound":
        return fmt_value("speedup", value)
    return fmt_value(key, value)


NOTES = ["Reached: speedup / Amdahl bound (the bound: the denoising phase shrunk exactly with the transformer "
         "FLOPs). In ms per video, mean over steady videos: Lost = policy latency - baseline / bound; Decide = time in "
         "the policy's decide, Hooks = in its own hooks besides, summed over the video's calls; Rest = Lost - "
         "Decide - Hooks; Explained = (Decide + Hooks) / Lost. Empty: the policy decides outside the harness "
         "(diffusers', cache-dit's caches)."]


def render_overhead(records: list[dict], fmt_name: str):
    """The layout as rich, markdown, csv, latex or json (csv and json: plain numbers)."""
    rows, row_records = layout_rows(records, None, with_records=True)
    out, settings = [], []
    for row, recs in zip(rows, row_records):
        if row["uncached"]:
            continue
        method = row["method"]
        if len(method) > LABEL:  # the full setting goes to a footnote: the table stays within 120 columns
            settings.append(f"[{len(settings) + 1}] {row['policy']}: {row['setting']}")
            method = f"{row['policy']} [{len(settings)}]"
        out.append({"model": row["model"], "method": method, "policy": row["policy"],
                    "setting": row["setting"], "videos": row["videos"], "speedup": row.get("speedup"),
                    "speedup_bound": row.get("speedup_bound"),
                    **overhead_row(recs, row.get("speedup"), row.get("speedup_bound"))})
    if fmt_name in ("json", "csv"):
        if fmt_name == "json":
            return json.dumps(out, indent=1)
        import pandas as pd

        return pd.DataFrame(out).to_csv(index=False, lineterminator="\n")
    cells, breaks, last = [], [], None
    for i, r in enumerate(out):
        if r["model"] != last:
            breaks.append(i)
        cells.append([(r["model"] if r["model"] != last else "") if c.key == "model" else _fmt(c.key, r.get(c.key))
                      for c in COLUMNS])
        last = r["model"]
    return render_cells([c.header for c in COLUMNS], cells, fmt_name, left=2, breaks=tuple(breaks),
                        notes=NOTES + settings, title="Decision overhead")
