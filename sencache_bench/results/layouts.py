"""The papers' table layouts: SenCache Table 1 and SemCache Table 1, grouped by model; and the dispatch to the
``matched`` (results/matched.py), ``pairs`` (results/pairs.py) and ``fronts`` (results/fronts.py) layouts.

- ``sencache``: Method, NFE, Cache %, LPIPS, PSNR, SSIM (SenCache Table 1), then Speedup and its bound.
- ``semcache``: Method, FLOPs (P), Speedup, Bound, Latency, VBench, LPIPS, SSIM, PSNR (SemCache Table 1).

Each model's rows start with the uncached row, built from the references the records point at (each
reference once) and the uncached baselines timed beside the runs (their mean latency): its NFE, FLOPs and
latency are those every speedup and cache % is measured against,
so its speedup is 1.00x and its fidelity columns are empty; the ``none`` policy's own records (an
uncached run scored against its reference) are not shown. Then one row per (policy, setting), the
method labelled with the setting's parameters that differ between that policy's rows (the common
ones go in a note).
Bold, within a model (the uncached row never competes): for NFE, FLOPs and VBench, the best value as printed
(ties all bold); for LPIPS, PSNR, SSIM, speedup and latency, only a row that the paired comparison
(results/verdicts.py) separates from every other, with each cell's rank-group letters.

FLOPs are ``pflops_no_attn``: the convention of the papers' counters, which leave the attention
matmuls out (see docs/flops.md); the default layout also has ``pflops`` with attention.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pandas as pd

from ..metrics.vbench import DIMENSIONS
from .cells import Column, fmt_value
from .paper_rows import layout_rows
from .tables import render_cells
from .verdicts import Verdicts, group_lines, judge, method_note

LAYOUTS = ("default", "sencache", "semcache", "matched", "pairs", "fronts", "overhead")


def _vbench_columns(rows: list[dict]) -> list[Column]:
    """One VBench column (the total) when every row with VBench scores has all 16; else one per dimension."""
    dims = sorted({d for r in rows for d in (r.get("vbench_dims") or {})}, key=DIMENSIONS.index)
    if not dims or all(r.get("vbench") is not None for r in rows if r.get("vbench_dims")):
        return [Column("vbench", "VBench", "max")]
    return [Column(f"vbench:{d}", f"VBench {d}", "max") for d in dims]


def layout_columns(layout: str, rows: list[dict]) -> list[Column]:
    head = [Column("model", "Model"), Column("method", "Method")]
    lpips, psnr, ssim = Column("lpips", "LPIPS", "min"), Column("psnr", "PSNR", "max"), Column("ssim", "SSIM", "max")
    speedup, bound = Column("speedup", "Speedup", "max"), Column("speedup_bound", "Bound")
    tail = [Column("note", "Note")] if any(r.get("note") for r in rows) else []
    if layout == "sencache":
        return head + [Column("nfe", "NFE", "min"), Column("cache", "Cache %"), lpips, psnr, ssim, speedup, bound,
                       *tail]
    if layout == "semcache":
        return head + [Column("pflops_no_attn", "FLOPs (P)", "min"), speedup, bound,
                       Column("latency_s", "Latency (s)", "min"), *_vbench_columns(rows), lpips, ssim, psnr, *tail]
    raise ValueError(f"unknown layout {layout!r} (valid: {', '.join(LAYOUTS)})")


def _value(row: dict, key: str):
    if key.startswith("vbench:"):
        return (row.get("vbench_dims") or {}).get(key.split(":", 1)[1])
    return row.get(key)


#: columns whose verdict is the paired comparison (bold only when separated from every other row); latency follows
#: the speedup's verdict (both are the same paired timing)
PAIRED = {"lpips": "lpips", "psnr": "psnr", "ssim": "ssim", "speedup": "speedup", "latency_s": "speedup"}


def best_cells(rows: list[dict], cols: list[Column], verdicts: Verdicts | None = None) -> set[tuple[int, int]]:
    """(row, column) set in bold within each model (the uncached rows do not compete): for the paired columns the
    row separated from every other (``verdicts``), for the others (NFE, FLOPs, VBench) the best value as printed."""
    bold = set()
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[r["model"]].append(i)
    for members in groups.values():
        for j, col in enumerate(cols):
            if col.better is None:
                continue
            if verdicts is not None and col.key in PAIRED:
                bold |= {(i, j) for i in verdicts.best(PAIRED[col.key]) if i in members}
                continue
            cand = [(i, _value(rows[i], col.key)) for i in members if not rows[i]["uncached"]]
            cand = [(i, v) for i, v in cand if v is not None]
            if not cand:
                continue
            best = (min if col.better == "min" else max)(v for _, v in cand)
            shown = fmt_value(col.key, best)
            bold |= {(i, j) for i, v in cand if fmt_value(col.key, v) == shown}
    return bold


def notes(layout: str, rows: list[dict], cols: list[Column], common: list[str] = (), devices: list[str] = ()
          ) -> list[str]:
    out = ["Per model, the first row is the uncached reference; bold: for NFE, FLOPs and VBench the best cached "
           "value; for LPIPS, PSNR, SSIM, speedup and latency a row separated from every other by the paired "
           "comparison below (letters: its rank groups)."]
    if common:
        out.append("Settings common to a policy's rows: " + "; ".join(common) + ".")
    if layout == "sencache":
        out.append("NFE: computed denoiser calls per CFG branch (mean over videos); Cache % = 1 - NFE/NFE(uncached).")
    else:
        out.append("FLOPs (P): PFLOPs per video without the attention matmuls (pflops_no_attn), the papers' "
                   "convention; the default table layout also gives pflops with attention.")
        out.append("Latency in seconds per video" + (f" on {', '.join(devices)}." if devices else "."))
        if any(c.key.startswith("vbench:") for c in cols):
            out.append("VBench: per-dimension scores (the total needs all 16 dimensions).")
        elif not any(r.get("vbench") is not None for r in rows):
            out.append("VBench: not computed (sencache-bench vbench RESULTS_DIR computes it).")
        else:
            out.append("VBench: total score with VBench's normalisation and weights.")
    out.append("Speedup: geometric mean over videos of uncached / cached latency, each video timed beside its own "
               "uncached baselines, with a 95% bootstrap interval; Bound: Amdahl's bound from the baseline's phase "
               "split and the transformer FLOPs.")
    from ..metrics.definitions import footnote  # each printed metric's definition, from the registry

    out.append("Against the uncached reference, per video, then the mean over videos: "
               + footnote([c.key for c in cols]))
    if not any(r.get("lpips") is not None for r in rows if not r["uncached"]):
        out.append("LPIPS: not computed for these runs (LPIPS needs torchvision's AlexNet weights; the records' "
                   "metric_notes say why).")
    return out


TITLES = {"sencache": "SenCache Table 1 layout", "semcache": "SemCache Table 1 layout"}


def _cell(row: dict, key: str, letter: str) -> str:
    value = _value(row, key)
    if key == "speedup" and value is not None and row.get("speedup_lo") is not None:
        text = f"{value:.2f}x [{row['speedup_lo']:.2f}, {row['speedup_hi']:.2f}]"
    elif key == "speedup_bound":
        text = fmt_value("speedup", value)
    else:
        text = fmt_value(key, value)
    return f"{text} {letter}" if letter and text not in ("", "-") else text


#: plain-number fields a paper layout's csv and json carry besides its columns
PLAIN = ("policy", "setting", "videos", "nfe", "cache", "pflops_no_attn", "speedup", "speedup_lo", "speedup_hi",
         "speedup_bound", "latency_s", "lpips", "lpips_lo", "lpips_hi", "psnr", "psnr_lo", "psnr_hi", "ssim", "ssim_lo",
         "ssim_hi", "vbench", "note")


def render_layout(records: list[dict], layout: str, fmt_name: str, detect: dict[str, float] | None = None,
                  intervals: bool = False):
    """A layout of the records as rich, markdown, csv, latex or json (csv and json: plain numbers). ``intervals``:
    the matched layout's every column in rich too (by default a compact table that fits a terminal)."""
    if layout == "matched":
        from .matched import render_matched

        return render_matched(records, fmt_name, detect, intervals)
    if layout == "pairs":
        from .pairs import render_pairs

        return render_pairs(records, fmt_name)
    if layout == "fronts":
        from .fronts import render_fronts

        return render_fronts(records, fmt_name)
    if layout == "overhead":
        from .overhead import render_overhead

        return render_overhead(records, fmt_name)
    common: list[str] = []
    rows, row_records = layout_rows(records, common, with_records=True)
    cols = layout_columns(layout, rows)
    verdicts = judge(rows, row_records, lambda r: (r["model"],), skip=lambda r: r["uncached"])
    bold = best_cells(rows, cols, verdicts)
    if fmt_name in ("json", "csv"):
        plain = [{"model": r["model"], "method": r["method"], **{k: _value(r, k) for k in PLAIN},
                  **{c.header: _value(r, c.key) for c in cols if c.key.startswith("vbench:")},
                  **{f"{m}_group": verdicts.letter(i, m) for m in ("lpips", "psnr", "ssim", "speedup")},
                  "best": [c.header for j, c in enumerate(cols) if (i, j) in bold]} for i, r in enumerate(rows)]
        if fmt_name == "json":
            return json.dumps(plain, indent=1)
        frame = pd.DataFrame(plain)
        frame["best"] = frame["best"].map(";".join)
        return frame.to_csv(index=False, lineterminator="\n")
    cells, breaks, last = [], [], None
    for i, r in enumerate(rows):
        new_model = r["model"] != last
        if new_model:
            breaks.append(i)
        last = r["model"]
        cells.append([(r["model"] if new_model else "") if c.key == "model"
                      else _cell(r, c.key, verdicts.letter(i, c.key) if c.key in PAIRED else "") for c in cols])
    devices = sorted({r["device_name"] for r in records if r.get("device_name")})
    lines = notes(layout, rows, cols, common, devices)
    lines += [method_note([r["videos"] for r in rows if not r["uncached"]]),
              *group_lines(rows, verdicts, lambda r: r["method"], lambda key: key[0], detect)]
    return render_cells([c.header for c in cols], cells, fmt_name, left=2, bold=bold, breaks=tuple(breaks),
                        notes=lines, title=TITLES[layout])
