"""Fronts, not single points: the mean gap between two policies' quality-vs-cost fronts, with a paired bootstrap.

An adaptive policy's NFE on the evaluation prompts differs from its tuning value, so an "equal budget" row
compares points that are not quite at equal cost. Video codecs are compared on whole rate-distortion curves
instead (Bjontegaard, "Calculation of average PSNR differences between RD-curves", VCEG-M33, 2001); this does
the same for cache policies that were run at several budgets (``sencache-bench match --nfe 0.3 --nfe 0.4``,
or a sweep).

- A policy's **front** on a metric: one point per setting, x = the mean NFE per CFG branch over the videos
  (or PFLOPs without attention, ``axis="flops"``), y = the mean metric; only the Pareto-efficient points are
  kept (no other point has x <= and y at least as good; PSNR/SSIM higher is better, LPIPS lower), so a
  setting that costs more and is worse is dropped, not averaged in. Sorted by x, joined piecewise-linearly.
  A policy with one setting is a single point: no front, no claim.
- The **difference** A - B: over the overlap [max(min x_A, min x_B), min(max x_A, max x_B)], the integral of
  f_A(x) - f_B(x) divided by the overlap's width: the mean vertical gap. Bjontegaard fits a cubic in
  log-rate; we interpolate piecewise-linearly in x (few points per front, and no extrapolating wiggles).
  An empty or zero-width overlap: no claim.
- **Paired bootstrap** over videos (Efron & Tibshirani 1993, ch. 13, percentile interval): the videos are the
  reference keys that every setting of both policies has with a value; the others are left out and counted.
  Each resample draws those keys with replacement, recomputes every setting's mean x and y, rebuilds both
  fronts (the settings the observed fronts keep) and the difference. Fewer than ``MIN_VIDEOS`` shared videos,
  or a resample whose fronts stop overlapping: no interval. p-value: two-sided, p = min(1, 2 min((#d<=0 + 1)/(B+1), (#d>=0 + 1)/(B+1)));
  Holm's step-down (Holm, Scand. J. Statist. 6, 1979) over the pairs of one (model, metric) that have one.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections import defaultdict
from itertools import combinations

import numpy as np

from ..errors import BenchError
from .cells import kv, split_setting
from .paired import ALPHA, LEVEL, MIN_PAIRED, RESAMPLES, SEED, bootstrap_p, holm
from .tables import model_labels, render_cells

MIN_VIDEOS = MIN_PAIRED
METRICS = {"psnr": "max", "ssim": "max", "lpips": "min"}
AXES = {"nfe": "NFE", "flops": "PFLOPs (no attn)"}
COLUMNS = ["model", "axis", "metric", "policy_a", "policy_b", "diff", "lo", "hi", "overlap_lo", "overlap_hi",
           "videos", "left_out", "p", "p_holm", "verdict", "verdict_holm", "note"]


def _finite(value) -> float | None:
    """A metric value, or None when missing (None, NaN, inf, not a number)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _x(rec: dict, axis: str) -> float | None:
    if axis == "nfe":
        return _finite(rec.get("nfe"))
    v = _finite((rec.get("flops") or {}).get("total_no_attn"))
    return None if v is None else v / 1e15


def pareto_front(points, better: str = "max") -> list[tuple[float, float]]:
    """The Pareto-efficient (x, y) points sorted by x: lower x is cheaper, ``better`` says which y wins."""
    sign = 1.0 if better == "max" else -1.0
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -sign * p[1])):  # per x, the best y first
        if not front or sign * y > sign * front[-1][1]:  # else a cheaper-or-equal point is at least as good
            front.append((x, y))
    return front


def _curve(xs, ys, better: str) -> list[tuple[float, float]]:
    """The kept settings' points sorted by x (at an equal x, the better y)."""
    sign = 1.0 if better == "max" else -1.0
    out: list[tuple[float, float]] = []
    for x, y in sorted(zip(xs, ys), key=lambda p: (p[0], -sign * p[1])):
        if not out or x > out[-1][0]:
            out.append((float(x), float(y)))
    return out


