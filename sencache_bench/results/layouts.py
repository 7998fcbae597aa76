"""The papers' table layouts: SenCache Table 1 and SemCache Table 1, grouped by model, best in bold.

- ``sencache``: Method, NFE, Cache %, LPIPS, PSNR, SSIM (SenCache Table 1).
- ``semcache``: Method, FLOPs (P), Speedup, Latency, VBench, LPIPS, SSIM, PSNR (SemCache Table 1).
- ``matched``: the records of ``sencache-bench match``, per model and target budget one row per policy, the
  fidelity columns with 95% bootstrap intervals; bold only where the interval settles it (below).

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

LAYOUTS = ("default", "sencache", "semcache", "matched")
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
    from ..metrics.definitions import footnote  # each printed metric's definition, from the registry

    out.append("Against the uncached reference, per video, then the mean over videos: "
               + footnote([c.key for c in cols]))
    if not any(r.get("lpips") is not None for r in rows if not r["uncached"]):
        out.append("LPIPS: not computed for these runs (LPIPS needs torchvision's AlexNet weights; the records' "
                   "metric_notes say why).")
    return out


TITLES = {"sencache": "SenCache Table 1 layout", "semcache": "SemCache Table 1 layout"}


def render_layout(records: list[dict], layout: str, fmt_name: str):
    """A paper layout of the records as rich, markdown, csv, latex or json."""
    if layout == "matched":
        return render_matched(records, fmt_name)
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


# -- matched: equal-budget comparison (``sencache-bench match``) ---------------------------------------
MATCHED_COLUMNS = [Column("model", "Model"), Column("target", "Target NFE"), Column("method", "Method"),
                   Column("knob", "Knob"), Column("tuned_nfe", "Tuned NFE"), Column("nfe", "NFE"),
                   Column("pflops", "PFLOPs"), Column("pflops_no_attn", "PFLOPs (no attn)"),
                   Column("speedup", "Speedup"), Column("lpips", "LPIPS [95% CI]", "min"),
                   Column("psnr", "PSNR [95% CI]", "max"), Column("ssim", "SSIM [95% CI]", "max"),
                   Column("videos", "Videos")]


def _targets(rec: dict) -> list[dict]:
    """The budgets a matched record serves: its own and any other target that picked the same value."""
    m = rec.get("match")
    return [m] + list(m.get("also", [])) if m else []


def matched_rows(records: list[dict]) -> list[dict]:
    """Per (model, target) one row per (policy, setting) of the matched records, sorted by model, target, policy."""
    from .tables import model_labels

    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec, model in zip(records, model_labels(records)):
        for t in _targets(rec):
            groups[(model, t.get("by", "nfe"), t["target_nfe"], t.get("target_fraction"))].append(rec)
    rows = []
    for (model, by, target, fraction), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2])):
        for r in aggregate(recs):
            mine = [x for x in recs if x["policy"] == r["policy"] and x["setting"] == r["setting"]]
            m = mine[0]["match"]
            own = next((t for t in _targets(mine[0]) if t["target_nfe"] == target and t.get("by", "nfe") == by), m)
            rows.append({**r, "model": model, "by": by, "target_nfe": target, "target_fraction": fraction,
                         "knob": m["knob"], "value": m["value"], "tuned_nfe": own["tuned_nfe"],
                         "monotone": m.get("monotone", True), "method": r["policy"]})
    _label_by_other_fields(rows)
    return rows


def _label_by_other_fields(rows: list[dict]) -> None:
    """A policy matched with different other fields (e.g. max_reuse 2 at one budget, 3 at another) shows them."""
    others = {}
    for r in rows:
        others[id(r)] = {k: v for k, v in _split_setting(r["setting"]) if k != r["knob"]}
    for policy in {r["policy"] for r in rows}:
        mine = [r for r in rows if r["policy"] == policy]
        keys = {k for r in mine for k in others[id(r)]}
        varying = sorted(k for k in keys if len({others[id(r)].get(k) for r in mine}) > 1)
        for r in mine:
            shown = [_kv(k, others[id(r)].get(k)) for k in varying if k in others[id(r)]]
            if shown:
                r["method"] = f"{policy} ({', '.join(shown)})"


def _interval_text(row: dict, key: str) -> str:
    mean, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if mean is None:
        return "-"
    if lo is None or hi is None:
        return _fmt(key, mean)
    return f"{_fmt(key, mean)} [{_fmt(key, lo)}, {_fmt(key, hi)}]"


def matched_verdicts(rows: list[dict]) -> tuple[set[tuple[int, str]], set[tuple[int, str]], list[str]]:
    """(bold cells, tie cells, one line per group and metric): per (model, target) and metric, the best mean is
    bold when its interval does not overlap the runner-up's; otherwise the best and every row whose interval
    overlaps the best's are a tie."""
    from .intervals import overlap

    bold, tie, lines = set(), set(), []
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[(r["model"], r["by"], r["target_nfe"])].append(i)
    for (model, by, target), members in groups.items():
        verdicts = []
        for col in (c for c in MATCHED_COLUMNS if c.better):
            cand = [i for i in members if rows[i].get(col.key) is not None]
            if not cand:
                continue
            cand.sort(key=lambda i: rows[i][col.key], reverse=col.better == "max")
            best = cand[0]
            span = lambda i: (rows[i].get(f"{col.key}_lo"), rows[i].get(f"{col.key}_hi"))  # noqa: E731
            name = col.header.split(" ")[0]
            if len(cand) == 1 or not overlap(span(best), span(cand[1])):
                bold.add((best, col.key))
                runner_up = f" (clear of {rows[cand[1]]['policy']})" if len(cand) > 1 else ""
                verdicts.append(f"{name} best {rows[best]['policy']}{runner_up}")
            else:
                tied = [i for i in cand if overlap(span(best), span(i))]
                tie |= {(i, col.key) for i in tied}
                verdicts.append(f"{name} tie {' / '.join(rows[i]['policy'] for i in tied)}")
        unit = "NFE" if by == "nfe" else "FLOPs-equivalent steps"
        lines.append(f"{model}, target {target:.3g} {unit}: " + "; ".join(verdicts) + ".")
    return bold, tie, lines


