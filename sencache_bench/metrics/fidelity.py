"""Fidelity of a cached video against its uncached reference: PSNR, SSIM, LPIPS.

Protocol (the TeaCache, MagCache and PAB eval scripts; the project's evaluation notes, "Fidelity
metrics"): the reference is the same model, prompt, seed, sampler and step count with no
cache; both videos are uint8 RGB of shape (F, H, W, 3), scaled to [0, 1], every frame at native
resolution, no resizing. Each metric is computed per frame:

- PSNR over the whole CxHxW frame with MAX = 1; 100 when mse < 1e-10.
- SSIM per RGB channel with an 11-tap Gaussian window (sigma 1.5), C1 = 0.01^2, C2 = 0.03^2, data
  range 1, population (co)variances, averaged over the valid region only (no padding), channels
  averaged. This equals skimage's structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=-1), which crops (11 - 1) // 2 = 5 pixels
  per border (checked within 1e-4 in tests/metrics/test_fidelity.py).
- LPIPS v0.1, AlexNet variant: inputs mapped to [-1, 1], mean over each tap's spatial map.

PSNR and SSIM are ours, not torchmetrics' (torchmetrics is the tests' second implementation), because
torchmetrics differs: its ``structural_similarity_index_measure`` reflect-pads each frame by 5 pixels and
averages its SSIM map over the whole frame, border included (0.02 to 0.07 off skimage on 32x40 frames);
its map cropped by those 5 pixels equals ours to ~1e-15, but its non-separable 11x11 Gaussian convolution
took 307 s per 81-frame 832x480 pair on the project's 2-core CPU against 58 to 63 s for our separable one
(``benchmarks/metrics_speed.py``). Its ``peak_signal_noise_ratio`` turns ln into log10 with a float32
constant (``10 / log(tensor(10.))``), about 4e-8 relative (1.5e-6 dB at 34 dB) off float64.

PSNR and SSIM run in float64 on ``device`` (default: CUDA when available), ``FRAME_CHUNK`` frames per batch.

Aggregation: a per-video value (`FidelityResult.values`) is the MEAN OVER FRAMES of that video.
The eval scripts average per frame index over videos first and then over frames; for videos with
the same frame count this equals the mean over videos of these per-video values. The per-frame
lists (`FidelityResult.per_frame`) are kept so a table can use either order.

LPIPS model: the `lpips` package's own ``lpips.LPIPS`` (what the papers' eval scripts call) wherever
torchvision imports (``lpips`` imports it); elsewhere (the CPU set-up: torchvision would pull another
torch) the loader here, `LPIPSAlex`, which computes the same network (a test checks both give the same
value with the same trunk weights where torchvision imports). Weights: the linear heads ship in the `lpips`
wheel (read from the installed package, found without importing it, or from ``<venv>/share/lpips/`` where
``make env`` extracts only them); the AlexNet backbone is torchvision's `alexnet-owt-7be5be79.pth` and must
already sit in `$TORCH_HOME/hub/checkpoints`; both models load it from that file. Nothing is ever
downloaded: when the file is missing LPIPS reports None with a note naming the file and where to get it.

Other papers' definitions (EasyCache: PSNR pooled over the video, torchmetrics' SSIM, LPIPS with VGG16) are metrics
of their own names: the registry is ``metrics/definitions.py``, the computations ``metrics/variants.py``;
``lpips_vgg`` is built here like the AlexNet model (``build_lpips(net="vgg")``), from torchvision's
``vgg16-397923af.pth`` and the wheel's ``weights/v0.1/vgg.pth`` heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from sencache_bench.metrics import variants
from sencache_bench.metrics.definitions import FIDELITY_METRICS
from sencache_bench.metrics.lpips_model import (  # noqa: F401  (re-exported: the LPIPS model lives there)
    ALEXNET_FILE, ALEXNET_URL, LPIPS_MIN_SIDE, LPIPS_NORM_EPS, LPIPS_SCALE, LPIPS_SHIFT, SHARED_HEADS, TRUNK_FILES,
    AlexNetTrunk, LPIPSAlex, LPIPSModel, LPIPSUnavailable, PackageLPIPS, TappedTrunk, alexnet_checkpoint_path,
    build_lpips, load_lpips, lpips_heads_path, lpips_per_frame, torchvision_imports)
from sencache_bench.metrics.pixel import (  # noqa: F401  (re-exported: PSNR and SSIM live there)
    FRAME_CHUNK, PSNR_CAP, PSNR_MSE_FLOOR, SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW, VideoLike, _check_pair,
    default_device, psnr_per_frame, ssim_per_frame)

VALID_METRICS = FIDELITY_METRICS


@dataclass
class FidelityResult:
    """Fidelity of one generated video against its reference.

    `values` holds the per-video value (mean over frames), None when a metric could not run;
    `per_frame` the per-frame values of the metrics that ran; `notes` why a metric is missing or
    qualified (e.g. a random LPIPS trunk).
    """

    values: dict[str, float | None] = field(default_factory=dict)
    per_frame: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)



# ----------------------------------------------------------------------------------------------
# entry point for the runner


def compute_fidelity(
    ref: VideoLike,
    gen: VideoLike,
    metrics: Sequence[str],
    lpips_model: LPIPSModel | None = None,
    device: torch.device | str | None = None,
    lpips_vgg_model: LPIPSModel | None = None,
) -> FidelityResult:
    """Compute the requested metrics of `gen` against its uncached reference `ref`.

    Per-video values are means over frames. PSNR and SSIM run on ``device`` (default: CUDA when
    available; the run's device when the runner passes it). LPIPS uses `lpips_model` if given, else the
    real model (cached) on ``device``; if its backbone is missing the value is None, `notes["lpips"]` says
    why, and the other metrics are still computed. ``lpips_vgg`` likewise, with ``lpips_vgg_model``.
    ``psnr_pooled`` is one value per video: it has no per-frame list.
    """
    unknown = [m for m in metrics if m not in VALID_METRICS]
    if unknown:
        raise ValueError(f"unknown fidelity metric(s) {unknown}; valid: {list(VALID_METRICS)}")
    r, g = _check_pair(ref, gen)
    result = FidelityResult()
    for name in dict.fromkeys(metrics):
        if name == "psnr":
            per = psnr_per_frame(r, g, device)
        elif name == "psnr_pooled":
            result.values[name] = variants.psnr_pooled(r, g, device)
            continue
        elif name == "ssim":
            per = ssim_per_frame(r, g, device)
        elif name == "ssim_torchmetrics":
            per = variants.ssim_torchmetrics_per_frame(r, g, device)
        else:
            net = "vgg" if name == "lpips_vgg" else "alex"
            model = lpips_vgg_model if net == "vgg" else lpips_model
            if model is None:
                try:
                    model = load_lpips(device, net=net)
                except LPIPSUnavailable as err:
                    result.values[name] = None
                    result.notes[name] = f"unavailable: {err}"
                    continue
            if not model.is_real_metric:
                result.notes[name] = (f"random {'VGG16' if net == 'vgg' else 'AlexNet'} trunk: plumbing check only, "
                                      "not a real LPIPS value")
            per = lpips_per_frame(r, g, model)
        result.values[name] = float(per.double().mean())
        result.per_frame[name] = per.tolist()
    return result
