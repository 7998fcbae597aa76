"""Aggregate run records into the comparison table, and render it as rich, markdown, csv, latex or json.

One row per (model, policy, setting) (and prompt group with ``by_group``). Means are over videos
(per-video values are already means over frames). ``nfe`` counts computed denoiser calls per CFG
branch, as the papers do: the mean over branches and videos, out of ``steps``.
``speedup`` = mean reference latency / mean policy latency.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from statistics import fmean

COLUMNS = ["model", "policy", "setting", "videos", "nfe", "nfe_ref", "speedup", "pflops", "pflops_no_attn",
           "pflops_ref", "latency_s", "latency_ref_s", "lpips", "ssim", "psnr", "vbench"]
FORMATS = ("rich", "markdown", "csv", "latex", "json")


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return fmean(values) if values else None


def aggregate(records: list[dict], by_group: bool = False) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        key = (rec["model"], rec["policy"], rec["setting"]) + ((rec.get("prompt_group", "default"),) if by_group else ())
        groups[key].append(rec)
    rows = []
    for key, recs in sorted(groups.items(), key=lambda kv: kv[0]):
        lat = _mean([r["latency"]["total_s"] for r in recs])
        lat_ref = _mean([r["reference"]["latency"]["total_s"] for r in recs])
        row = {
            "model": key[0], "policy": key[1], "setting": key[2], "videos": len(recs),
            "nfe": _mean([r["nfe"] for r in recs]), "nfe_ref": _mean([r["reference"]["nfe"] for r in recs]),
            "speedup": lat_ref / lat if lat and lat_ref else None,
            "pflops": _mean([r["flops"]["total"] / 1e15 for r in recs]),
            "pflops_no_attn": _mean([r["flops"]["total_no_attn"] / 1e15 for r in recs]),
            "pflops_ref": _mean([r["reference"]["flops"]["total"] / 1e15 for r in recs]),
            "latency_s": lat, "latency_ref_s": lat_ref,
        }
        for metric in ("lpips", "ssim", "psnr", "vbench"):
            row[metric] = _mean([r.get("metrics", {}).get(metric) for r in recs])
        if by_group:
            row["group"] = key[3]
        rows.append(row)
    return rows


def columns(by_group: bool) -> list[str]:
    return COLUMNS[:3] + ["group"] + COLUMNS[3:] if by_group else list(COLUMNS)


def fmt(value, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if column in ("videos",):
        return str(value)
    if column == "speedup":
        return f"{value:.2f}x"
    if column.startswith("pflops"):
        return f"{value:.4g}"
    if column in ("nfe", "nfe_ref"):
        return f"{value:.1f}"
    if column in ("lpips", "ssim", "vbench"):
        return f"{value:.4f}"
    if column == "psnr":
        return f"{value:.2f}"
    return f"{value:.3f}"


def render(rows: list[dict], fmt_name: str, by_group: bool = False):
    """A string for markdown/csv/latex/json; a rich Table for rich."""
    cols = columns(by_group)
    if fmt_name == "json":
        return json.dumps([{c: r.get(c) for c in cols} for r in rows], indent=1)
    cells = [[fmt(r.get(c), c) for c in cols] for r in rows]
    if fmt_name == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(cols)
        writer.writerows(cells)
        return buf.getvalue()
    if fmt_name == "markdown":
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines) + "\n"
    if fmt_name == "latex":
        esc = lambda s: s.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")  # noqa: E731
        lines = ["\\begin{tabular}{" + "l" * 3 + "r" * (len(cols) - 3) + "}", "\\toprule",
                 " & ".join(esc(c) for c in cols) + " \\\\", "\\midrule"]
        lines += [" & ".join(esc(x) for x in row) + " \\\\" for row in cells]
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines) + "\n"
    if fmt_name == "rich":
        from rich.table import Table

        table = Table(show_lines=False)
        for c in cols:
            table.add_column(c, justify="left" if c in ("model", "policy", "setting", "group") else "right")
        for row in cells:
            table.add_row(*row)
        return table
    raise ValueError(f"unknown format {fmt_name!r} (valid: {', '.join(FORMATS)})")
