"""SemCache's error and threshold measures as pure functions of tensors (tested on hand-made values): PSA's
threshold p_s (magnitude, direction), Eq. 8's increment, and which attention layers PSA hooks. The package
docstring (:mod:`sencache_bench.policies.semcache`) gives the equations and the source."""

from __future__ import annotations

import math

import numpy as np
import torch

EPS = 1e-8


def _l1(x: torch.Tensor) -> float:
    return float(x.float().abs().sum())


def _l1s(*xs: torch.Tensor) -> list[float]:
    """``[_l1(x) for x in xs]`` with one read to the host instead of one per norm (a sync each on a GPU): the same
    float32 sums, stacked, then converted to Python floats as ``float()`` does."""
    return torch.stack([x.float().abs().sum() for x in xs]).tolist()


def _fro(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x.float()))


def magnitude(z_in: torch.Tensor, z_out: torch.Tensor, s_m: float,
              norms: tuple[float, float] | None = None) -> tuple[float, float]:
    """(M_raw, M_norm): relative change of the Frobenius norm through the layer, squashed by tanh(. / s_m).
    ``norms``: (||Z_in||_F, ||Z_out||_F) when the caller has them."""
    n_in, n_out = norms or (_fro(z_in), _fro(z_out))
    m_raw = (n_out - n_in) / (n_in + EPS)
    return m_raw, math.tanh(m_raw / s_m)


def direction(z_in: torch.Tensor, z_out: torch.Tensor,
              norms: tuple[float, float] | None = None) -> tuple[float, float]:
    """(cos, D_norm): cosine between the flattened input and output, D_norm = (1 - cos) / 2 in [0, 1]."""
    n_in, n_out = norms or (_fro(z_in), _fro(z_out))
    denom = n_in * n_out
    cos = float((z_in.float() * z_out.float()).sum()) / denom if denom > 0 else 0.0
    return cos, (1.0 - cos) / 2.0


def semantic_threshold(z_in: torch.Tensor, z_out: torch.Tensor, alpha: float, beta: float,
                       s_m: float) -> dict[str, float]:
    """p_s = alpha * M_norm + beta * D_norm, with its parts (the two Frobenius norms taken once, for both)."""
    norms = _fro(z_in), _fro(z_out)
    m_raw, m_norm = magnitude(z_in, z_out, s_m, norms)
    cos, d_norm = direction(z_in, z_out, norms)
    return {"m_raw": m_raw, "m_norm": m_norm, "cos": cos, "d_norm": d_norm, "p_s": alpha * m_norm + beta * d_norm}


def layer_average(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Z_in, Z_out averaged over the hooked layers (elementwise)."""
    z_in = torch.stack([p[0].float() for p in pairs]).mean(0)
    z_out = torch.stack([p[1].float() for p in pairs]).mean(0)
    return z_in, z_out


def eq8_rate(o_t: torch.Tensor, i_t: torch.Tensor, o_p: torch.Tensor, i_p: torch.Tensor) -> float:
    """Eq. 8's increment: (||O_t - I_t||_1 / ||O_p - I_p||_1) * (||O_t - O_p||_1 / ||I_t - I_p||_1)."""
    return eq8_increment(o_t, i_t, o_p, i_p)[0]


def eq8_increment(o_t: torch.Tensor, i_t: torch.Tensor, o_p: torch.Tensor, i_p: torch.Tensor,
                  gap_p: float | None = None) -> tuple[float, float]:
    """(:func:`eq8_rate`, ||O_t - I_t||_1): the norms read to the host at once; ``gap_p`` = ||O_p - I_p||_1 when
    known (the previous call's own gap, returned by its increment), so a run of reuses takes three norms each."""
    diffs = [o_t - i_t, o_t - o_p, i_t - i_p] + ([o_p - i_p] if gap_p is None else [])
    gap, d_out, d_in, *rest = _l1s(*diffs)
    gap_p = rest[0] if gap_p is None else gap_p
    return (gap / max(gap_p, EPS)) * (d_out / max(d_in, EPS)), gap


def select_layers(available: int, wanted: int) -> list[int]:
    """``wanted`` layer indices of ``available``: a third shallow (from the first), a third in the middle, a third
    deep (to the last); the remainder goes to the shallow, then the deep group. All layers if there are fewer."""
    if wanted >= available:
        return list(range(available))
    base, extra = divmod(wanted, 3)
    n_shallow, n_middle, n_deep = base + (extra > 0), base, base + (extra > 1)
    start = (available - n_middle) // 2
    picked = sorted(set(range(n_shallow)) | set(range(start, start + n_middle))
                    | set(range(available - n_deep, available)))
    if len(picked) < wanted or (n_shallow and start < n_shallow) or start + n_middle > available - n_deep:
        picked = sorted({int(round(x)) for x in np.linspace(0, available - 1, wanted)})
    return picked