def _matched_cell(row: dict, key: str) -> str:
    if key == "target":
        frac = row.get("target_fraction")
        text = f"{row['target_nfe']:.3g}" + (f" ({frac:g})" if frac is not None else "")
        return text + (" FLOPs" if row["by"] == "flops" else "")
    if key == "knob":
        return f"{row['knob']}={row['value']}"
    if key == "tuned_nfe":
        return f"{row['tuned_nfe']:.2f}" + ("" if row["monotone"] else " (not monotone)")
    if key == "nfe":
        return f"{row['nfe']:.2f}" if row.get("nfe") is not None else ""
    if key == "pflops":
        return _fmt("pflops_no_attn", row.get("pflops"))
    if key == "videos":
        return str(row["videos"])
    if key in ("lpips", "psnr", "ssim"):
        return _interval_text(row, key)
    return _fmt(key, row.get(key))


def render_matched(records: list[dict], fmt_name: str):
    """The ``matched`` layout: per model and target budget one row per policy (records without ``match`` ignored)."""
    matched = [r for r in records if r.get("match")]
    rows = matched_rows(matched)
    cols = MATCHED_COLUMNS
    bold, tie, lines = matched_verdicts(rows)
    if fmt_name == "json":
        keep = ("model", "by", "target_nfe", "target_fraction", "policy", "setting", "knob", "value", "tuned_nfe",
                "monotone", "nfe", "pflops", "pflops_no_attn", "speedup", "lpips", "lpips_lo", "lpips_hi", "psnr",
                "psnr_lo", "psnr_hi", "ssim", "ssim_lo", "ssim_hi", "videos")
        return json.dumps([{**{k: r.get(k) for k in keep},
                            "best": [k for k in ("lpips", "psnr", "ssim") if (i, k) in bold],
                            "tie": [k for k in ("lpips", "psnr", "ssim") if (i, k) in tie]}
                           for i, r in enumerate(rows)], indent=1)
    cells, breaks, last = [], [], None
    for i, r in enumerate(rows):
        group = (r["model"], r["by"], r["target_nfe"])
        if group != last:
            breaks.append(i)
        row = []
        for c in cols:
            if c.key == "model":
                row.append(r["model"] if group != last or fmt_name == "csv" else "")
            elif c.key == "target":
                row.append(_matched_cell(r, c.key) if group != last or fmt_name == "csv" else "")
            else:
                text = _matched_cell(r, c.key)
                row.append(f"{text} tie" if (i, c.key) in tie and fmt_name != "csv" else text)
        last = group
        cells.append(row)
    bold_cells = {(i, j) for i, _ in enumerate(rows) for j, c in enumerate(cols) if (i, c.key) in bold}
    notes_out = () if fmt_name == "csv" else [
        "Equal-budget comparison (`sencache-bench match`): each policy's knob tuned on the tuning prompts so that "
        "its mean NFE per CFG branch is nearest the target, never more than one step above it (Tuned NFE); "
        "NFE: the evaluation prompts' mean at that value.",
        "LPIPS / PSNR / SSIM against the uncached reference, with 95% bootstrap intervals over the (prompt, seed) "
        "videos (4000 resamples, seeded). Bold: the best mean whose interval does not overlap the runner-up's; "
        "'tie': the best and every row whose interval overlaps it. PFLOPs per video, with and without attention.",
        *lines]
    if not rows:
        notes_out = ["No matched records here: make them with `sencache-bench match SPEC ... --nfe F`."]
    return render_cells([c.header for c in cols], cells, fmt_name, left=3, bold=bold_cells, breaks=tuple(breaks),
                        notes=notes_out, title="Equal-budget comparison")
