"""Aggregate run records into the comparison table, and render it as rich, markdown, csv, latex or json.

One row per (model, policy, setting) (and prompt group with ``by_group``), grouped and averaged with pandas
(:func:`record_frame`: one row per video); CSV is pandas' writer. Markdown, LaTeX and rich keep the cell
renderer below, because the paper layouts need what pandas' writers do not place: bold best cells, rules
between models and footnotes. Means are over videos
(per-video values are already means over frames). ``nfe`` counts computed denoiser calls per CFG
branch, as the papers do: the mean over branches and videos, out of ``steps``.
``speedup``: the geometric mean over videos of each video's paired ratio (uncached baselines timed beside
the policy run), with a bootstrap interval and the Amdahl bound (:mod:`sencache_bench.results.speedup`);
``latency_ref_s`` is the mean of those paired baselines, not the references' own generation time.
``vbench``: VBench's total score (its normalisation and weights) from the mean over videos of each
dimension's per-video score (``metrics["vbench_<dimension>"]``), when all 16 dimensions are present;
the per-dimension means are in ``vbench_dims`` (and ``vbench_ref_dims`` for the uncached references).
"""

from __future__ import annotations

import json
from collections import defaultdict
from statistics import fmean

import pandas as pd

from ..metrics.vbench import dimension_scores, total_score
from .intervals import bootstrap_interval
from .margins import near_threshold
from .speedup import summarize

COLUMNS = ["model", "policy", "setting", "videos", "nfe", "nfe_effective", "nfe_ref", "speedup", "speedup_lo",
           "speedup_hi", "speedup_bound", "pflops", "pflops_no_attn", "pflops_ref", "latency_s", "latency_ref_s",
           "lpips", "ssim", "psnr", "vbench", "near_threshold", "note"]
#: columns folded into the speedup cell ("1.64x [1.60, 1.68]") in the formats people read
FOLDED = ("speedup_lo", "speedup_hi")
FORMATS = ("rich", "markdown", "csv", "latex", "json")


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return fmean(values) if values else None


def _vbench(metric_dicts: list[dict]) -> tuple[float | None, dict[str, float]]:
    """(VBench total or None, per-dimension means) over videos; an explicit ``vbench`` value wins."""
    explicit = _mean([m.get("vbench") for m in metric_dicts])
    per_dim: dict[str, list[float]] = defaultdict(list)
    for m in metric_dicts:
        for dim, value in dimension_scores(m).items():
            per_dim[dim].append(value)
    dims = {dim: fmean(values) for dim, values in per_dim.items()}
    if explicit is not None:
        return explicit, dims
    total = total_score(dims)
    return (total["total"] if total else None), dims


def _sampling_signature(rec: dict) -> str:
    s = rec.get("sampling") or {}
    return f"{s.get('width')}x{s.get('height')}x{s.get('frames')}, {s.get('steps')} steps"


def model_labels(records: list[dict]) -> list[str]:
    """The model's name, plus its sampling when one folder holds runs of that model at several settings
    (their numbers must not be averaged together)."""
    sigs: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        sigs[rec["model"]].add(_sampling_signature(rec))
    return [rec["model"] if len(sigs[rec["model"]]) == 1 else f"{rec['model']} ({_sampling_signature(rec)})"
            for rec in records]


#: per-video values a row averages (None where a video has none: LPIPS without its weights)
MEANS = ["nfe", "nfe_effective", "nfe_ref", "pflops", "pflops_no_attn", "pflops_ref", "pflops_ref_no_attn",
         "lpips", "ssim", "psnr"]


def record_frame(records: list[dict]) -> pd.DataFrame:
    """One row per record (video): its labels, the values the table averages, and the record itself."""
    rows = []
    for rec, model in zip(records, model_labels(records)):
        ref, metrics = rec["reference"], rec.get("metrics") or {}
        ref_no_attn = ref["flops"].get("total_no_attn")
        rows.append({"model": model, "policy": rec["policy"], "setting": rec["setting"],
                     "group": rec.get("prompt_group", "default"), "nfe": rec["nfe"],
                     "nfe_effective": rec.get("nfe_effective", rec["nfe"]), "nfe_ref": ref["nfe"],
                     "pflops": rec["flops"]["total"] / 1e15, "pflops_no_attn": rec["flops"]["total_no_attn"] / 1e15,
                     "pflops_ref": ref["flops"]["total"] / 1e15,
                     "pflops_ref_no_attn": ref_no_attn / 1e15 if ref_no_attn is not None else None,
                     **{m: metrics.get(m) for m in ("lpips", "ssim", "psnr")}, "record": rec})
    return pd.DataFrame(rows, columns=["model", "policy", "setting", "group", *MEANS, "record"])


