"""Video files for the fidelity protocol (EVALUATION.md, "Fidelity metrics"): uint8 RGB mp4 in and out.

Generated and reference videos are stored as H.264 / yuv420p mp4 (what VBench and the eval scripts
read) and decoded back to uint8 RGB (F, H, W, 3) before any metric. mp4 is lossy, so metrics of a
run are computed on decoded files for both sides of a pair, never on one decoded and one in-memory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Literal

import imageio.v2 as iio
import numpy as np
import torch

from sencache_bench.errors import BenchError

Layout = Literal["FHWC", "FCHW", "CFHW"]
# Permutation that takes each accepted layout to (F, H, W, C).
_TO_FHWC: dict[str, tuple[int, int, int, int]] = {
    "FHWC": (0, 1, 2, 3),
    "FCHW": (0, 2, 3, 1),
    "CFHW": (1, 2, 3, 0),
}
_CHANNEL_AXIS = {"FHWC": 3, "FCHW": 1, "CFHW": 0}


class VideoReadError(BenchError, ValueError):
    """A video file could not be decoded; `str()` names the file and the reason."""


def frames_to_uint8(x: torch.Tensor | np.ndarray, layout: Layout | None = None) -> np.ndarray:
    """Float video in [0, 1] -> uint8 (F, H, W, 3), as `(x.clamp(0, 1) * 255).round()` (half to even).

    Accepted layouts, with 3 RGB channels: "FHWC" (F, H, W, 3), "FCHW" (F, 3, H, W) and
    "CFHW" (3, F, H, W) (the diffusers video-latent order without the batch axis). With
    layout=None the layout is inferred from which axis has size 3; if more than one could
    (e.g. 3 frames in FHWC) it raises and `layout` must be given.
    """
    t = torch.from_numpy(np.asarray(x)) if isinstance(x, np.ndarray) else x.detach()
    if not t.is_floating_point():
        raise ValueError(f"frames_to_uint8 expects a float video in [0, 1], got dtype {t.dtype}")
    if t.ndim != 4:
        raise ValueError(f"expected a 4-D video (FHWC, FCHW or CFHW), got shape {tuple(t.shape)}")
    if layout is None:
        candidates = [name for name, axis in _CHANNEL_AXIS.items() if t.shape[axis] == 3]
        if len(candidates) != 1:
            raise ValueError(
                f"cannot infer the layout of shape {tuple(t.shape)} "
                f"(matches {candidates or 'none'} of FHWC, FCHW, CFHW); pass layout="
            )
        layout = candidates[0]  # type: ignore[assignment]
    if layout not in _TO_FHWC:
        raise ValueError(f"layout must be one of {list(_TO_FHWC)}, got {layout!r}")
    if t.shape[_CHANNEL_AXIS[layout]] != 3:
        raise ValueError(f"layout {layout} needs 3 channels on axis {_CHANNEL_AXIS[layout]}, got {tuple(t.shape)}")
    t = t.float().cpu()
    if not torch.isfinite(t).all():
        raise ValueError("video holds NaN or inf values")
    return (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(*_TO_FHWC[layout]).contiguous().numpy()


def write_mp4(path: str | os.PathLike[str], frames: np.ndarray, fps: int = 8, quality: float = 5.0) -> Path:
    """Write uint8 (F, H, W, 3) frames as H.264 yuv420p mp4, atomically (temp file + os.replace).

    quality is imageio's 0-10 scale; 5 is the default of diffusers' export_to_video, so files match
    what the reference pipelines save. macro_block_size=1 keeps the exact size (no resize to
    multiples of 16); yuv420p still needs an even height and width. Returns the written path.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"write_mp4 expects uint8 (F, H, W, 3) with F >= 1, got {frames.dtype} {frames.shape}")
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs an even height and width, got {h}x{w}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.mp4")
    os.close(fd)
    try:
        writer = iio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                                quality=quality, macro_block_size=1)
        try:
            for frame in frames:
                writer.append_data(frame)
        except BaseException:
            # imageio's ``with`` skips close() on an error: ffmpeg would live on and write the temporary file
            # again after it is removed below (when the writer is garbage-collected, or at exit)
            with contextlib.suppress(Exception):
                writer.close()
            raise
        writer.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a video is an ordinary file (as the JSON beside it)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _short_reason(err: Exception) -> str:
    """First line of an imageio error plus ffmpeg's last stderr line, instead of its whole banner."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    reason = f"{type(err).__name__}: {lines[0]}"
    return reason if len(lines) == 1 else f"{reason} ({lines[-1]})"


def read_video(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode every frame of a video file to uint8 RGB (F, H, W, 3); VideoReadError if it cannot."""
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"cannot read video {path}: no such file")
    try:
        with iio.get_reader(path, format="FFMPEG") as reader:
            frames = [np.asarray(frame) for frame in reader]
    except Exception as err:  # imageio/ffmpeg raise several types for a corrupt or foreign file
        raise VideoReadError(f"cannot read video {path}: {_short_reason(err)}") from err
    if not frames:
        raise VideoReadError(f"cannot read video {path}: it holds no frames")
    video = np.stack(frames)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise VideoReadError(f"cannot read video {path}: decoded to {video.dtype} {video.shape}, not uint8 RGB")
    return video