def _interp(front: list[tuple[float, float]], x: float) -> float:
    xs = [p[0] for p in front]
    i = min(max(bisect_right(xs, x) - 1, 0), len(front) - 2)
    (x0, y0), (x1, y1) = front[i], front[i + 1]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def _integral(front: list[tuple[float, float]], lo: float, hi: float) -> float:
    """The exact integral of the piecewise-linear front over [lo, hi] (inside its range): trapezoids."""
    xs = [lo] + [x for x, _ in front if lo < x < hi] + [hi]
    ys = [_interp(front, x) for x in xs]
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))


def front_difference(front_a, front_b) -> tuple[float | None, float, float]:
    """(mean of f_A - f_B over the overlap, or None when it is empty or of zero width; overlap lo, hi)."""
    lo, hi = max(front_a[0][0], front_b[0][0]), min(front_a[-1][0], front_b[-1][0])
    if len(front_a) < 2 or len(front_b) < 2 or not hi > lo:
        return None, lo, hi
    return (_integral(front_a, lo, hi) - _integral(front_b, lo, hi)) / (hi - lo), lo, hi


def compare_pair(a: dict, b: dict, better: str, names=("A", "B")) -> dict:
    """Fronts of two policies, ``{setting: {video key: (x, y or None)}}`` each: difference, interval, p."""
    keys = set().union(*(s.keys() for s in (*a.values(), *b.values())))
    shared = sorted(k for k in keys if all(k in s and s[k][0] is not None and s[k][1] is not None
                                           for s in (*a.values(), *b.values())))
    row = {"diff": None, "lo": None, "hi": None, "overlap_lo": None, "overlap_hi": None, "videos": len(shared),
           "left_out": len(keys) - len(shared), "p": None, "note": ""}
    single = [f"{n}: a single point ({len(s)} setting), no front" for n, s in zip(names, (a, b)) if len(s) < 2]
    if single:
        return {**row, "note": "; ".join(single)}
    if not shared:
        return {**row, "note": "no video that every setting of both has with a value"}
    arrays = [(np.array([[s[k][0] for k in shared] for s in p.values()]),
               np.array([[s[k][1] for k in shared] for s in p.values()])) for p in (a, b)]

    fronts = [pareto_front(zip(x.mean(axis=1), y.mean(axis=1)), better) for x, y in arrays]
    # the settings on each observed front stay the front in every resample (the model is chosen once, its points
    # re-estimated): re-filtering per resample would turn a front whose two points swap order into one point
    keeps = [[i for i, pt in enumerate(zip(x.mean(axis=1), y.mean(axis=1))) if pt in f]
             for (x, y), f in zip(arrays, fronts)]

    def diff(means):  # means: per policy (x means, y means) over settings
        fa, fb = (_curve(mx[k], my[k], better) for (mx, my), k in zip(means, keeps))
        return front_difference(fa, fb)

    d, lo, hi = front_difference(*fronts)
    if d is None:
        ranges = ", ".join(f"{n} {f[0][0]:.4g} to {f[-1][0]:.4g}" for n, f in zip(names, fronts))
        why = ("a front is one point, its other settings dominated" if min(map(len, fronts)) < 2
               else "the fronts do not overlap" if hi < lo else "the fronts meet in one point only")
        return {**row, "note": f"{why} (x: {ranges}): no claim"}
    row.update(diff=d, overlap_lo=lo, overlap_hi=hi)
    if len(shared) < MIN_VIDEOS:
        return {**row, "note": f"{len(shared)} shared videos (< {MIN_VIDEOS}): no interval, no claim"}
    idx = np.random.default_rng(SEED).integers(0, len(shared), size=(RESAMPLES, len(shared)))
    res = [(x[:, idx].mean(axis=2), y[:, idx].mean(axis=2)) for x, y in arrays]  # (settings, resamples) each
    diffs = [diff([(mx[:, r], my[:, r]) for mx, my in res])[0] for r in range(RESAMPLES)]
    undefined = sum(v is None for v in diffs)
    if undefined:
        return {**row, "note": f"the fronts stop overlapping in {undefined} of {RESAMPLES} resamples: no interval"}
    diffs = np.asarray(diffs)
    q = np.quantile(diffs, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], method="inverted_cdf")
    return {**row, "lo": float(q[0]), "hi": float(q[1]), "p": bootstrap_p(diffs)}


