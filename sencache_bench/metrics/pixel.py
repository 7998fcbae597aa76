"""PSNR and SSIM per frame, and the input handling every fidelity metric shares.

The definitions (MAX = 1, the 100 dB cap, the 11-tap Gaussian SSIM over the valid region) are in
:mod:`sencache_bench.metrics.fidelity`'s docstring; they run in float64, ``FRAME_CHUNK`` frames at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

PSNR_CAP = 100.0
PSNR_MSE_FLOOR = 1e-10

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03  # C1 = (K1 * data_range)^2, C2 = (K2 * data_range)^2

FRAME_CHUNK = 8  # frames converted to float at once: bounds memory on 81-frame 480p videos

VideoLike = torch.Tensor | np.ndarray

# ----------------------------------------------------------------------------------------------
# input handling


def _as_video(x: VideoLike, name: str) -> torch.Tensor:
    """Check one video is uint8 (F, H, W, 3), the decoded form the protocol starts from."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    if t.dtype != torch.uint8:
        raise ValueError(f"{name}: expected uint8 frames, got dtype {t.dtype}")
    if t.ndim != 4 or t.shape[-1] != 3 or t.shape[0] < 1:
        raise ValueError(f"{name}: expected shape (F, H, W, 3) with F >= 1, got {tuple(t.shape)}")
    return t


def _check_pair(ref: VideoLike, gen: VideoLike) -> tuple[torch.Tensor, torch.Tensor]:
    r, g = _as_video(ref, "ref"), _as_video(gen, "gen")
    if r.shape != g.shape:
        raise ValueError(
            f"ref and gen differ in shape: ref {tuple(r.shape)} vs gen {tuple(g.shape)} "
            "(the protocol compares frame by frame at native resolution, no resizing)"
        )
    return r, g


def _unit_chunks(
    ref: torch.Tensor,
    gen: torch.Tensor,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    chunk: int = FRAME_CHUNK,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (N, 3, H, W) float chunks in [0, 1] so a whole video is never held as float."""
    for start in range(0, ref.shape[0], chunk):
        a, b = (v[start : start + chunk].to(device).permute(0, 3, 1, 2).to(dtype) / 255.0 for v in (ref, gen))
        yield a, b


# ----------------------------------------------------------------------------------------------
# PSNR and SSIM


def default_device() -> torch.device:
    """Where the metrics run when the caller names no device: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def psnr_per_frame(ref: VideoLike, gen: VideoLike, device: torch.device | str | None = None,
                   chunk: int = FRAME_CHUNK) -> torch.Tensor:
    """PSNR (dB) of each frame over all of C x H x W, MAX = 1, capped at 100 (mse < 1e-10); (F,) on CPU."""
    r, g = _check_pair(ref, gen)
    out = []
    for a, b in _unit_chunks(r, g, torch.float64, device or default_device(), chunk):
        mse = (a - b).pow(2).mean(dim=(1, 2, 3))
        psnr = -10.0 * torch.log10(mse.clamp_min(PSNR_MSE_FLOOR))
        out.append(torch.where(mse < PSNR_MSE_FLOOR, torch.full_like(mse, PSNR_CAP), psnr).cpu())
    return torch.cat(out)


def _gaussian_taps(dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    x = torch.arange(SSIM_WINDOW, dtype=dtype, device=device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def _blur_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of every channel, valid region only (no padding)."""
    c = x.shape[1]
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim_per_frame(ref: VideoLike, gen: VideoLike, device: torch.device | str | None = None,
                   chunk: int = FRAME_CHUNK) -> torch.Tensor:
    """Mean SSIM of each frame (see module docstring for the exact window and constants); (F,) on CPU."""
    r, g = _check_pair(ref, gen)
    h, w = r.shape[1:3]
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {h}x{w}")
    device = device or default_device()
    taps = _gaussian_taps(torch.float64, device)
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    out = []
    for a, b in _unit_chunks(r, g, torch.float64, device, chunk):
        stats = _blur_valid(torch.cat([a, b, a * a, b * b, a * b], dim=1), taps)
        mu_a, mu_b, e_aa, e_bb, e_ab = stats.chunk(5, dim=1)
        var_a, var_b, cov = e_aa - mu_a**2, e_bb - mu_b**2, e_ab - mu_a * mu_b
        num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
        den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
        out.append((num / den).mean(dim=(2, 3)).mean(dim=1).cpu())
    return torch.cat(out)
