"""The ``matched`` layout: the records of ``sencache-bench match``, per model and target budget one row per policy.

Fidelity with 95% bootstrap intervals over the videos, speedup with its interval and Amdahl bound; the verdict
per metric from paired comparisons of all the rows of a group (results/verdicts.py): rank-group letters after each
cell, bold only for a row separated from every other. A row whose evaluation NFE is more than one step from its
target, or from another row of its group, is flagged in its note: its budget is not the others'.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pandas as pd

from .cells import Column, fmt_value, kv, split_setting
from .tables import aggregate, model_labels, render_cells
from .verdicts import group_lines, judge, method_note

#: how far (in steps per CFG branch) a row's evaluation NFE may sit from the target, and from the group's others
NFE_SLACK = 1.0

COLUMNS = [Column("model", "Model"), Column("target", "Target NFE"), Column("method", "Method"), Column("knob", "Knob"),
           Column("tuned_nfe", "Tuned NFE"), Column("nfe", "NFE"), Column("pflops", "PFLOPs"),
           Column("pflops_no_attn", "PFLOPs (no attn)"), Column("speedup", "Speedup [95% CI]", "max"),
           Column("speedup_bound", "Bound"), Column("lpips", "LPIPS [95% CI]", "min"),
           Column("psnr", "PSNR [95% CI]", "max"), Column("ssim", "SSIM [95% CI]", "max"), Column("videos", "Videos"),
           Column("note", "Note")]
METRICS = ("speedup", "lpips", "psnr", "ssim")
#: the plain-number fields of a row in csv and json
PLAIN = ("model", "by", "target_nfe", "target_fraction", "policy", "setting", "method", "knob", "value", "tuned_nfe",
         "monotone", "nfe", "nfe_off_target", "pflops", "pflops_no_attn", "speedup", "speedup_lo", "speedup_hi",
         "speedup_bound", "lpips", "lpips_lo", "lpips_hi", "psnr", "psnr_lo", "psnr_hi", "ssim", "ssim_lo",
         "ssim_hi", "videos", "note")


def _targets(rec: dict) -> list[dict]:
    """The budgets a matched record serves: its own and any other target that picked the same value."""
    m = rec.get("match")
    return [m] + list(m.get("also", [])) if m else []


def _group(row: dict) -> tuple:
    return row["model"], row["by"], row["target_nfe"]


def matched_rows(records: list[dict]) -> tuple[list[dict], list[list[dict]]]:
    """Per (model, target) one row per (policy, setting), sorted by model, target, policy; and each row's records."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec, model in zip(records, model_labels(records)):
        for t in _targets(rec):
            groups[(model, t.get("by", "nfe"), t["target_nfe"], t.get("target_fraction"))].append(rec)
    rows, row_records = [], []
    for (model, by, target, fraction), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2])):
        for r in aggregate(recs):
            mine = [x for x in recs if x["policy"] == r["policy"] and x["setting"] == r["setting"]]
            m = mine[0]["match"]
            own = next((t for t in _targets(mine[0]) if t["target_nfe"] == target and t.get("by", "nfe") == by), m)
            rows.append({**r, "model": model, "by": by, "target_nfe": target, "target_fraction": fraction,
                         "knob": m["knob"], "value": m["value"], "tuned_nfe": own["tuned_nfe"],
                         "monotone": m.get("monotone", True), "method": r["policy"]})
            row_records.append(mine)
    _label_by_other_fields(rows)
    _flag_budgets(rows)
    for r in rows:  # decisions that may flip (results/margins.py): said where there are any
        near = r.get("near_threshold") or {}
        if near.get("near"):
            r["note"] = "; ".join(x for x in (r.get("note"), f"{near['near']}/{near['decisions']} decisions within "
                                              f"{near['margin']:g} of their threshold") if x)
    return rows, row_records


