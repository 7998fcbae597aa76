"""`sencache-bench report RESULTS_DIR`: one self-contained HTML page of a results folder (docs/report.md).

Sections: the comparison tables with their verdicts (the rich Tables of ``sencache-bench table``, converted cell for
cell: results/report_html.py), the Pareto and front figures (results/plots.py), per (policy, setting) a few videos
beside their uncached reference and the amplified absolute difference, playing in sync, the decision traces as a
raster, and the provenance the records hold (versions, device, sampling, specs). Everything is inlined (CSS, the
script, PNG figures and WebM videos as data URIs: results/report_media.py), so the file opens from disk offline.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from html import escape
from pathlib import Path

from ..errors import BenchError

#: videos shown per (model, policy, setting) by default, and the video x branch rows of a trace raster
VIDEOS = 2
TRACE_VIDEOS = 6


def table_layouts(records: list[dict]) -> list[str]:
    """The layouts that apply: ``matched`` for records of ``sencache-bench match``, the two paper layouts, ``fronts``
    when two policies each have several budgets, and the ``default`` and ``pairs`` layouts (the full numbers)."""
    from .fronts import front_rows

    layouts = ["matched"] if any(r.get("match") for r in records) else []
    layouts += ["sencache", "semcache"]
    if front_rows(records):
        layouts.append("fronts")
    return layouts + ["pairs", "default"]


def tables_html(records: list[dict]) -> str:
    from .. import api
    from .report_html import rich_table_html

    parts = []
    for layout in table_layouts(records):
        html = rich_table_html(api.table(records, layout=layout, format="rich", intervals=True), f"table-{layout}")
        label = f"<h3>--layout {layout}</h3>"
        if layout in ("pairs", "default"):  # long: folded, one click away
            parts.append(f"<details><summary>{label}</summary>{html}</details>")
        else:
            parts.append(label + html)
    return "".join(parts)


def figures_html(records: list[dict], notes: list[str]) -> str:
    """Per model the speedup-vs-fidelity Pareto figure and the fidelity-vs-NFE fronts (results/plots.py)."""
    from .plots import front_figure, pareto_figure
    from .report_media import figure_uri
    from .tables import aggregate

    rows = [r for r in aggregate(records) if r["policy"] != "none"]
    parts = []
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        try:
            pareto = pareto_figure(model, mine, "speedup")
            fronts, lines = front_figure(model, mine, "nfe")
        except BenchError as err:  # matplotlib missing: the figures say why, the rest of the page stands
            notes.append(f"figures: {err}")
            return f"<p>{escape(str(err))}</p>"
        for name, fig in (("Pareto", pareto), ("fronts", fronts)):
            if fig is None:
                parts.append(f"<p>{escape(model)}: no {name} figure (no LPIPS or PSNR values).</p>")
            else:
                parts.append(f'<img class="figure" alt="{escape(model)} {name}" src="{figure_uri(fig)}">')
        parts += [f'<p class="notes">{escape(line)}</p>' for line in lines]
    return "".join(parts) or "<p>No cached runs to plot.</p>"


def _groups(records: list[dict]) -> dict[tuple, list[dict]]:
    """Cached records per (model label, policy, setting), each group sorted by (prompt, seed)."""
    from .tables import model_labels

    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec, model in zip(records, model_labels(records)):
        if rec["policy"] != "none":
            groups[(model, rec["policy"], rec["setting"])].append(rec)
    return {k: sorted(v, key=lambda r: (r.get("prompt_index", 0), r.get("seed", 0))) for k, v in sorted(groups.items())}


def _reference_frames(rec: dict):
    """The reference's lossless frames (``references/<key>.npz`` of the record's output folder), else None."""
    from .store import read_frames

    path = Path(rec["_path"]).parents[2] / "references" / f"{rec['reference']['key']}.npz"
    try:
        return read_frames(path)
    except Exception:  # noqa: BLE001 - missing or damaged: the clip is left out and the notes say so
        return None


def _video_path(rec: dict) -> Path | None:
    """The run's mp4: beside its record (a relative ``video`` path was relative to where the run was started)."""
    beside = Path(rec["_path"]).with_suffix(".mp4")
    if beside.is_file():
        return beside
    return Path(rec["video"]) if rec.get("video") and Path(rec["video"]).is_file() else None