def aggregate(records: list[dict], by_group: bool = False) -> list[dict]:
    """One row per (model, policy, setting[, group]): means over videos (missing values skipped), the paired
    speedup (results/speedup.py) and VBench; sorted by the key."""
    if not records:
        return []
    frame = record_frame(records)
    keys = ["model", "policy", "setting"] + (["group"] if by_group else [])
    rows = []
    for key, part in frame.groupby(keys, sort=True):
        recs = list(part["record"])
        means = part[MEANS].astype(float).mean()  # NaN (a missing value) is skipped, as in a mean over the rest
        row = {**dict(zip(keys, key)), "videos": len(part),
               **{c: (None if pd.isna(v) else float(v)) for c, v in means.items()}, **summarize(recs)}
        for metric in ("lpips", "ssim", "psnr"):
            row[f"{metric}_lo"], row[f"{metric}_hi"] = bootstrap_interval(list(part[metric]))  # 95%, over items
        row["vbench"], row["vbench_dims"] = _vbench([r.get("metrics") or {} for r in recs])
        row["vbench_ref"], row["vbench_ref_dims"] = _vbench([r["reference"].get("metrics") or {} for r in recs])
        row["nfe_per_expert"] = nfe_per_expert(recs)
        row["near_threshold"] = near_threshold(recs)  # decisions within 1e-3 of their threshold (results/margins.py)
        rows.append(row)
    return rows


def nfe_per_expert(records: list[dict]) -> dict[str, float] | None:
    """Mean over videos of each expert's NFE (mean over CFG branches, as ``nfe``), for records of a model with
    several experts (``nfe_per_expert`` in the record, runner.py); None otherwise. The experts' values add up
    to ``nfe``."""
    per = [r.get("nfe_per_expert") for r in records]
    if not per or any(not p for p in per):
        return None
    experts = sorted({e for p in per for e in p})
    return {e: fmean(fmean(p.get(e, {}).values()) if p.get(e) else 0.0 for p in per) for e in experts}


def columns(by_group: bool, folded: bool = False, rows: list[dict] = ()) -> list[str]:
    """The default table's columns; ``nfe_experts`` after ``nfe`` when a row has NFE per expert."""
    cols = [c for c in COLUMNS if not (folded and c in FOLDED)]
    if any(r.get("nfe_per_expert") for r in rows):
        cols.insert(cols.index("nfe") + 1, "nfe_experts")
    return cols[:3] + ["group"] + cols[3:] if by_group else cols


def experts_cell(row: dict) -> str:
    """``3.0/1.0``: each expert's NFE in name order (Wan 2.2: ``transformer`` high noise / ``transformer_2`` low)."""
    per = row.get("nfe_per_expert")
    return "/".join(f"{v:.1f}" for _, v in sorted(per.items())) if per else ""


