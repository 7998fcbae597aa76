"""Score any two folders of videos: pair by file name, then LPIPS / SSIM / PSNR with the run's own code.

Videos are paired by their path relative to each folder without the extension (``a/b.mp4`` pairs
with ``a/b.mp4`` or ``a/b.webm``), and this harness's run videos (``p000-s0-<key>.mp4``) with their
references (``<key>.mp4``). Each pair is decoded to uint8 RGB and scored by
:func:`sencache_bench.metrics.fidelity.compute_fidelity`, the function ``run`` uses. A pair that
cannot be scored (missing partner, unreadable file, different shapes, frames too small for a metric,
two files with one name) gets one problem line and is left out; the others are still scored.
The mean is over the scored videos of each video's mean over frames.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..metrics.definitions import FIDELITY_METRICS

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".gif")
SCORE_METRICS = ("lpips", "ssim", "psnr")  # the default
#: every fidelity metric ``score --metrics`` accepts (metrics/definitions.py; imports nothing heavy)
SCORE_CHOICES = FIDELITY_METRICS


@dataclass
class ScoreReport:
    ref_dir: str
    gen_dir: str
    metrics: list[str]
    rows: list[dict] = field(default_factory=list)  # name, frames, height, width, and one value per metric
    mean: dict[str, float | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"kind": "score", "reference_dir": self.ref_dir, "generated_dir": self.gen_dir,
                "metrics": self.metrics, "aggregation": "mean over videos of each video's mean over frames",
                "videos": self.rows, "scored": len(self.rows), "mean": self.mean, "problems": self.problems,
                "notes": self.notes}


def _videos(folder: Path) -> tuple[dict[str, Path], list[str]]:
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES and not path.name.startswith("."):
            found.setdefault(path.relative_to(folder).with_suffix("").as_posix(), []).append(path)
    problems = [f"ambiguous name {key!r} in {folder}: {', '.join(p.name for p in paths)}; skipped"
                for key, paths in found.items() if len(paths) > 1]
    return {key: paths[0] for key, paths in found.items() if len(paths) == 1}, problems


# A run video of this harness: runs/<policy>-<setting>/p<prompt>-s<seed>-<reference key>.mp4; its reference
# is references/<reference key>.mp4 (runner.Runner.record_path and reference).
HARNESS_RUN = re.compile(r"(?:^|/)p\d+-s-?\d+-(?P<key>[0-9a-f]{12})$")


def pair_videos(ref_dir: Path, gen_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """(name, reference, generated) for every name in both folders, and one line per unpaired or ambiguous one.

    Besides equal names, a generated video named as this harness names its runs (``p000-s0-<key>``, in
    any subfolder) pairs with the reference named ``<key>``: ``score RESULTS/references RESULTS/runs``.
    """
    refs, problems = _videos(Path(ref_dir))
    gens, more = _videos(Path(gen_dir))
    problems += more
    pairs = [(key, refs[key], gens[key]) for key in sorted(set(refs) & set(gens))]
    used, matched = set(refs) & set(gens), set(refs) & set(gens)
    for name in sorted(set(gens) - matched):
        m = HARNESS_RUN.search(name)
        if m and m["key"] in refs:
            pairs.append((name, refs[m["key"]], gens[name]))
            used.add(m["key"])
            matched.add(name)
    for key in sorted(set(refs) - used):
        problems.append(f"missing pair: {refs[key].relative_to(ref_dir)} has no generated video named {key}.* "
                        f"in {gen_dir}")
    for key in sorted(set(gens) - matched):
        problems.append(f"missing pair: {gens[key].relative_to(gen_dir)} has no reference video named {key}.* "
                        f"in {ref_dir}")
    return sorted(pairs), problems


def score_dirs(ref_dir: Path, gen_dir: Path, metrics: Sequence[str] = SCORE_METRICS, lpips_model=None,
               on_video: Callable[[str], None] | None = None) -> ScoreReport:
    from ..metrics.fidelity import compute_fidelity
    from ..metrics.video_io import VideoReadError, read_video

    report = ScoreReport(str(ref_dir), str(gen_dir), list(metrics))
    pairs, report.problems = pair_videos(Path(ref_dir), Path(gen_dir))
    for name, ref_path, gen_path in pairs:
        if on_video:
            on_video(name)
        try:
            ref, gen = read_video(ref_path), read_video(gen_path)
        except VideoReadError as err:
            report.problems.append(f"unreadable: {err}; {name} skipped")
            continue
        if ref.shape != gen.shape:
            report.problems.append(f"shape mismatch: {name}: reference {_shape(ref.shape)} vs generated "
                                   f"{_shape(gen.shape)} (frames x height x width); skipped")
            continue
        try:
            fid = compute_fidelity(ref, gen, metrics, lpips_model=lpips_model)
        except ValueError as err:
            report.problems.append(f"cannot score {name}: {err}; skipped")
            continue
        report.notes.update(fid.notes)
        report.rows.append({"name": name, "frames": int(ref.shape[0]), "height": int(ref.shape[1]),
                            "width": int(ref.shape[2]), **{m: fid.values.get(m) for m in metrics}})
    for m in metrics:
        values = [r[m] for r in report.rows if r.get(m) is not None]
        report.mean[m] = sum(values) / len(values) if values else None
    return report


def _shape(shape) -> str:
    return "x".join(str(s) for s in shape[:3])


def _fmt(metric: str, value) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if metric.startswith("psnr") else f"{value:.4f}"


def render_score(report: ScoreReport, fmt_name: str):
    from .tables import render_cells

    if fmt_name == "json":
        return json.dumps(report.to_json(), indent=1)
    headers = ["video", "frames", "size", *report.metrics]
    cells = [[r["name"], str(r["frames"]), f"{r['height']}x{r['width']}", *[_fmt(m, r[m]) for m in report.metrics]]
             for r in report.rows]
    cells.append([f"mean ({len(report.rows)} videos)", "", "", *[_fmt(m, report.mean.get(m)) for m in report.metrics]])
    notes = [] if fmt_name == "csv" else ["Per video: the mean over frames; mean: over the scored videos."]
    return render_cells(headers, cells, fmt_name, left=1, breaks=(len(cells) - 1,), notes=notes)
