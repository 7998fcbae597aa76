"""Figures from results and profiles (matplotlib, PNG and SVG), as the papers and their supplements draw them.

- ``pareto-<model>``: speedup against LPIPS and PSNR, one point per (policy, setting), the Pareto
  front (most speedup for the least LPIPS / the most PSNR) drawn as a line through its points.
- ``fronts-<model>``: PSNR and LPIPS against the NFE fraction (or, with ``--x flops``, the FLOPs fraction),
  one front per policy (its settings from a sweep or its matched budgets) with 95% bootstrap interval bars,
  and the area under each front over the budget range all fronts cover (printed as notes).
- ``traces-<model>``: per (policy, setting), which steps each video's CFG branches computed (black),
  partly computed (grey: a share of the blocks) or reused (white): a raster of the decision trace.
- ``profile``: a SenCache sensitivity profile's Jx(t) and Jt(t); several files overlay, so an
  8-sample and a larger-sample calibration can be compared (per-sample spread as a band).
- ``output-change-<model>``: the mean consecutive-step output change |f(x_tk,tk) - f(x_tk-1,tk-1)|_1
  per timestep of the uncached references (the SenCache supplement's diagnostic; recorded by the
  runner in each reference's ``output_change``).

Only matplotlib's object API is used (``Figure``, no pyplot): no global backend state.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ..errors import BenchError
from .figures import FORMATS, _colors, _figure, _legend_outside, _save, _slug

X_AXES = ("speedup", "flops")


# -- Pareto ---------------------------------------------------------------------------------------
def pareto_front(points: Sequence[tuple[float, float]], minimize_y: bool = True) -> list[int]:
    """Indices of the points no other point beats: more or equal x (maximised) and better or equal y,
    strictly better in one. Sorted by x. Equal points are all on the front."""
    def beats(q, p):
        y_ok = q[1] <= p[1] if minimize_y else q[1] >= p[1]
        return q[0] >= p[0] and y_ok and (q[0] > p[0] or q[1] != p[1])

    front = [i for i, p in enumerate(points) if not any(beats(q, p) for q in points)]
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


def _x_value(row: dict, x: str) -> float | None:
    if x == "speedup":
        return row.get("speedup")
    ref, cur = row.get("pflops_ref_no_attn"), row.get("pflops_no_attn")
    return ref / cur if ref and cur else None


def point_label(row: dict) -> str:
    """A short label: "policy knob=value" (the policy's budget knob), else the policy and its first parameter."""
    from ..policies import POLICIES
    from .cells import split_setting

    params = dict(split_setting(row.get("setting") or ""))
    try:
        knob = POLICIES.get(row["policy"]).knob
    except Exception:  # a policy this install does not know: fall back to its setting
        knob = None
    if knob is not None and knob.field in params:
        return f"{row['policy']} {knob.field}={params[knob.field]}"
    first = next(((k, v) for k, v in params.items() if v is not None and len(f"{k}={v}") <= 24), None)
    return f"{row['policy']} {first[0]}={first[1]}" if first else row["policy"]


def pareto_figure(model: str, rows: list[dict], x: str = "speedup"):
    """The speedup-vs-fidelity figure of one model's rows (None: no LPIPS or PSNR to draw)."""
    mine = [r for r in rows if _x_value(r, x) is not None]
    panels = [(m, label, minimize) for m, label, minimize in
              (("lpips", "LPIPS (lower is better)", True), ("psnr", "PSNR dB (higher is better)", False))
              if any(r.get(m) is not None for r in mine)]
    if not panels:
        return None
    fig = _figure(4.6 * len(panels) + 1.6, 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = _colors({r["policy"] for r in mine})
    for ax, (metric, label, minimize) in zip(axes, panels):
        pts = [(r, _x_value(r, x), r[metric]) for r in mine if r.get(metric) is not None]
        for policy in colors:
            sel = [(px, py) for r, px, py in pts if r["policy"] == policy]
            if sel:
                ax.scatter(*zip(*sel), color=colors[policy], label=policy, s=36, zorder=3)
        if len(pts) <= 16:  # more labels than that would cover the points
            for r, px, py in pts:
                ax.annotate(point_label(r).partition(" ")[2], (px, py), fontsize=6, xytext=(4, 3),
                            textcoords="offset points", color=colors[r["policy"]], annotation_clip=True)
        front = pareto_front([(px, py) for _, px, py in pts], minimize_y=minimize)
        if front:
            fx, fy = zip(*[(pts[i][1], pts[i][2]) for i in front])
            ax.plot(fx, fy, color="0.2", lw=1.2, ls="--", zorder=2, label="Pareto front")
            ax.scatter(fx, fy, s=110, facecolors="none", edgecolors="0.2", zorder=4)
        ax.set_xlabel("speedup (uncached latency / latency)" if x == "speedup"
                      else "FLOPs speedup (uncached FLOPs / FLOPs, no attention)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    _legend_outside(fig, axes)
    fig.suptitle(f"{model}: speedup vs fidelity", fontsize=11)
    return fig


def plot_pareto(records: list[dict], out_dir: Path, x: str = "speedup", formats: Sequence[str] = FORMATS,
                notes: list[str] | None = None) -> list[Path]:
    from .tables import aggregate

    if x not in X_AXES:
        raise BenchError(f"--x: unknown axis {x!r} (valid: {', '.join(X_AXES)})")
    notes = notes if notes is not None else []
    rows = [r for r in aggregate(records) if r["policy"] != "none"]
    paths = []
    for model in sorted({r["model"] for r in rows}):
        fig = pareto_figure(model, [r for r in rows if r["model"] == model], x)
        if fig is None:
            notes.append(f"pareto {model}: no LPIPS or PSNR values to plot")
            continue
        paths += _save(fig, out_dir, f"pareto-{_slug(model)}", formats)
    return paths


# -- fronts: fidelity against budget, per policy ---------------------------------------------------
def _budget(row: dict, x: str) -> float | None:
    """The row's budget as a fraction of the uncached one: NFE (x = "nfe") or FLOPs without attention."""
    if x == "nfe":
        return row["nfe"] / row["nfe_ref"] if row.get("nfe") is not None and row.get("nfe_ref") else None
    ref, cur = row.get("pflops_ref_no_attn"), row.get("pflops_no_attn")
    return cur / ref if ref and cur is not None else None


def policy_front(points: Sequence[tuple[float, float]], minimize_y: bool) -> list[tuple[float, float]]:
    """A policy's front: its points sorted by budget, the best fidelity kept where two share a budget."""
    best: dict[float, float] = {}
    for b, y in points:
        best[b] = y if b not in best else (min if minimize_y else max)(best[b], y)
    return sorted(best.items())


def front_areas(fronts: dict[str, list[tuple[float, float]]]) -> tuple[tuple[float, float] | None, dict[str, float]]:
    """((lo, hi), area per policy): the area under each front (piecewise linear between its points) over the
    budget range every front with two or more points covers; (None, {}) when they share no range."""
    spans = {p: (f[0][0], f[-1][0]) for p, f in fronts.items() if len(f) >= 2 and f[-1][0] > f[0][0]}
    if not spans:
        return None, {}
    lo, hi = max(s[0] for s in spans.values()), min(s[1] for s in spans.values())
    if hi <= lo:
        return None, {}
    areas = {}
    for policy in spans:
        xs, ys = zip(*fronts[policy])
        grid = sorted({lo, hi, *(b for b in xs if lo < b < hi)})
        vals = [_interp(b, xs, ys) for b in grid]
        areas[policy] = sum((grid[k + 1] - grid[k]) * (vals[k] + vals[k + 1]) / 2 for k in range(len(grid) - 1))
    return (lo, hi), areas


def _interp(b: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    for k in range(len(xs) - 1):
        if xs[k] <= b <= xs[k + 1]:
            w = (b - xs[k]) / (xs[k + 1] - xs[k]) if xs[k + 1] > xs[k] else 0.0
            return ys[k] + w * (ys[k + 1] - ys[k])
    raise ValueError(f"{b} outside [{xs[0]}, {xs[-1]}]")


def front_figure(model: str, rows: list[dict], x: str = "nfe") -> tuple[object | None, list[str]]:
    """Fidelity against budget, one front per policy with 95% interval bars; (figure or None, area notes)."""
    mine = [r for r in rows if _budget(r, x) is not None]
    panels = [(m, label, minimize) for m, label, minimize in
              (("psnr", "PSNR dB (higher is better)", False), ("lpips", "LPIPS (lower is better)", True))
              if any(r.get(m) is not None for r in mine)]
    if not panels:
        return None, []
    fig = _figure(4.6 * len(panels) + 1.6, 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = _colors({r["policy"] for r in mine})
    axis = "NFE fraction (NFE / uncached NFE)" if x == "nfe" else "FLOPs fraction (FLOPs / uncached, no attention)"
    lines = []
    for ax, (metric, label, minimize) in zip(axes, panels):
        fronts = {}
        for policy in colors:
            sel = sorted(((_budget(r, x), r) for r in mine if r["policy"] == policy and r.get(metric) is not None),
                         key=lambda br: br[0])
            if not sel:
                continue
            bs = [b for b, _ in sel]
            ys = [r[metric] for _, r in sel]
            lo = [r[metric] - r[f"{metric}_lo"] if r.get(f"{metric}_lo") is not None else 0.0 for _, r in sel]
            hi = [r[f"{metric}_hi"] - r[metric] if r.get(f"{metric}_hi") is not None else 0.0 for _, r in sel]
            ax.errorbar(bs, ys, yerr=[lo, hi], color=colors[policy], marker="o", ms=4, lw=0, elinewidth=1,
                        capsize=2, label=policy, zorder=3)
            front = policy_front(list(zip(bs, ys)), minimize_y=minimize)
            ax.plot(*zip(*front), color=colors[policy], lw=1.3, zorder=2)
            fronts[policy] = front
        span, areas = front_areas(fronts)
        if span is not None:
            ax.axvspan(*span, color="0.9", zorder=0)
            width = span[1] - span[0]
            lines.append(f"fronts {model} {metric} over {x} fraction {span[0]:.3f}-{span[1]:.3f}: "
                         + ", ".join(f"{p} area {a:.4g} (mean {a / width:.4g})"
                                     for p, a in sorted(areas.items(), key=lambda pa: pa[1], reverse=not minimize)))
        else:
            lines.append(f"fronts {model} {metric}: no budget range common to two or more fronts of 2+ points; no area")
        ax.set_xlabel(axis)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    _legend_outside(fig, axes)
    fig.suptitle(f"{model}: fidelity vs budget (bars: 95% bootstrap intervals; grey: common range)",
                 fontsize=9)
    return fig, lines


def plot_fronts(records: list[dict], out_dir: Path, x: str = "nfe", formats: Sequence[str] = FORMATS,
                notes: list[str] | None = None) -> list[Path]:
    """``fronts-<model>``: every policy's front from sweeps or matches; the areas go to ``notes``."""
    from .tables import aggregate

    notes = notes if notes is not None else []
    rows = [r for r in aggregate(records) if r["policy"] != "none"]
    paths = []
    for model in sorted({r["model"] for r in rows}):
        fig, lines = front_figure(model, [r for r in rows if r["model"] == model], x)
        notes += lines
        if fig is not None:
            paths += _save(fig, out_dir, f"fronts-{_slug(model)}", formats)
    return paths


# -- decision traces ------------------------------------------------------------------------------
def trace_matrix(records: list[dict]) -> tuple[list[list[float]], list[str]]:
    """Rows = (video, branch), columns = steps; 1 computed, blocks/total for a partial call, 0 reused."""
    total_blocks = max([c.get("blocks", 0) for r in records for c in r.get("trace", [])] + [1])
    keyed: dict[tuple, dict[int, float]] = defaultdict(dict)
    steps = 0
    for r in sorted(records, key=lambda r: (r.get("prompt_index", 0), r.get("seed", 0))):
        for c in r.get("trace", []):
            value = 1.0 if c.get("computed") else c.get("blocks", 0) / total_blocks
            keyed[(r.get("prompt_index", 0), r.get("seed", 0), c["branch"])][c["step"]] = value
            steps = max(steps, c["step"] + 1)
    labels = [f"p{p} s{s} {b}" for p, s, b in keyed]
    matrix = [[cells.get(k, math.nan) for k in range(steps)] for cells in keyed.values()]
    return matrix, labels


def plot_traces(records: list[dict], out_dir: Path, formats: Sequence[str] = FORMATS,
                notes: list[str] | None = None) -> list[Path]:
    notes = notes if notes is not None else []
    groups: dict[str, dict[tuple, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["policy"] != "none" and r.get("trace"):
            groups[r["model"]][(r["policy"], r["setting"])].append(r)
    paths = []
    for model in sorted(groups):
        settings = sorted(groups[model])
        mats = [trace_matrix(groups[model][key]) for key in settings]
        heights = [max(1, len(m[0])) for m in mats]
        fig = _figure(7.5, 0.9 + sum(0.16 * h + 0.5 for h in heights))
        axes = fig.subplots(len(settings), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
        for ax, key, (matrix, labels) in zip(axes, settings, mats):
            recs = groups[model][key]
            nfe = sum(r["nfe"] for r in recs) / len(recs)
            ref = sum(r["reference"]["nfe"] for r in recs) / len(recs)
            ax.imshow(matrix, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{key[0]} ({key[1]}): NFE {nfe:.1f} of {ref:.0f}", fontsize=8, loc="left")
            if len(labels) <= 24:
                ax.set_yticks(range(len(labels)), labels, fontsize=6)
            else:
                ax.set_yticks([])
                ax.set_ylabel(f"{len(labels)} video x branch rows", fontsize=6)
            ax.tick_params(axis="x", labelsize=6)
        axes[-1].set_xlabel("denoising step (black: computed, grey: some blocks, white: reused)", fontsize=8)
        fig.suptitle(f"{model}: decision traces", fontsize=10)
        paths += _save(fig, out_dir, f"traces-{_slug(model)}", formats)
    if not groups:
        notes.append("traces: no cached runs with a decision trace")
    return paths


# -- sensitivity profiles -------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise BenchError(f"cannot read {path}: {err.__class__.__name__}: {err}") from None


def plot_profiles(profile_paths: Sequence[Path], out_dir: Path, formats: Sequence[str] = FORMATS,
                  stem: str = "profile") -> list[Path]:
    from ..calibration.profile import PROFILE_KIND

    profiles = []
    for path in profile_paths:
        data = _read_json(path)
        if data.get("kind") != PROFILE_KIND or not all(k in data for k in ("timesteps", "Jx", "Jt")):
            raise BenchError(f"{path} is not a sensitivity profile (no kind: {PROFILE_KIND} with timesteps, Jx, Jt); "
                             f"make one with `sencache-bench calibrate SPEC.yaml`")
        profiles.append((Path(path), data))
    profiles.sort(key=lambda pd: pd[1].get("samples") or 0)
    fig = _figure(10.0, 3.8)
    axes = fig.subplots(1, 2)
    for k, (path, data) in enumerate(profiles):
        n = data.get("samples") or max(data.get("counts") or [0])
        label = f"n = {n} samples ({path.name})"
        t = data["timesteps"]
        for ax, key in zip(axes, ("Jx", "Jt")):
            ax.plot(t, data[key], marker="o", ms=3, color=f"C{k}", label=label)
            rows = (data.get("per_sample") or {}).get(key) or []
            cols = list(zip(*rows)) if rows else []
            if cols and len(cols) == len(t):
                lo = [min((v for v in col if v is not None), default=math.nan) for col in cols]
                hi = [max((v for v in col if v is not None), default=math.nan) for col in cols]
                ax.fill_between(t, lo, hi, color=f"C{k}", alpha=0.15, lw=0)
    for ax, key in zip(axes, ("Jx", "Jt")):
        values = [v for _, d in profiles for v in d[key]]
        if values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_xlim(max(max(d["timesteps"]) for _, d in profiles), min(min(d["timesteps"]) for _, d in profiles))
        ax.set_xlabel("timestep t (sampling runs left to right)")
        ax.set_ylabel(f"{key}(t)" + (": sensitivity to the latent" if key == "Jx" else ": sensitivity to t"))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    model = profiles[0][1].get("model", "") if profiles else ""
    fig.suptitle(f"SenCache sensitivity profile{'s' if len(profiles) > 1 else ''} {model} "
                 f"(band: per-sample min..max)", fontsize=10)
    return _save(fig, out_dir, stem, formats)


# -- consecutive-step output change ---------------------------------------------------------------
def load_output_changes(results_dir: Path) -> dict[str, list[dict]]:
    """Per model, the ``output_change`` of every reference under ``results_dir`` that recorded one."""
    out: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(Path(results_dir).rglob("references/*.json")):
        try:
            meta = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("kind") == "reference" and (meta.get("output_change") or {}).get("branches"):
            out[meta.get("model", "?")].append(meta["output_change"])
    return out


def plot_output_change(results_dir: Path, out_dir: Path, formats: Sequence[str] = FORMATS,
                       notes: list[str] | None = None) -> list[Path]:
    notes = notes if notes is not None else []
    changes = load_output_changes(results_dir)
    if not changes:
        notes.append(f"output change: no reference under {results_dir} recorded output_change (references made "
                     f"before it was recorded: delete references/ and rerun to record it)")
    paths = []
    for model, items in sorted(changes.items()):
        fig = _figure(10.0, 3.8)
        axes = fig.subplots(1, 2)
        branches = sorted({b for item in items for b in item["branches"]})
        for k, branch in enumerate(branches):
            series = [item["branches"][branch] for item in items if branch in item["branches"]]
            for ax, key in zip(axes, ("mean_abs", "rel_l1")):
                for s in series:
                    ax.plot(s["t"], s[key], color=f"C{k}", alpha=0.25, lw=0.8)
                by_step: dict[int, list[tuple[float, float]]] = defaultdict(list)
                for s in series:
                    for step, t, v in zip(s["step"], s["t"], s[key]):
                        by_step[step].append((t, v))
                steps = sorted(by_step)
                ax.plot([sum(t for t, _ in by_step[i]) / len(by_step[i]) for i in steps],
                        [sum(v for _, v in by_step[i]) / len(by_step[i]) for i in steps],
                        color=f"C{k}", lw=2, marker="o", ms=3, label=f"{branch} (mean of {len(series)})")
        for ax, label in zip(axes, ("mean |f(x_tk,tk) - f(x_tk-1,tk-1)|", "relative L1 change")):
            ax.invert_xaxis()
            ax.set_xlabel("timestep t_k (sampling runs left to right)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{model}: consecutive-step output change of the uncached references", fontsize=10)
        paths += _save(fig, out_dir, f"output-change-{_slug(model)}", formats)
    return paths


# -- frames ---------------------------------------------------------------------------------------
def plot_frames(results_dir: Path, out_dir: Path, prompt_index: int, seed: int | None = None, columns: int = 6,
                formats: Sequence[str] = FORMATS) -> list[Path]:
    """A frame strip per policy run of one prompt: the uncached reference on top, then each cached video.

    The reference comes from its lossless frames, the runs from their saved mp4 files.
    """
    import numpy as np

    from ..metrics.video_io import read_video
    from .store import load_records, load_reference

    records, _ = load_records(results_dir)
    chosen = [r for r in records if r["prompt_index"] == prompt_index and (seed is None or r["seed"] == seed)
              and r.get("video") and Path(r["video"]).is_file()]
    if not chosen:
        raise BenchError(f"no run with a saved video for prompt {prompt_index} under {results_dir}")
    chosen.sort(key=lambda r: (r["policy"] != "none", r["policy"], r["setting"]))
    first = chosen[0]
    base = results_dir / "references" / first["reference"]["key"]
    found = load_reference(base.with_suffix(".json"), base.with_suffix(".npz"))  # checked, never a damaged one
    if found is None:
        raise BenchError(f"reference {base} is missing or damaged: rerun its spec to remake it")
    ref = found[1]
    idx = np.linspace(0, len(ref) - 1, min(columns, len(ref))).round().astype(int)
    rows = [("uncached\nreference", ref)]
    rows += [(f"{r['policy']}\nNFE {r['nfe']:g}\nPSNR {r['metrics'].get('psnr', 0):.1f}", read_video(r["video"]))
             for r in chosen if r["policy"] != "none"]
    fig = _figure(1.3 * len(idx), 1.45 * len(rows))
    axes = fig.subplots(len(rows), len(idx), squeeze=False)
    for i, (label, video) in enumerate(rows):
        for j, f in enumerate(idx):
            ax = axes[i][j]
            ax.imshow(video[f])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"frame {f}", fontsize=7)
        axes[i][0].set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    fig.suptitle(f"{first['model']}: {first['prompt']!r} (seed {first['seed']})", fontsize=8)
    return _save(fig, out_dir, f"frames-{_slug(first['model'])}-p{prompt_index}", formats)


def plot_results(results_dir: Path, out_dir: Path, x: str = "speedup", formats: Sequence[str] = FORMATS
                 ) -> tuple[list[Path], list[str]]:
    """Every results figure: Pareto and traces per model, the references' output change; (paths, notes)."""
    from .store import load_records

    records, problems = load_records(results_dir)
    notes = list(problems)
    if not records:
        notes.append(f"no run records under {results_dir}: no Pareto or trace plots")
    paths = plot_pareto(records, out_dir, x, formats, notes) if records else []
    paths += plot_fronts(records, out_dir, "nfe" if x == "speedup" else "flops", formats, notes) if records else []
    paths += plot_traces(records, out_dir, formats, notes) if records else []
    paths += plot_output_change(results_dir, out_dir, formats, notes)
    return paths, notes