def _verdict(a: str, b: str, better: str, sign: int | None) -> str:
    if sign is None:
        return "no claim"
    if sign == 0:
        return "not separated"
    first, second = (a, b) if sign > 0 else (b, a)
    if better == "max":
        return f"{first} above {second}"
    return f"{second} better than {first} (lower)"  # LPIPS: the larger value is the worse one


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


#: fields that move a policy along its front besides the knob: SenCache's Table 1 raises the reuse cap K with the
#: threshold from its slow to its fast setting (``make reproduce-bench`` does the same at 0.42)
BUDGET_FIELDS = ("max_reuse",)


def _variant(rec: dict) -> dict[str, str | None]:
    """The setting's fields that make a policy's variant: for the records of ``match``, all but the knob and
    BUDGET_FIELDS; for a sweep's (no ``match``), none: every setting is a point of the policy's front."""
    m = rec.get("match")
    return {k: v for k, v in split_setting(rec["setting"]) if k not in (m["knob"], *BUDGET_FIELDS)} if m else {}


def front_names(records: list[dict]) -> list[str]:
    """Which front each record belongs to: its policy, plus the variant fields that differ between that policy's
    records (sencache-global's ``mode=adaptive`` is a front of its own)."""
    variants = [_variant(r) for r in records]
    fields: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for rec, var in zip(records, variants):
        for k in set(var) | set(fields[rec["policy"]]):
            fields[rec["policy"]][k].add(var.get(k))
    names = []
    for rec, var in zip(records, variants):
        shown = [kv(k, var.get(k)) for k, vals in sorted(fields[rec["policy"]].items()) if len(vals) > 1 and k in var]
        names.append(f"{rec['policy']} ({', '.join(shown)})" if shown else rec["policy"])
    return names


def _collect(records: list[dict], axis: str) -> dict:
    """{model: {policy: {setting: {key: (x, {metric: y})}}}}; a video recorded twice in one setting is averaged."""
    raw: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    for rec, model, front in zip(records, model_labels(records), front_names(records)):
        if rec["policy"] != "none":
            raw[model][front][rec["setting"]][rec["reference"]["key"]].append(rec)
    out: dict = {}
    for model, policies in raw.items():
        for policy, settings in policies.items():
            for setting, videos in settings.items():
                for key, recs in videos.items():
                    point = (_mean([_x(r, axis) for r in recs]),
                             {m: _mean([_finite((r.get("metrics") or {}).get(m)) for r in recs]) for m in METRICS})
                    out.setdefault(model, {}).setdefault(policy, {}).setdefault(setting, {})[key] = point
    return out


def front_rows(records: list[dict], axis: str = "nfe") -> list[dict]:
    """One row per (model, metric, pair of policies), plain numbers; Holm-adjusted within (model, metric)."""
    if axis not in AXES:
        raise BenchError(f"fronts: unknown axis {axis!r} (valid: {', '.join(AXES)})")
    rows = []
    for model, policies in sorted(_collect(records, axis).items()):
        for metric, better in METRICS.items():
            if not any(v[1][metric] is not None for s in policies.values() for vs in s.values() for v in vs.values()):
                continue  # a metric these runs did not compute (LPIPS without its weights)
            family = []
            for pa, pb in combinations(sorted(policies), 2):
                data = [{st: {k: (v[0], v[1][metric]) for k, v in vs.items()} for st, vs in policies[p].items()}
                        for p in (pa, pb)]
                r = compare_pair(*data, better, names=(pa, pb))
                sign = None if r["lo"] is None else 0 if r["lo"] <= 0 <= r["hi"] else 1 if r["lo"] > 0 else -1
                family.append({"model": model, "axis": axis, "metric": metric, "policy_a": pa, "policy_b": pb,
                               **r, "verdict": _verdict(pa, pb, better, sign)})
            for r, adj in zip(family, holm([r["p"] for r in family])):
                sign = None if adj is None else 0 if adj >= ALPHA or r["diff"] == 0 else 1 if r["diff"] > 0 else -1
                r.update(p_holm=adj, verdict_holm=_verdict(r["policy_a"], r["policy_b"], better, sign))
            rows += family
    return [{c: r.get(c) for c in COLUMNS} for r in rows]


