"""The papers' table layouts: SenCache Table 1 and SemCache Table 1, grouped by model, best in bold.

- ``sencache``: Method, NFE, Cache %, LPIPS, PSNR, SSIM (SenCache Table 1).
- ``semcache``: Method, FLOPs (P), Speedup, Latency, VBench, LPIPS, SSIM, PSNR (SemCache Table 1).

Each model's rows start with the uncached row, built from the references the records point at (each
reference once) and the uncached baselines timed beside the runs (their mean latency): its NFE, FLOPs and
latency are those every speedup and cache % is measured against,
so its speedup is 1.00x and its fidelity columns are empty; the ``none`` policy's own records (an
uncached run scored against its reference) are not shown. Then one row per (policy, setting), the
method labelled with the setting's parameters that differ between that policy's rows (the common
ones go in a note).
In markdown and LaTeX (and rich) the best value of each column within a model is bold: the lowest
NFE, FLOPs, latency and LPIPS, the highest PSNR, SSIM, speedup and VBench; the uncached row never
competes. Ties (equal as printed) are all bold.

FLOPs are ``pflops_no_attn``: the convention of the papers' counters, which leave the attention
matmuls out (see docs/flops.md); the default layout also has ``pflops`` with attention.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from statistics import fmean

from ..metrics.vbench import DIMENSIONS, total_score
from .tables import aggregate, render_cells

LAYOUTS = ("default", "sencache", "semcache")
UNCACHED = "Uncached"


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    better: str | None = None  # "min" or "max": which value is bold


def _fmt(key: str, value) -> str:
    if value is None:
        return "-" if key in ("lpips", "psnr", "ssim") else ""
    if isinstance(value, str):
        return value
    if key == "nfe":
        return f"{value:.0f}" if abs(value - round(value)) < 0.05 else f"{value:.1f}"
    if key == "cache":
        return f"{100 * value:.1f}%"
    if key == "pflops_no_attn":
        return f"{value:.4g}" if value >= 1e-3 else f"{value:.3g}"
    if key == "speedup":
        return f"{value:.2f}x"
    if key == "latency_s":
        return f"{value:.0f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"
    if key == "vbench" or key.startswith("vbench:"):
        return f"{100 * value:.2f}%"
    if key == "psnr":
        return f"{value:.2f}"
    return f"{value:.4f}"


def _split_setting(setting: str) -> list[tuple[str, str]]:
    """``a=1,b=[2,3]`` -> [(a, 1), (b, [2,3])]: commas inside brackets do not split."""
    parts, depth, current = [], 0, ""
    for ch in setting:
        depth += ch in "[{(" and 1 or (-1 if ch in "]})" else 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [(k, v if sep else None) for k, sep, v in (part.partition("=") for part in parts if part)]


def _kv(key: str, value: str | None) -> str:
    return key if value is None else f"{key}={value}"


def _methods(rows: list[dict]) -> tuple[list[str], list[str]]:
    """A label per row, with only the parameters that vary within its policy; and the common ones per policy."""
    by_policy: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_policy[r["policy"]].append(r)
    varying, common = {}, []
    for policy, members in by_policy.items():
        settings = [dict(_split_setting(r["setting"])) for r in members]
        keys = list(dict.fromkeys(k for st in settings for k in st))
        same = [k for k in keys if len(members) > 1 and all(k in st for st in settings)
                and len({st[k] for st in settings}) == 1]
        varying[policy] = [k for k in keys if k not in same]
        if same:
            common.append(f"{policy}: " + ", ".join(_kv(k, settings[0][k]) for k in same))
    labels = []
    for r in rows:
        st = dict(_split_setting(r["setting"]))
        shown = [_kv(k, st[k]) for k in varying[r["policy"]] if k in st]
        labels.append(r["policy"] if r["setting"] in ("default", "") or not shown
                      else f"{r['policy']} ({', '.join(shown)})")
    return labels, common


def _uncached_from_references(recs: list[dict]) -> dict:
    """The uncached row of a model with no ``none`` records: each distinct reference counted once."""
    refs = {}
    for r in recs:
        ref = r["reference"]
        refs.setdefault(ref.get("key") or id(ref), ref)
    refs = list(refs.values())
    mean = lambda xs: fmean(xs) if xs else None  # noqa: E731
    per_dim: dict[str, list[float]] = defaultdict(list)
    for ref in refs:
        for key, value in (ref.get("metrics") or {}).items():
            if key.startswith("vbench_") and value is not None:
                per_dim[key[len("vbench_"):]].append(value)
    dims = {d: fmean(v) for d, v in per_dim.items()}
    total = total_score(dims)
    return {"videos": len(refs), "nfe": mean([ref["nfe"] for ref in refs]), "cache": 0.0,
            "pflops_no_attn": mean([ref["flops"]["total_no_attn"] / 1e15 for ref in refs
                                    if ref["flops"].get("total_no_attn") is not None]),
            "speedup": 1.0, "latency_s": mean([r["baseline"]["latency_s"] for r in recs if r.get("baseline")]),
            "lpips": None, "psnr": None, "ssim": None, "vbench": total["total"] if total else None,
            "vbench_dims": dims}


def layout_rows(records: list[dict], common: list[str] | None = None) -> list[dict]:
    """Rows of a paper layout: per model, the uncached row first (``uncached``: True), then the policies.

    ``common`` (if given) receives one "model: policy: k=v, ..." line per policy with parameters shared
    by all its rows (left out of the labels)."""
    by_model: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        by_model[rec["model"]].append(rec)
    out = []
    for model in sorted(by_model):
        recs = by_model[model]
        out.append({**_uncached_from_references(recs), "model": model, "policy": "none", "setting": "reference",
                    "method": UNCACHED, "uncached": True})
        rows = [r for r in aggregate(recs) if r["policy"] != "none"]
        labels, shared = _methods(rows)
        if common is not None:
            common += [f"{model}: {line}" for line in shared]
        for r, label in zip(rows, labels):
            cache = 1 - r["nfe"] / r["nfe_ref"] if r["nfe"] is not None and r["nfe_ref"] else None
            out.append({**r, "method": label, "cache": cache, "uncached": False})
    return out


def _vbench_columns(rows: list[dict]) -> list[Column]:
    """One VBench column (the total) when every row with VBench scores has all 16; else one per dimension."""
    dims = sorted({d for r in rows for d in (r.get("vbench_dims") or {})}, key=DIMENSIONS.index)
    if not dims or all(r.get("vbench") is not None for r in rows if r.get("vbench_dims")):
        return [Column("vbench", "VBench", "max")]
    return [Column(f"vbench:{d}", f"VBench {d}", "max") for d in dims]


def layout_columns(layout: str, rows: list[dict]) -> list[Column]:
    head = [Column("model", "Model"), Column("method", "Method")]
    lpips, psnr, ssim = Column("lpips", "LPIPS", "min"), Column("psnr", "PSNR", "max"), Column("ssim", "SSIM", "max")
    if layout == "sencache":
        return head + [Column("nfe", "NFE", "min"), Column("cache", "Cache %"), lpips, psnr, ssim]
    if layout == "semcache":
        return head + [Column("pflops_no_attn", "FLOPs (P)", "min"), Column("speedup", "Speedup", "max"),
                       Column("latency_s", "Latency (s)", "min"), *_vbench_columns(rows), lpips, ssim, psnr]
    raise ValueError(f"unknown layout {layout!r} (valid: {', '.join(LAYOUTS)})")


def _value(row: dict, key: str):
    if key.startswith("vbench:"):
        return (row.get("vbench_dims") or {}).get(key.split(":", 1)[1])
    return row.get(key)


def best_cells(rows: list[dict], cols: list[Column]) -> set[tuple[int, int]]:
    """(row, column) of the best value per column within each model; the uncached rows do not compete."""
    bold = set()
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[r["model"]].append(i)
    for members in groups.values():
        for j, col in enumerate(cols):
            if col.better is None:
                continue
            cand = [(i, _value(rows[i], col.key)) for i in members if not rows[i]["uncached"]]
            cand = [(i, v) for i, v in cand if v is not None]
            if not cand:
                continue
            best = (min if col.better == "min" else max)(v for _, v in cand)
            shown = _fmt(col.key, best)
            bold |= {(i, j) for i, v in cand if _fmt(col.key, v) == shown}
    return bold


def notes(layout: str, rows: list[dict], cols: list[Column], common: list[str] = (), devices: list[str] = ()
          ) -> list[str]:
    out = ["Per model, the first row is the uncached reference; bold: the best cached method per column "
           "(lowest NFE/FLOPs/latency/LPIPS, highest PSNR/SSIM/speedup/VBench)."]
    if common:
        out.append("Settings common to a policy's rows: " + "; ".join(common) + ".")
    if layout == "sencache":
        out.append("NFE: computed denoiser calls per CFG branch (mean over videos); Cache % = 1 - NFE/NFE(uncached).")
    else:
        out.append("FLOPs (P): PFLOPs per video without the attention matmuls (pflops_no_attn), the papers' "
                   "convention; the default table layout also gives pflops with attention.")
        out.append("Speedup: geometric mean over videos of uncached / cached latency, each video timed beside its "
                   "own uncached baselines; latency in seconds per video"
                   + (f" on {', '.join(devices)}." if devices else "."))
        if any(c.key.startswith("vbench:") for c in cols):
            out.append("VBench: per-dimension scores (the total needs all 16 dimensions).")
        elif not any(r.get("vbench") is not None for r in rows):
            out.append("VBench: not computed (sencache-bench vbench RESULTS_DIR computes it).")
        else:
            out.append("VBench: total score with VBench's normalisation and weights.")
    out.append("LPIPS (AlexNet), PSNR, SSIM against the uncached reference: per video the mean over frames, "
               "then the mean over videos.")
    if not any(r.get("lpips") is not None for r in rows if not r["uncached"]):
        out.append("LPIPS: not computed for these runs (LPIPS needs torchvision's AlexNet weights; the records' "
                   "metric_notes say why).")
    return out


TITLES = {"sencache": "SenCache Table 1 layout", "semcache": "SemCache Table 1 layout"}


def render_layout(records: list[dict], layout: str, fmt_name: str):
    """A paper layout of the records as rich, markdown, csv, latex or json."""
    common: list[str] = []
    rows = layout_rows(records, common)
    cols = layout_columns(layout, rows)
    bold = best_cells(rows, cols)
    if fmt_name == "json":
        return json.dumps([{**{c.header: _value(r, c.key) for c in cols},
                            "best": [c.header for j, c in enumerate(cols) if (i, j) in bold]}
                           for i, r in enumerate(rows)], indent=1)
    cells, breaks, last = [], [], None
    for i, r in enumerate(rows):
        new_model = r["model"] != last
        if new_model:
            breaks.append(i)
        last = r["model"]
        cells.append([(r["model"] if new_model or fmt_name == "csv" else "") if c.key == "model"
                      else _fmt(c.key, _value(r, c.key)) for c in cols])
    devices = sorted({r["device_name"] for r in records if r.get("device_name")})
    return render_cells([c.header for c in cols], cells, fmt_name, left=2, bold=bold, breaks=tuple(breaks),
                        notes=notes(layout, rows, cols, common, devices) if fmt_name != "csv" else (),
                        title=TITLES[layout])
