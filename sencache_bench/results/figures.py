"""How every figure is drawn and saved: matplotlib's object API (``Figure``, no pyplot: no global backend
state), constrained layout, one colour per policy, the legend outside the axes, PNG and SVG without dates."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import BenchError

FORMATS = ("png", "svg")


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dev/plots extra
        raise BenchError("plots need matplotlib: pip install 'sencache-bench[plots]' (or matplotlib)") from None
    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, out_dir: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in formats:
        path = out_dir / f"{stem}.{ext}"
        meta = {"Date": None} if ext == "svg" else {"Software": None}
        fig.savefig(path, dpi=110, metadata=meta)
        paths.append(path)
    return paths


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def _colors(policies: Sequence[str]) -> dict[str, str]:
    return {p: f"C{i % 10}" for i, p in enumerate(sorted(policies))}


def _legend_outside(fig, axes) -> None:
    """One legend for the figure, right of the axes (never over the data), one entry per label."""
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if labels:
        fig.legend([handles[lab] for lab in labels], labels, loc="outside right center", fontsize=7, frameon=False)