def _label_by_other_fields(rows: list[dict]) -> None:
    """A policy matched with different other fields (e.g. max_reuse 2 at one budget, 3 at another) shows them."""
    others = {id(r): {k: v for k, v in split_setting(r["setting"]) if k != r["knob"]} for r in rows}
    for policy in {r["policy"] for r in rows}:
        mine = [r for r in rows if r["policy"] == policy]
        keys = {k for r in mine for k in others[id(r)]}
        varying = sorted(k for k in keys if len({others[id(r)].get(k) for r in mine}) > 1)
        for r in mine:
            shown = [kv(k, others[id(r)].get(k)) for k in varying if k in others[id(r)]]
            if shown:
                r["method"] = f"{policy} ({', '.join(shown)})"


def _flag_budgets(rows: list[dict]) -> None:
    """``nfe_off_target``: the row's evaluation NFE is more than NFE_SLACK from its target or from another row of its
    group (NFE targets only); the note says by how much."""
    by_group: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        by_group[_group(r)].append(r)
    for (_, by, target), members in by_group.items():
        nfes = [r["nfe"] for r in members if r.get("nfe") is not None]
        for r in members:
            r["nfe_off_target"] = False
            if by != "nfe" or r.get("nfe") is None:
                continue
            off = r["nfe"] - target
            spread = max(abs(r["nfe"] - x) for x in nfes)
            if abs(off) > NFE_SLACK or spread > NFE_SLACK:
                r["nfe_off_target"] = True
                what = f"NFE {r['nfe']:.1f}: {off:+.1f} from the target" if abs(off) > NFE_SLACK else \
                    f"NFE {r['nfe']:.1f}: {spread:.1f} from another row"
                r["note"] = "; ".join(x for x in (what, r.get("note")) if x)


def _interval_text(row: dict, key: str) -> str:
    mean, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if mean is None:
        return "-"
    if lo is None or hi is None:
        return fmt_value(key, mean)
    bound = (lambda v: f"{v:.2f}") if key == "speedup" else (lambda v: fmt_value(key, v))  # noqa: E731
    return f"{fmt_value(key, mean)} [{bound(lo)}, {bound(hi)}]"


def _cell(row: dict, key: str) -> str:
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
    if key in ("pflops", "pflops_no_attn"):
        return fmt_value("pflops_no_attn", row.get(key))
    if key == "speedup_bound":
        return fmt_value("speedup", row.get(key))
    if key == "videos":
        return str(row["videos"])
    if key in METRICS:
        return _interval_text(row, key)
    return fmt_value(key, row.get(key))


def _title(group: tuple) -> str:
    model, by, target = group
    return f"{model}, target {target:.3g} {'NFE' if by == 'nfe' else 'FLOPs-equivalent steps'}"


#: the terminal's columns (rich, unless ``intervals``): the group as a heading row, knobs and notes in footnotes
COMPACT = [Column("method", "Method"), Column("nfe", "NFE"), Column("speedup", "Speedup", "max"),
           Column("speedup_bound", "Bound"), Column("lpips", "LPIPS", "min"), Column("psnr", "PSNR", "max"),
           Column("ssim", "SSIM", "max"), Column("videos", "n"), Column("note", "Note")]


