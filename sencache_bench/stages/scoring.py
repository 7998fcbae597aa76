"""Stage 5, scoring: the policy run's frames against its reference's, in the spec's fidelity metrics."""

from __future__ import annotations

import numpy as np

from ..metrics.fidelity import compute_fidelity
from ..spec import ResolvedSpec


def score(spec: ResolvedSpec, reference: np.ndarray, frames: np.ndarray) -> dict:
    """The record's fidelity fields: each metric over the video and per frame, notes, and bit-identity."""
    fidelity = compute_fidelity(reference, frames, spec.metrics, device=spec.device)
    return {"metrics": fidelity.values, "metric_notes": fidelity.notes, "metrics_per_frame": fidelity.per_frame,
            "identical_to_reference": bool(np.array_equal(reference, frames))}
