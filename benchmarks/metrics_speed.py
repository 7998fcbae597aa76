"""Print seconds per 81-frame 832x480 video pair for each fidelity metric (PSNR, SSIM, LPIPS).

    .venv/bin/python benchmarks/metrics_speed.py [--device cpu|cuda] [--frames 81] [--repeats 1]

The pair is a seeded structured video (gradients, a sinusoid, a moving square) and a noisy copy, the size
of a Wan 2.1 480p video. LPIPS uses the real AlexNet backbone when it is in $TORCH_HOME/hub/checkpoints,
else a random trunk of the same shape (same cost; its values are not LPIPS); which one is printed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def video_pair(frames: int, height: int = 480, width: int = 832, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for f in range(frames):
        b = np.zeros((height, width), dtype=np.float32)
        b[60 + 2 * f : 220 + 2 * f, 100 + 4 * f : 340 + 4 * f] = 1.0
        rgb = np.stack([x / (width - 1), 0.5 + 0.5 * np.sin(0.05 * x + 0.03 * y + 0.2 * f), b], axis=-1)
        out[f] = np.round(rgb * 255).astype(np.uint8)
    noise = np.random.default_rng(seed).normal(0, 8.0, out.shape).astype(np.float32)
    return out, np.clip(out + noise, 0, 255).round().astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    import torch

    from sencache_bench.metrics.fidelity import (
        LPIPSUnavailable,
        build_lpips,
        default_device,
        lpips_per_frame,
        psnr_per_frame,
        ssim_per_frame,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    device = torch.device(args.device) if args.device else default_device()

    ref, gen = video_pair(args.frames)
    try:
        model, kind = build_lpips(device=device), "real AlexNet backbone"
    except LPIPSUnavailable:
        model, kind = build_lpips(random_trunk=True, device=device), "random AlexNet trunk (backbone file absent)"
    runs = {"psnr": lambda: psnr_per_frame(ref, gen, device),
            "ssim": lambda: ssim_per_frame(ref, gen, device),
            "lpips": lambda: lpips_per_frame(ref, gen, model)}
    print(f"{args.frames}-frame 480x832 pair on {device} ({torch.get_num_threads()} threads); "
          f"LPIPS: {type(model).__name__}, {kind}")
    for name, run in runs.items():
        best, value = float("inf"), None
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            value = float(run().double().mean())
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        print(f"  {name:5s} {best:8.2f} s per pair   (mean over frames {value:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