def _metric_line(rec: dict) -> str:
    m = rec.get("metrics") or {}
    shown = [f"{k.upper()} {m[k]:.4g}" for k in ("psnr", "ssim", "lpips") if isinstance(m.get(k), (int, float))]
    return ", ".join([f"NFE {rec['nfe']:g} of {rec['reference']['nfe']:g}", *shown])


def clip_html(rec: dict, ref, cached, fps: float, ref_uri: str) -> str:
    """One synced group: reference (``ref_uri``: already encoded), cached video and |difference| x gain, with the
    play button and a seek bar."""
    from .report_media import DIFF_GAIN, difference, video_uri

    uris = [("reference", ref_uri), (rec["policy"], video_uri(cached, fps)),
            (f"|difference| x {DIFF_GAIN}", video_uri(difference(cached, ref), fps))]
    figs = "".join(f'<figure><video data-name="{escape(name)}" muted loop playsinline preload="auto" '
                   f'src="{uri}"></video><figcaption>{escape(name)}</figcaption></figure>' for name, uri in uris)
    meta = f"p{rec.get('prompt_index', 0)} seed {rec.get('seed')}: {rec.get('prompt', '')!r}; {_metric_line(rec)}"
    return (f'<div class="clip" data-fps="{fps:g}"><div class="row">{figs}</div>'
            f'<div><button type="button">play</button> <input type="range" min="0" max="1" step="0.001" value="0" '
            f'aria-label="seek"></div><div class="meta">{escape(meta)}</div></div>')


def videos_html(records: list[dict], per_group: int, notes: list[str]) -> str:
    from ..metrics.video_io import VideoReadError, read_video
    from .report_media import video_uri

    parts = [f'<p id="video-status">videos: none</p><p class="notes">Per (policy, setting) the first {per_group} '
             "videos by prompt and seed: the uncached reference (its lossless frames), the cached run (its saved "
             "mp4, decoded) and their absolute difference amplified (which includes the mp4's coding noise). VP9 "
             "WebM, resized for viewing; each group plays in sync.</p>"]
    encoded: dict[tuple, str] = {}
    for (model, policy, setting), recs in _groups(records).items():
        clips = []
        for rec in recs:
            if len(clips) == per_group:
                break
            path, ref = _video_path(rec), _reference_frames(rec)
            if path is None or ref is None:
                notes.append(f"videos: {Path(rec['_path']).name} left out (no saved video or reference frames)")
                continue
            try:
                cached = read_video(path)
            except VideoReadError as err:
                notes.append(f"videos: {err}")
                continue
            fps = float((rec.get("sampling") or {}).get("fps") or 8)
            key = (rec["reference"]["key"], fps)
            if key not in encoded:  # a reference shown beside several settings is encoded once
                encoded[key] = video_uri(ref, fps)
            clips.append(clip_html(rec, ref, cached, fps, encoded[key]))
        if clips:
            parts.append(f"<h3>{escape(model)}: {escape(policy)} ({escape(setting)})</h3>"
                         f'<div class="clips">{"".join(clips)}</div>')
    return "".join(parts)


def traces_html(records: list[dict], per_group: int = TRACE_VIDEOS) -> str:
    """Per (policy, setting) the raster of its first videos' decisions: rows video x CFG branch, columns steps."""
    from .plots import trace_matrix
    from .report_media import trace_svg

    parts = ['<p class="notes">Black: computed; grey: a share of the transformer blocks computed; white: reused; '
             f"red: no call at that step. The first {per_group} videos of each (policy, setting).</p>"]
    for (model, policy, setting), recs in _groups(records).items():
        shown = [r for r in recs if r.get("trace")][:per_group]
        if not shown:
            continue
        matrix, labels = trace_matrix(shown)
        nfe = sum(r["nfe"] for r in recs) / len(recs)
        ref = sum(r["reference"]["nfe"] for r in recs) / len(recs)
        parts.append(f"<h3>{escape(model)}: {escape(policy)} ({escape(setting)}): NFE {nfe:.2f} of {ref:g}</h3>"
                     + trace_svg(matrix, labels))
    return "".join(parts)


