"""The fidelity metrics a spec can name, each with the definition it computes and the evaluation that uses it.

Papers that report "PSNR / SSIM / LPIPS" do not compute the same numbers (issue 22; docs/metrics.md gives the
sources): TeaCache's evaluation (``eval/teacache/common_metrics`` in ali-vilab/TeaCache, also used by MagCache
and PAB) takes PSNR per frame and averages, SSIM per frame on the valid region (cv2's filter2D cropped by 5
pixels) and LPIPS with AlexNet; EasyCache's ``EasyCache4Wan2.2/tools/video_metrics.py`` pools the MSE over
the whole video before the log, takes torchmetrics' SSIM (reflect-padded, whole frame) and LPIPS with AlexNet
or VGG. Each variant is a metric of its own name here, so a record says which one it holds, and a table's
footnote names the definition from this registry instead of a string per layout.

This module imports nothing heavy: the spec validates names against it; ``metrics/fidelity.py`` and
``metrics/variants.py`` compute the values.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricDefinition:
    name: str  # the key in a spec's ``metrics:`` and in a record's ``metrics``
    label: str  # column header in tables ("PSNR")
    better: str  # "max" or "min"
    definition: str  # what is computed, in one phrase
    source: str  # whose evaluation computes it this way


DEFINITIONS: dict[str, MetricDefinition] = {d.name: d for d in (
    MetricDefinition("psnr", "PSNR", "max", "per-frame PSNR (MAX 1, capped at 100 dB), mean over frames",
                     "TeaCache's eval"),
    MetricDefinition("psnr_pooled", "PSNR (pooled)", "max", "PSNR of the MSE pooled over all frames and pixels of a "
                     "video (MAX 1; capped at 100 dB where EasyCache's would be inf)", "EasyCache's eval"),
    MetricDefinition("ssim", "SSIM", "max", "per-frame SSIM (Gaussian 11, sigma 1.5, valid region, as "
                     "scikit-image), mean over frames", "TeaCache's eval"),
    MetricDefinition("ssim_torchmetrics", "SSIM (torchmetrics)", "max", "per-frame SSIM (Gaussian 11, sigma 1.5, "
                     "reflect-padded, whole frame, as torchmetrics), mean over frames", "EasyCache's eval"),
    MetricDefinition("lpips", "LPIPS", "min", "LPIPS v0.1 with the AlexNet trunk, mean over frames",
                     "TeaCache's eval"),
    MetricDefinition("lpips_vgg", "LPIPS (VGG)", "min", "LPIPS v0.1 with the VGG16 trunk, mean over frames",
                     "EasyCache's eval, --lpips_net vgg"),
)}

FIDELITY_METRICS: tuple[str, ...] = tuple(DEFINITIONS)


def check_names(names, where: str = "metrics") -> None:
    """One line naming the first unknown metric and the valid ones (a ``BenchError``)."""
    from ..errors import BenchError

    for i, name in enumerate(names):
        if name not in DEFINITIONS:
            raise BenchError(f"{where}[{i}]: unknown metric {name!r} (valid: {', '.join(FIDELITY_METRICS)})")


def footnote(names) -> str:
    """``PSNR: per-frame PSNR (...), mean over frames (TeaCache's eval); SSIM: ...``, for the metrics a table prints,
    in their order (unknown names skipped)."""
    return "; ".join(f"{DEFINITIONS[n].label}: {DEFINITIONS[n].definition} ({DEFINITIONS[n].source})"
                     for n in dict.fromkeys(names) if n in DEFINITIONS) + "."
