"""What the HTML report embeds besides its tables: WebM videos, PNG figures and decision-trace rasters.

Videos are WebM (VP9, yuv420p) as base64 data URIs: VP9 is royalty-free, so every Chromium build plays it (Debian's
and other open-source builds may lack H.264, the codec of the run's mp4 files), and Firefox and Safari (14.1+) do
too; a data URI keeps the report one file that opens from disk or a CI artifact without the results folder beside it.
Each clip is brought to a viewable, bounded size: nearest-neighbour upscaling of a tiny model's 32 px frames
(crisp pixels in every browser), box downscaling of a full-size one, and at most ``MAX_FRAMES`` frames.
"""

from __future__ import annotations

import base64
import io
import math
import os
import tempfile
from collections.abc import Sequence
from html import escape
from pathlib import Path

import numpy as np

#: the clips' longest side after resizing, in pixels (a few clips per policy keep the page a few MB)
MAX_SIDE = 320
#: the shortest side small videos are upscaled to (by an integer factor: whole pixels)
MIN_SIDE = 160
#: frames kept per clip (the first ones, at the run's frame rate)
MAX_FRAMES = 49
#: the absolute difference is multiplied by this before display (clipped at 255): small errors stay visible
DIFF_GAIN = 4


def fit(frames: np.ndarray, max_side: int = MAX_SIDE, min_side: int = MIN_SIDE,
        max_frames: int = MAX_FRAMES) -> np.ndarray:
    """uint8 (F, H, W, 3) -> at most ``max_frames`` frames, the shorter side upscaled by an integer factor to at
    least ``min_side`` (nearest neighbour) or the longer side box-averaged down to at most ``max_side``; the
    height and width even (what yuv420p needs)."""
    frames = np.asarray(frames)[:max_frames]
    h, w = frames.shape[1:3]
    if max(h, w) > max_side:
        k = math.ceil(max(h, w) / max_side)
        h2, w2 = h // k, w // k
        frames = frames[:, :h2 * k, :w2 * k].reshape(len(frames), h2, k, w2, k, 3).mean(axis=(2, 4))
        frames = frames.round().astype(np.uint8)
    elif min(h, w) < min_side:
        k = min(math.ceil(min_side / min(h, w)), max(1, max_side // max(h, w)))
        frames = frames.repeat(k, axis=1).repeat(k, axis=2)
    h, w = frames.shape[1:3]
    return np.ascontiguousarray(frames[:, :h - h % 2, :w - w % 2])


def difference(a: np.ndarray, b: np.ndarray, gain: int = DIFF_GAIN) -> np.ndarray:
    """``min(255, gain * |a - b|)`` per pixel and channel, over the frames both have."""
    n = min(len(a), len(b))
    diff = np.abs(a[:n].astype(np.int16) - b[:n].astype(np.int16)) * gain
    return np.minimum(diff, 255).astype(np.uint8)


def webm_bytes(frames: np.ndarray, fps: float) -> bytes:
    """uint8 (F, H, W, 3) frames (even H and W) as a VP9 WebM file's bytes (constant quality, CRF 12)."""
    import imageio.v2 as iio

    fd, tmp = tempfile.mkstemp(suffix=".webm", prefix=".report-")
    os.close(fd)
    try:
        writer = iio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libvpx-vp9", pixelformat="yuv420p",
                                quality=None, macro_block_size=1, ffmpeg_log_level="error",
                                output_params=["-crf", "12", "-b:v", "0", "-deadline", "good", "-cpu-used", "4"])
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()
        return Path(tmp).read_bytes()
    finally:
        Path(tmp).unlink(missing_ok=True)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def video_uri(frames: np.ndarray, fps: float) -> str:
    return data_uri(webm_bytes(fit(frames), fps), "video/webm")


def figure_uri(fig) -> str:
    """A matplotlib Figure as a PNG data URI (no metadata: the same figure gives the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return data_uri(buf.getvalue(), "image/png")


def _what(v: float) -> str:
    return "no call" if v != v else "computed" if v == 1 else "reused" if v == 0 else f"{v:.0%} of the blocks"


def trace_svg(matrix: Sequence[Sequence[float]], labels: Sequence[str], cell: int = 14) -> str:
    """The decision-trace raster (rows: video x branch, columns: steps; results/plots.py ``trace_matrix``) as an
    inline SVG: computed black, a share of the blocks grey in proportion, reused white, no call hatched red."""
    steps = max((len(r) for r in matrix), default=0)
    label_w = 7 * max((len(x) for x in labels), default=0) + 6
    width, height = label_w + cell * steps + 1, cell * len(matrix) + 14
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="trace" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img">']
    for i, (row, label) in enumerate(zip(matrix, labels)):
        y = cell * i
        parts.append(f'<text x="{label_w - 4}" y="{y + cell - 2}" text-anchor="end">{escape(label)}</text>')
        for k, v in enumerate(row):
            if v != v:  # NaN: no call at this step
                fill = "#f4c7c7"
            else:
                g = round(255 * (1 - v))
                fill = f"rgb({g},{g},{g})"
            parts.append(f'<rect x="{label_w + cell * k}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" '
                         f'stroke="#bbb" stroke-width="0.5"><title>{escape(label)}, step {k}: {_what(v)}</title>'
                         '</rect>')
    for k in range(0, steps, max(1, steps // 10)):
        parts.append(f'<text x="{label_w + cell * k + cell / 2}" y="{height - 2}" text-anchor="middle">{k}</text>')
    parts.append("</svg>")
    return "".join(parts)