def _distinct(records: list[dict], get: Callable[[dict], object]) -> str:
    values = sorted({json.dumps(get(r), sort_keys=True) if not isinstance(get(r), str) else get(r) for r in records
                     if get(r) is not None})
    return "; ".join(values) or "-"


def provenance_html(records: list[dict], results: Path) -> str:
    """What produced these numbers, as the records hold it: versions, device, dtype, sampling, specs, dates."""
    from .. import __version__

    libs = sorted({k for r in records for k in (r.get("versions") or {})})
    rows = [("results folder", str(results)), ("run records", str(len(records))),
            ("models", _distinct(records, lambda r: r["model"])),
            ("families", _distinct(records, lambda r: r.get("family"))),
            ("weights source", _distinct(records, lambda r: r.get("source"))),
            ("device", _distinct(records, lambda r: f"{r.get('device')} ({r.get('device_name')})")),
            ("dtype", _distinct(records, lambda r: r.get("dtype"))),
            ("sampling", _distinct(records, lambda r: r.get("sampling"))),
            ("timing", _distinct(records, lambda r: (r.get("spec") or {}).get("timing"))),
            ("records created", f"{min(r.get('created', '') for r in records)} to "
                                f"{max(r.get('created', '') for r in records)}"),
            *((f"version: {lib}", _distinct(records, lambda r, lib=lib: (r.get("versions") or {}).get(lib)))
              for lib in libs),
            ("report written by", f"sencache_bench {__version__}")]
    table = "".join(f'<tr><th class="l">{escape(k)}</th><td class="l">{escape(v)}</td></tr>' for k, v in rows)
    specs: dict[str, dict] = {}
    for r in records:
        specs.setdefault(r.get("spec_hash") or json.dumps(r.get("spec"), sort_keys=True), r)
    spec_parts = []
    for r in specs.values():
        extra = {"match": {k: v for k, v in r["match"].items() if k != "probes"}} if r.get("match") else {}
        source = f", from {r['spec_path']}" if r.get("spec_path") else ""
        body = escape(json.dumps({"spec": r.get("spec"), **extra}, indent=1))
        spec_parts.append(f"<details><summary>{escape(r['policy'])} ({escape(r['setting'])}), spec "
                          f"{escape(str(r.get('spec_hash')))}{escape(source)}</summary><pre>{body}</pre></details>")
    return f'<table class="results">{table}</table><h3>Specs</h3>{"".join(spec_parts)}'


def build_report(records: list[dict], results: Path, videos: int = VIDEOS) -> tuple[str, list[str]]:
    """(the page's HTML, notes on what was left out)."""
    from .report_html import page

    if videos < 0:
        raise BenchError(f"--videos: give 0 or more videos per policy setting (got {videos})")
    notes: list[str] = []
    sections = [("tables", "Tables", tables_html(records)), ("figures", "Figures", figures_html(records, notes))]
    if videos:
        sections.append(("videos", "Videos", videos_html(records, videos, notes)))
    sections += [("traces", "Decision traces", traces_html(records)),
                 ("provenance", "Provenance", provenance_html(records, results))]
    if notes:
        sections.append(("notes", "Notes", "".join(f"<p>{escape(n)}</p>" for n in notes)))
    return page(f"sencache-bench report: {results.name or results}", sections), notes


def write_report(results: Path, out: Path | None = None, videos: int = VIDEOS,
                 log: Callable[[str], None] | None = None) -> Path:
    """Read the records under ``results``, write the page to ``out`` (default RESULTS_DIR/report.html)."""
    from .store import atomic_write_bytes, load_records

    results = Path(results)
    if not results.is_dir():
        raise BenchError(f"results directory {results} not found: run `sencache-bench run SPEC.yaml` first")
    records, problems = load_records(results)
    if not records:
        raise BenchError(f"no run records under {results}: run `sencache-bench run SPEC.yaml` first")
    html, notes = build_report(records, results, videos)
    out = Path(out) if out is not None else results / "report.html"
    atomic_write_bytes(out, html.encode())
    for line in problems + notes:
        if log is not None:
            log(f"note: {line}")
    return out
