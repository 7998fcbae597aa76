"""Verdicts of a table: its rows compared pairwise within each group (results/paired.py), per metric.

Every layout that ranks rows (matched, the paper layouts, pairs) takes its verdict from here: rank-group letters,
bold only for a row separated from every other row of its group, and one footnote that names n, the test, the
adjustment and the smallest difference the group's videos can separate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import paired
from .paired import GroupComparison

#: a metric's name in footnotes, and the unit its differences are stated in
NAMES = {"psnr": ("PSNR", " dB"), "ssim": ("SSIM", ""), "lpips": ("LPIPS", ""), "speedup": ("Speedup", "")}


@dataclass
class Verdicts:
    """Per (group, metric) the comparison of the group's rows; ``members``: the group's row indices."""

    groups: dict[tuple, list[int]]
    comparisons: dict[tuple[tuple, str], GroupComparison]

    def letter(self, row: int, metric: str) -> str:
        for group, members in self.groups.items():
            if row in members and (group, metric) in self.comparisons:
                return self.comparisons[(group, metric)].letters[members.index(row)]
        return ""

    def best(self, metric: str) -> set[int]:
        """Rows (global indices) separated from every other row of their group on ``metric``, best by mean."""
        out = set()
        for group, members in self.groups.items():
            comp = self.comparisons.get((group, metric))
            if comp is not None and comp.best is not None:
                out.add(members[comp.best])
        return out


def judge(rows: Sequence[dict], row_records: Sequence[Sequence[dict]], group: Callable[[dict], tuple],
          metrics: Sequence[str] = ("lpips", "psnr", "ssim", "speedup"), skip: Callable[[dict], bool] = lambda r: False
          ) -> Verdicts:
    """Compare the rows of each group (``group(row)``) pairwise on each metric. Rows for which ``skip`` is true
    (the uncached row of a paper layout) take no part. The displayed means are the rows' own (``row[metric]``)."""
    groups = paired.group_rows(rows, lambda r: ("__skip__",) if skip(r) else group(r))
    groups.pop(("__skip__",), None)
    comparisons = {}
    for key, members in groups.items():
        for metric in metrics:
            means = [rows[i].get(metric) for i in members]
            if all(m is None for m in means):
                continue
            comparisons[(key, metric)] = paired.compare_group([row_records[i] for i in members], metric,
                                                              means=means)
    return Verdicts(groups, comparisons)


def _fmt_diff(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric == "speedup":
        return f"{value:.3f}x"
    return f"{value:.2f}{NAMES[metric][1]}" if metric == "psnr" else f"{value:.4f}"


def _names(rows: Sequence[dict], members: list[int], label: Callable[[dict], str]) -> Callable[[int], str]:
    return lambda k: label(rows[members[k]])


def group_lines(rows: Sequence[dict], verdicts: Verdicts, label: Callable[[dict], str],
                title: Callable[[tuple], str], detect: dict[str, float] | None = None) -> list[str]:
    """One line per group: per metric the rank groups (best first), the separated best if any, and the smallest
    separable difference (and, for each ``detect`` metric, the videos needed for that difference)."""
    lines = []
    for key, members in verdicts.groups.items():
        parts = []
        for metric, (name, unit) in NAMES.items():
            comp = verdicts.comparisons.get((key, metric))
            if comp is None or len(members) < 2:
                continue
            name_of = _names(rows, members, label)
            if comp.best is not None:
                head = f"{name} best {name_of(comp.best)}"
            else:
                by_letter: dict[str, list[str]] = {}
                ranked = sorted((k for k in range(len(members)) if comp.means[k] is not None),
                                key=lambda k: comp.means[k], reverse=comp.better == "max")
                for k in ranked:
                    for ch in comp.letters[k] or "-":
                        by_letter.setdefault(ch, []).append(name_of(k))
                head = (f"{name} not separated ({', '.join(by_letter.popitem()[1])})" if len(by_letter) == 1 else
                        f"{name} groups " + "; ".join(f"{ch}: {', '.join(v)}" for ch, v in sorted(by_letter.items())))
            extra = []
            if comp.separable is not None:
                sep = (f"{math.expm1(comp.separable) * 100:.1f}%" if metric == "speedup"
                       else _fmt_diff(metric, comp.separable))
                extra.append(f"separable: {sep}")
            if detect and metric in detect:
                n = paired.videos_needed(comp.pairs, detect[metric])
                if n is not None:
                    extra.append(f"{n} videos for {detect[metric]:g}{unit}")
            no_claim = sum(p.p is None for p in comp.pairs)
            if no_claim:
                extra.append(f"{no_claim} pair(s) too few shared videos")
            parts.append(head + (f" ({'; '.join(extra)})" if extra else ""))
        if parts:
            lines.append(f"{title(key)}: " + "; ".join(parts) + ".")
    return lines


def method_note(n_videos: Sequence[int]) -> str:
    """The footnote that says how the verdict was reached."""
    n = sorted(set(n_videos))
    videos = f"{n[0]}" if len(n) == 1 else f"{n[0]}-{n[-1]}"
    return (f"Verdict: every pair of rows in a group compared on the videos both have (n = {videos} per row; the same "
            f"reference key), mean per-video difference with a seeded paired bootstrap ({paired.RESAMPLES} resamples, "
            f"two-sided p; speedup on the log scale); Holm-adjusted over the group's pairs at "
            f"{paired.ALPHA:g}; pairs sharing fewer than {paired.MIN_PAIRED} videos make no claim. Letters: rows "
            f"sharing a letter are not separated (a: the best mean's group); bold: a row separated from every other. "
            f"Separable: the smallest difference these videos separate at {paired.POWER:.0%} power (normal "
            f"approximation, Bonferroni's alpha / pairs, median spread of the pairs).")
