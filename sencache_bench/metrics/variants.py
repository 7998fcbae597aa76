"""The fidelity variants other papers' evaluations compute (registry and sources: ``metrics/definitions.py``,
docs/metrics.md): PSNR pooled over a video, torchmetrics' SSIM, and the VGG16 trunk of LPIPS.

Written from the definitions, not copied: EasyCache's ``EasyCache4Wan2.2/tools/video_metrics.py`` computes
``-10 log10(mean((gt - gen)^2))`` over the whole (F, 3, H, W) video in [0, 1] (one MSE per video, no cap),
``torchmetrics.image.StructuralSimilarityIndexMeasure(data_range=1.0)`` over the frames, and
``lpips.LPIPS(net=alex|vgg)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .lpips_model import TappedTrunk
from .pixel import (FRAME_CHUNK, PSNR_CAP, PSNR_MSE_FLOOR, SSIM_K1, SSIM_K2, SSIM_WINDOW, VideoLike, _blur_valid,
                    _check_pair, _gaussian_taps, _unit_chunks, default_device)


def psnr_pooled(ref: VideoLike, gen: VideoLike, device: torch.device | str | None = None,
                chunk: int = FRAME_CHUNK) -> float:
    """PSNR (dB) of one MSE over every frame and pixel of the video, MAX = 1 (= 10 log10(255^2 / MSE) on uint8
    values): EasyCache's definition. Differs from the per-frame mean (``psnr``): a few bad frames weigh by their
    error, not by their log. MSE < 1e-10 gives 100, as ``psnr`` (EasyCache's script would give inf on identical
    videos, which a JSON record cannot hold)."""
    r, g = _check_pair(ref, gen)
    total, count = 0.0, 0
    for a, b in _unit_chunks(r, g, torch.float64, device or default_device(), chunk):
        total += float((a - b).pow(2).sum())
        count += a.numel()
    mse = total / count
    return PSNR_CAP if mse < PSNR_MSE_FLOOR else -10.0 * math.log10(mse)


def ssim_torchmetrics_per_frame(ref: VideoLike, gen: VideoLike, device: torch.device | str | None = None,
                                chunk: int = FRAME_CHUNK) -> torch.Tensor:
    """torchmetrics' SSIM of each frame (its defaults with data_range 1: Gaussian 11, sigma 1.5, K1 0.01, K2 0.03):
    each frame reflect-padded by 5 pixels (torch's ``reflect``, the edge pixel not repeated), the SSIM map
    averaged over the whole frame, border included, variances clamped at 0; (F,) on CPU. EasyCache's choice; ours
    (``ssim``) averages the valid region only, as scikit-image and TeaCache's cv2 script do."""
    r, g = _check_pair(ref, gen)
    h, w = r.shape[1:3]
    pad = (SSIM_WINDOW - 1) // 2
    if min(h, w) <= pad:
        raise ValueError(f"torchmetrics' SSIM reflect-pads by {pad} pixels: frames need more than {pad}x{pad}, "
                         f"got {h}x{w}")
    device = device or default_device()
    taps = _gaussian_taps(torch.float64, device)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    out = []
    for a, b in _unit_chunks(r, g, torch.float64, device, chunk):
        a, b = (F.pad(x, (pad, pad, pad, pad), mode="reflect") for x in (a, b))
        mu_a, mu_b, e_aa, e_bb, e_ab = _blur_valid(torch.cat([a, b, a * a, b * b, a * b], dim=1), taps).chunk(5, 1)
        var_a, var_b = (e_aa - mu_a**2).clamp_min(0), (e_bb - mu_b**2).clamp_min(0)
        cov = e_ab - mu_a * mu_b
        ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        out.append(ssim_map.mean(dim=(1, 2, 3)).cpu())
    return torch.cat(out)


class VGG16Trunk(TappedTrunk):
    """VGG16's convolutional trunk named like torchvision's ``vgg16().features`` (so ``features.N.*`` of
    torchvision's checkpoint load as they are), up to relu5_3 (index 29; the last max-pool is never read).
    ``forward`` returns LPIPS's five taps: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (the lpips package's
    ``pretrained_networks.vgg16`` slices end at indices 3, 8, 15, 22, 29)."""

    TAPS = (3, 8, 15, 22, 29)
    CHANNELS = (64, 128, 256, 512, 512)
    #: convolutions per stage; a 2x2 max-pool between stages
    STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
    MIN_SIDE = 16  # four 2x2 pools before relu5_3: a 16x16 frame leaves it one pixel

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for stage, (width, convs) in enumerate(self.STAGES):
            if stage:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            for _ in range(convs):
                layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU()]
                channels = width
        self.features = nn.Sequential(*layers)
