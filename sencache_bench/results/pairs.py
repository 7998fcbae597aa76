"""The ``pairs`` layout: the pairwise matrix behind every verdict, one line per pair of rows and metric.

Groups: per model and target budget for the records of ``sencache-bench match``, per model otherwise. Each line:
the rows' mean difference on the videos both have, its paired bootstrap 95% interval, the bootstrap p-value and
Holm's adjustment over the group's pairs (results/paired.py), and whether the pair is separated.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd

from . import paired
from .tables import render_cells
from .verdicts import NAMES, judge, method_note

COLUMNS = ["Model", "Group", "Metric", "A", "B", "Videos", "Left out", "A - B [95% CI]", "p", "p (Holm)", "Verdict",
           "Note"]


def _rows(records: list[dict]) -> tuple[list[dict], list[list[dict]], Callable, Callable]:
    """The rows compared, their records, the group key and the group's label."""
    if any(r.get("match") for r in records):
        from .matched import _group, matched_rows

        rows, row_records = matched_rows([r for r in records if r.get("match")])
        return rows, row_records, _group, lambda key: f"target {key[2]:.3g}" + (" FLOPs" if key[1] == "flops" else "")
    from .paper_rows import layout_rows

    rows, row_records = layout_rows(records, with_records=True)
    keep = [i for i, r in enumerate(rows) if not r["uncached"]]
    return [rows[i] for i in keep], [row_records[i] for i in keep], lambda r: (r["model"],), lambda key: "all"


def _budget_note(a: dict, b: dict) -> str:
    """Matched rows more than one step apart in evaluation NFE are not at one budget: the pair says so."""
    from .matched import NFE_SLACK

    if a.get("by", "nfe") != "nfe" or a.get("nfe") is None or b.get("nfe") is None:
        return ""
    if "target_nfe" in a and abs(a["nfe"] - b["nfe"]) > NFE_SLACK:
        return f"unequal budget: NFE {a['nfe']:.1f} vs {b['nfe']:.1f}"
    return ""


def _verdict(pair: paired.Pair, better: str, names: tuple[str, str]) -> str:
    if pair.p is None:
        return "no claim"
    if not pair.separated:
        return "not separated"
    up = pair.diff > (1.0 if pair.metric == "speedup" else 0.0)
    return f"{names[0] if up == (better == 'max') else names[1]} better"


def pair_lines(records: list[dict]) -> list[dict]:
    """One plain dict per (group, metric, pair): the numbers of the ``pairs`` layout."""
    rows, row_records, group, label = _rows(records)
    verdicts = judge(rows, row_records, group)
    out = []
    for key, members in verdicts.groups.items():
        for metric in NAMES:
            comp = verdicts.comparisons.get((key, metric))
            if comp is None:
                continue
            for p in comp.pairs:
                a, b = rows[members[p.a]], rows[members[p.b]]
                note = "; ".join(x for x in (p.note, _budget_note(a, b)) if x)
                out.append({"model": key[0], "group": label(key), "metric": metric, "a": a["method"],
                            "b": b["method"], "n": p.n, "left_out": p.left_out, "diff": p.diff, "lo": p.lo,
                            "hi": p.hi, "p": p.p, "p_adj": p.p_adj, "separated": p.separated,
                            "verdict": _verdict(p, comp.better, (a["method"], b["method"])), "note": note,
                            "videos": [a["videos"], b["videos"]]})
    return out


def _num(metric: str, v: float | None) -> str:
    if v is None:
        return "-"
    if metric == "speedup":
        return f"{v:.3f}x"
    return f"{v:+.2f}" if metric == "psnr" else f"{v:+.4f}"


def _p(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}" if v >= 1e-4 else f"{v:.1e}"


def render_pairs(records: list[dict], fmt_name: str):
    """The ``pairs`` layout as rich, markdown, csv, latex or json (csv and json: plain numbers)."""
    lines = pair_lines(records)
    if fmt_name == "json":
        return json.dumps([{k: v for k, v in x.items() if k != "videos"} for x in lines], indent=1)
    if fmt_name == "csv":
        cols = ["model", "group", "metric", "a", "b", "n", "left_out", "diff", "lo", "hi", "p", "p_adj", "separated",
                "verdict", "note"]
        return pd.DataFrame(lines, columns=cols).to_csv(index=False, lineterminator="\n")
    cells, breaks, last = [], [], None
    for i, x in enumerate(lines):
        interval = "" if x["lo"] is None else f" [{_num(x['metric'], x['lo'])}, {_num(x['metric'], x['hi'])}]"
        head = (x["model"], x["group"]) != last
        if head:
            breaks.append(i)
        last = (x["model"], x["group"])
        cells.append([x["model"] if head else "", x["group"] if head else "", NAMES[x["metric"]][0], x["a"], x["b"],
                      str(x["n"]), str(x["left_out"]), _num(x["metric"], x["diff"]) + interval, _p(x["p"]),
                      _p(x["p_adj"]), x["verdict"], x["note"]])
    bold = {(i, 10) for i, x in enumerate(lines) if x["separated"]}
    notes = ([method_note([n for x in lines for n in x["videos"]]),
              "A - B: the mean per-video difference (PSNR in dB; speedup: the ratio of the two rows' speedups); Left "
              "out: videos one row has without the other (or without a value)."]
             if lines else ["No pairs: a group needs two rows with records (sencache-bench run / match)."])
    return render_cells(COLUMNS, cells, fmt_name, left=5, bold=bold, breaks=tuple(breaks), notes=notes,
                        title="Pairwise comparisons")