def _compact_rich(rows: list[dict], verdicts, best: dict, notes: list[str]):
    """The matched table for a terminal (at most about 120 columns): per group a heading row, per policy its NFE,
    means with rank letters and the bound; the knob values and each row's note go under the table, numbered."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Equal-budget comparison", caption_justify="left", pad_edge=False)
    for j, c in enumerate(COMPACT):
        table.add_column(c.header, justify="left" if j == 0 else "right", overflow="fold")
    footnotes, last = [], None
    for i, r in enumerate(rows):
        group = _group(r)
        if group != last:
            knobs = ", ".join(f"{x['method']} {x['knob']}={x['value']}" for x in rows if _group(x) == group)
            if table.rows:
                table.rows[-1].end_section = True  # a rule between groups
            table.add_row(Text(_title(group), style="bold"), *[Text("")] * (len(COMPACT) - 1))
            footnotes.append(f"{_title(group)}: knobs {knobs}.")
            last = group
        cells = []
        for c in COMPACT:
            if c.key in METRICS:
                mean = r.get(c.key)
                text = "-" if mean is None else fmt_value(c.key, mean)
                if text != "-":
                    text = f"{text} {verdicts.letter(i, c.key)}".rstrip()
                cells.append(Text(text, style="bold" if i in best[c.key] else ""))
            elif c.key == "note":
                mark = ""
                if r.get("note"):
                    footnotes.append(f"[{len(footnotes)}] {r['method']}: {r['note']}")
                    mark = f"[{len(footnotes) - 1}]"
                cells.append(Text(mark))
            else:
                cells.append(Text(_cell(r, c.key)))
        table.add_row(*cells)
    table.caption = "\n".join([*footnotes, *notes, "Intervals and every column: --intervals (or -f markdown)."])
    return table


def render_matched(records: list[dict], fmt_name: str, detect: dict[str, float] | None = None,
                   intervals: bool = False):
    """The ``matched`` layout (records without ``match`` ignored) as rich, markdown, csv, latex or json. In rich,
    a compact table that fits a terminal unless ``intervals`` asks for every column."""
    rows, row_records = matched_rows([r for r in records if r.get("match")])
    verdicts = judge(rows, row_records, _group, METRICS)
    best = {m: verdicts.best(m) for m in METRICS}
    if fmt_name in ("json", "csv"):
        plain = [{**{k: r.get(k) for k in PLAIN},
                  **{f"{m}_group": verdicts.letter(i, m) for m in METRICS},
                  "best": [m for m in METRICS if i in best[m]]} for i, r in enumerate(rows)]
        if fmt_name == "json":
            return json.dumps(plain, indent=1)
        frame = pd.DataFrame(plain, columns=list(plain[0]) if plain else list(PLAIN))
        frame["best"] = frame["best"].map(lambda v: ";".join(v) if isinstance(v, list) else v)
        return frame.to_csv(index=False, lineterminator="\n")
    cells, breaks, bold, last = [], [], set(), None
    for i, r in enumerate(rows):
        group = _group(r)
        if group != last:
            breaks.append(i)
        row = []
        for j, c in enumerate(COLUMNS):
            if c.key in ("model", "target"):
                row.append(_cell(r, c.key) if group != last else "")
                continue
            text = _cell(r, c.key)
            if c.key in METRICS and text not in ("", "-"):
                text = f"{text} {verdicts.letter(i, c.key)}".rstrip()
                if i in best[c.key]:
                    bold.add((i, j))
            row.append(text)
        last = group
        cells.append(row)
    if not rows:
        notes = ["No matched records here: make them with `sencache-bench match SPEC ... --nfe F`."]
    else:
        notes = ["Equal-budget comparison (`sencache-bench match`): each policy's knob tuned on the tuning prompts so "
                 "that its mean NFE per CFG branch is nearest the target, never more than one step above it (Tuned "
                 f"NFE); NFE: the evaluation prompts' mean at that value (a note flags one more than {NFE_SLACK:g} step "
                 "from the target or from another row).",
                 "Intervals: 95% bootstrap over the (prompt, seed) videos of each row; speedup: geometric mean of the "
                 "paired per-video ratios; Bound: Amdahl's bound from the baseline's phase split and the FLOPs.",
                 method_note([r["videos"] for r in rows]),
                 *group_lines(rows, verdicts, lambda r: r["method"], _title, detect)]
    if fmt_name == "rich" and rows and not intervals:
        return _compact_rich(rows, verdicts, best, notes)
    return render_cells([c.header for c in COLUMNS], cells, fmt_name, left=3, bold=bold, breaks=tuple(breaks),
                        notes=notes, title="Equal-budget comparison")