def _num(metric: str, v) -> str:
    return "" if v is None else f"{v:.2f}" if metric == "psnr" else f"{v:.4f}"


def _diff_cell(r: dict) -> str:
    if r["diff"] is None:
        return "-"
    text = f"{'+' if r['diff'] >= 0 else ''}{_num(r['metric'], r['diff'])}"
    return text if r["lo"] is None else f"{text} [{_num(r['metric'], r['lo'])}, {_num(r['metric'], r['hi'])}]"


def render_fronts(records: list[dict], fmt_name: str, axis: str = "nfe"):
    """The ``fronts`` layout as rich, markdown, csv, latex or json (csv and json: plain numbers)."""
    rows = front_rows(records, axis)
    if fmt_name == "json":
        return json.dumps(rows, indent=1)
    if fmt_name == "csv":
        return render_cells(COLUMNS, [["" if r[c] is None else str(r[c]) for c in COLUMNS] for r in rows], "csv")
    headers = ["Model", "Metric", "A", "B", f"A - B [{LEVEL:.0%} CI]", f"Overlap ({AXES[axis]})", "Videos",
               "Left out", "Holm p", "Verdict (CI)", "Verdict (Holm)", "Note"]
    cells, breaks, last = [], [], None
    for i, r in enumerate(rows):
        if (r["model"], r["metric"]) != last:
            breaks.append(i)
        overlap = "" if r["overlap_lo"] is None else f"{r['overlap_lo']:.4g} to {r['overlap_hi']:.4g}"
        cells.append([r["model"], r["metric"].upper(), r["policy_a"], r["policy_b"], _diff_cell(r), overlap,
                      str(r["videos"]), str(r["left_out"]), "" if r["p_holm"] is None else f"{r['p_holm']:.4f}",
                      r["verdict"], r["verdict_holm"], r["note"]])
        last = (r["model"], r["metric"])
    notes = [
        (f"Front: per setting, x = mean {AXES[axis]} and y = mean metric over the videos; Pareto-efficient points "
         "only (a costlier, worse setting is dropped), joined piecewise-linearly. A - B: the mean vertical gap, "
         "integral of f_A - f_B over the overlap of the two fronts' x ranges divided by its width (after "
         "Bjontegaard, VCEG-M33, 2001; linear, not a cubic in log-rate). No overlap or one setting: no claim."),
        (f"Videos: the (prompt, seed) references every setting of both policies has with a value (n = the Videos "
         f"column; Left out: the others). {LEVEL:.0%} paired percentile bootstrap over those videos ({RESAMPLES} "
         f"resamples, seed {SEED}); fewer than {MIN_VIDEOS} videos: no interval. Verdict (CI): the interval "
         f"excludes 0. Verdict (Holm): Holm-adjusted bootstrap p < {ALPHA:.3g} over the pairs of one model and metric.")]
    if not rows:
        notes = [("No two cached policies of one model here: run several policies, each at several budgets "
                  "(`sencache-bench match SPEC ... --nfe 0.3 --nfe 0.4 --nfe 0.5`, or a sweep).")]
    return render_cells(headers, cells, fmt_name, left=4, breaks=tuple(breaks), notes=notes,
                        title=f"Fronts: mean gap between quality-vs-{AXES[axis]} fronts")
