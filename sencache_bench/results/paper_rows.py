"""The rows of the paper layouts: per model the uncached row, then one row per (policy, setting) with a label that
keeps only the settings that vary within the policy."""

from __future__ import annotations

from collections import defaultdict
from statistics import fmean

from ..metrics.vbench import total_score
from .cells import kv, split_setting
from .tables import aggregate

UNCACHED = "Uncached"


def _methods(rows: list[dict]) -> tuple[list[str], list[str]]:
    """A label per row, with only the parameters that vary within its policy; and the common ones per policy."""
    by_policy: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_policy[r["policy"]].append(r)
    varying, common = {}, []
    for policy, members in by_policy.items():
        settings = [dict(split_setting(r["setting"])) for r in members]
        keys = list(dict.fromkeys(k for st in settings for k in st))
        same = [k for k in keys if len(members) > 1 and all(k in st for st in settings)
                and len({st[k] for st in settings}) == 1]
        varying[policy] = [k for k in keys if k not in same]
        if same:
            common.append(f"{policy}: " + ", ".join(kv(k, settings[0][k]) for k in same))
    labels = []
    for r in rows:
        st = dict(split_setting(r["setting"]))
        shown = [kv(k, st[k]) for k in varying[r["policy"]] if k in st]
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
            "speedup": 1.0, "latency_s": mean([r["baseline"]["latency_s"] for r in recs
                                                   if (r.get("baseline") or {}).get("latency_s") is not None]),
            "lpips": None, "psnr": None, "ssim": None, "vbench": total["total"] if total else None,
            "vbench_dims": dims}


def layout_rows(records: list[dict], common: list[str] | None = None, with_records: bool = False):
    """Rows of a paper layout: per model, the uncached row first (``uncached``: True), then the policies.

    ``common`` (if given) receives one "model: policy: k=v, ..." line per policy with parameters shared
    by all its rows (left out of the labels). ``with_records``: also each row's records (the uncached row: none)."""
    by_model: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        by_model[rec["model"]].append(rec)
    out, out_records = [], []
    for model in sorted(by_model):
        recs = by_model[model]
        out.append({**_uncached_from_references(recs), "model": model, "policy": "none", "setting": "reference",
                    "method": UNCACHED, "uncached": True})
        out_records.append([])
        rows = [r for r in aggregate(recs) if r["policy"] != "none"]
        labels, shared = _methods(rows)
        if common is not None:
            common += [f"{model}: {line}" for line in shared]
        for r, label in zip(rows, labels):
            cache = 1 - r["nfe"] / r["nfe_ref"] if r["nfe"] is not None and r["nfe_ref"] else None
            out.append({**r, "method": label, "cache": cache, "uncached": False})
            out_records.append([x for x in recs if x["policy"] == r["policy"] and x["setting"] == r["setting"]])
    return (out, out_records) if with_records else out