def fmt(value, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if column in ("videos",):
        return str(value)
    if column == "near_threshold":  # "2/240": decisions within the margin / decisions with a margin
        return f"{value['near']}/{value['decisions']}" if value["decisions"] else ""
    if column.startswith("speedup"):
        return f"{value:.2f}x"
    if column.startswith("pflops"):
        return f"{value:.4g}"
    if column in ("nfe", "nfe_effective", "nfe_ref"):
        return f"{value:.1f}"
    if column in ("lpips", "ssim", "vbench"):
        return f"{value:.4f}"
    if column == "psnr":
        return f"{value:.2f}"
    return f"{value:.3f}"


def render(rows: list[dict], fmt_name: str, by_group: bool = False):
    """A string for markdown/csv/latex/json; a rich Table for rich."""
    if fmt_name in ("json", "csv"):  # plain numbers, intervals in their own columns
        cols = columns(by_group) + ["lpips_lo", "lpips_hi", "ssim_lo", "ssim_hi", "psnr_lo", "psnr_hi", "decisions"]
        experts = sorted({e for r in rows for e in (r.get("nfe_per_expert") or {})})
        cols += [f"nfe_{e}" for e in experts]  # plain numbers: one column per expert
        plain = [{c: r.get(c) for c in cols} | _margin_numbers(r.get("near_threshold"))
                 | {f"nfe_{e}": (r.get("nfe_per_expert") or {}).get(e) for e in experts} for r in rows]
        if fmt_name == "json":
            return json.dumps(plain, indent=1)
        return pd.DataFrame(plain, columns=cols).to_csv(index=False, lineterminator="\n")
    cols = columns(by_group, folded=True, rows=rows)
    cells = [[speedup_cell(r) if c == "speedup" else experts_cell(r) if c == "nfe_experts" else fmt(r.get(c), c)
              for c in cols] for r in rows]
    return render_cells(cols, cells, fmt_name, left=3 + by_group)


def _margin_numbers(near: dict | None) -> dict:
    """near_threshold as two plain columns: decisions within the margin, and decisions with a margin."""
    if not near or not near.get("decisions"):
        return {"near_threshold": None, "decisions": None}
    return {"near_threshold": near["near"], "decisions": near["decisions"]}


def speedup_cell(row: dict) -> str:
    """``1.64x [1.60, 1.68]``: the speedup with its interval."""
    if row.get("speedup") is None:
        return ""
    if row.get("speedup_lo") is None:
        return fmt(row["speedup"], "speedup")
    return f"{row['speedup']:.2f}x [{row['speedup_lo']:.2f}, {row['speedup_hi']:.2f}]"


def _latex_escape(text: str) -> str:
    return (text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")
            .replace("#", "\\#"))


def render_cells(headers: list[str], cells: list[list[str]], fmt_name: str, *, left: int = 1,
                 bold: set[tuple[int, int]] = frozenset(), breaks: tuple[int, ...] = (), notes: list[str] = (),
                 title: str | None = None):
    """Formatted cells as csv, markdown, latex or a rich Table (json is the caller's: it needs raw values).

    ``left``: how many leading columns are left-aligned labels; ``bold``: (row, column) cells set in bold
    (markdown ``**x**``, LaTeX ``\\textbf{x}``, rich bold; csv has none); ``breaks``: row indices that
    start a new group (a rule in LaTeX and rich); ``notes``: footnotes printed under the table
    (markdown, rich) or as the caption (LaTeX); ``title``: a heading line (markdown, rich) or caption start.
    """
    if fmt_name == "csv":
        return pd.DataFrame(cells, columns=headers).to_csv(index=False, lineterminator="\n")
    marked = [[(f"**{x}**" if (i, j) in bold and x and fmt_name == "markdown" else x) for j, x in enumerate(row)]
              for i, row in enumerate(cells)]
    if fmt_name == "markdown":
        lines = [f"**{title}**", ""] if title else []
        plain = not (notes or bold or title)  # the default table keeps its plain separator row
        rule = "|" + "|".join("---" if plain else ":--" if j < left else "--:" for j in range(len(headers))) + "|"
        lines += ["| " + " | ".join(headers) + " |", rule]
        lines += ["| " + " | ".join(row) + " |" for row in marked]
        if notes:
            lines += [""] + [f"{note}  " if k < len(notes) - 1 else note for k, note in enumerate(notes)]
        return "\n".join(lines) + "\n"
    if fmt_name == "latex":
        def cell(i, j, x):
            x = _latex_escape(x)
            return f"\\textbf{{{x}}}" if (i, j) in bold and x else x

        tabular = ["\\begin{tabular}{" + "l" * left + "r" * (len(headers) - left) + "}", "\\toprule",
                   " & ".join(_latex_escape(c) for c in headers) + " \\\\", "\\midrule"]
        for i, row in enumerate(cells):
            if i in breaks and i > 0:
                tabular.append("\\midrule")
            tabular.append(" & ".join(cell(i, j, x) for j, x in enumerate(row)) + " \\\\")
        tabular += ["\\bottomrule", "\\end{tabular}"]
        if not (notes or title):
            return "\n".join(tabular) + "\n"
        caption = " ".join(([f"{title}."] if title else []) + list(notes))
        return "\n".join(["\\begin{table}[t]", "\\centering", f"\\caption{{{_latex_escape(caption)}}}", *tabular,
                          "\\end{table}"]) + "\n"
    if fmt_name == "rich":
        from rich.table import Table
        from rich.text import Text

        table = Table(show_lines=False, title=title, caption="\n".join(notes) or None, caption_justify="left")
        for j, c in enumerate(headers):
            table.add_column(c, justify="left" if j < left else "right")
        for i, row in enumerate(cells):  # Text, not markup: a setting like "x=[1]" must print as it is
            table.add_row(*[Text(x, style="bold" if (i, j) in bold else "") for j, x in enumerate(row)],
                          end_section=(i + 1) in breaks)
        return table
    raise ValueError(f"unknown format {fmt_name!r} (valid: {', '.join(FORMATS)})")
