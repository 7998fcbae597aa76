"""SemCache's temporal motion metric (TMM): per-frame motion scores, which frames a computed call computes,
and the token selection that gathers the kept tokens at the head block and scatters them back at the tail
(equations in the package docstring, :mod:`sencache_bench.policies.semcache`)."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .measures import EPS


def motion_scores(frames: torch.Tensor, previous: torch.Tensor | None = None) -> np.ndarray:
    """S_m per frame of ``frames`` (B, F, D): against the preceding frame (``previous`` None; frame 0 gets NaN)
    or against the same frame of ``previous`` (B, F, D)."""
    x = frames.float()
    if previous is None:
        cur, prev = x[:, 1:], x[:, :-1]
    else:
        cur, prev = x, previous.float()
    num = torch.linalg.vector_norm(cur - prev, dim=(0, 2))
    den = torch.linalg.vector_norm(cur, dim=(0, 2)) + torch.linalg.vector_norm(prev, dim=(0, 2)) + EPS
    scores = (num / den).cpu().double().numpy()
    return np.concatenate([[np.nan], scores]) if previous is None else scores


def percentile(values: list[float], percent: float) -> float:
    """``np.percentile(values, percent)`` (method "linear") of finite values, by numpy's own float operations
    (numpy 2's ``_quantile`` and ``_lerp``): index (n - 1) * (percent / 100), and between neighbours a and b at
    fraction g, ``a + (b - a) g`` for g < 0.5, ``b - (b - a)(1 - g)`` otherwise. Pure Python: numpy's call costs
    ~30 us for a handful of frames, on every computed call."""
    s = sorted(values)
    index = (len(s) - 1) * (percent / 100)
    if index >= len(s) - 1:
        return s[-1]
    low = math.floor(index)
    a, b, g = s[low], s[low + 1], index - low
    return a + (b - a) * g if g < 0.5 else b - (b - a) * (1 - g)


def frames_to_keep(scores: np.ndarray, keep_ratio: float) -> list[int]:
    """Frames with S_m > tau (strictly), tau the (1 - r) * 100 percentile of the finite scores; NaN frames always
    kept. Every frame with r = 1, or when none exceeds tau (all scores equal)."""
    values = scores.tolist()
    finite = [math.isfinite(v) for v in values]
    if not any(finite) or keep_ratio >= 1.0:
        return list(range(len(values)))
    tau = percentile([v for v, ok in zip(values, finite) if ok], (1.0 - keep_ratio) * 100.0)
    kept = [f for f, (v, ok) in enumerate(zip(values, finite)) if not ok or v > tau]
    return kept if any(finite[f] for f in kept) else list(range(len(values)))



class TokenSelection:
    """The kept video tokens of one call; ``take`` slices any per-token block input the same way (memoised, as
    every block receives the same RoPE table / mask objects)."""

    def __init__(self, keep: torch.Tensor, n_video: int, frames: list[int] | None = None):
        self.keep, self.n_video, self.frames = keep, n_video, frames
        self._memo: dict[tuple[int, int, bool], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def kept(self) -> int:
        return int(self.keep.numel())

    def _index(self, x: torch.Tensor, dim: int, tail: bool) -> torch.Tensor:
        index = self.keep.to(x.device)
        if tail:  # the sequence is [video, rest]: keep the rest
            index = torch.cat([index, torch.arange(self.n_video, x.shape[dim], device=x.device)])
        return index

    def take(self, x: torch.Tensor, dim: int, tail: bool = False) -> torch.Tensor:
        key = (id(x), dim, tail)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is x:
            return hit[1]
        out = x.index_select(dim, self._index(x, dim, tail))
        self._memo[key] = (x, out)
        return out

    def take_with_tail(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return self.take(x, dim, tail=True)

    def scatter(self, computed: torch.Tensor, full_input: torch.Tensor,
                residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(full output, full residual): kept tokens from ``computed``, the others ``input + cached residual``
        (zero without a cache); the residual is refreshed for the kept tokens only."""
        keep = self.keep.to(computed.device)
        old = residual if residual is not None else torch.zeros_like(full_input)
        out = full_input + old
        out.index_copy_(1, keep, computed.to(out.dtype))
        new = old.clone() if residual is not None else old  # the cached residual stays as it was
        new.index_copy_(1, keep, computed.to(new.dtype) - full_input.index_select(1, keep))
        return out, new


def forced_keep_first(tokens: int) -> Callable[[int, int], torch.Tensor]:
    """A ``force_keep`` that computes the first ``tokens`` video tokens (FLOPs depend on the count only)."""
    return lambda frames, per_frame: torch.arange(tokens)


def forced_keep_frames(frames: list[int]) -> Callable[[int, int], torch.Tensor]:
    """A ``force_keep`` that computes the given post-patch frames."""
    return lambda n, per_frame: torch.cat([torch.arange(f * per_frame, (f + 1) * per_frame) for f in frames])
