"""mp4 round trip and float-to-uint8 conversion used before the fidelity metrics (EVALUATION.md)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from sencache_bench.metrics.video_io import VideoReadError, frames_to_uint8, read_video, write_mp4


def _smooth_video(frames: int = 6, h: int = 32, w: int = 48) -> np.ndarray:
    """Slow gradients and a brightness ramp over time: what H.264 keeps well."""
    y, x = np.mgrid[0:h, 0:w]
    out = [
        np.stack([x / (w - 1), y / (h - 1), np.full((h, w), 0.2 + 0.6 * f / (frames - 1))], axis=-1)
        for f in range(frames)
    ]
    return np.round(np.stack(out) * 255).astype(np.uint8)


def test_round_trip_shape_and_values(tmp_path: Path) -> None:
    video = _smooth_video()
    path = write_mp4(tmp_path / "clip.mp4", video, fps=8)
    assert path == tmp_path / "clip.mp4"
    back = read_video(path)
    assert back.dtype == np.uint8
    assert back.shape == video.shape
    assert np.abs(back.astype(np.float64) - video).mean() < 8  # lossy codec, uint8 units (< 8/255)


def test_write_is_atomic_and_overwrites(tmp_path: Path) -> None:
    write_mp4(tmp_path / "clip.mp4", _smooth_video(frames=3), fps=8)
    write_mp4(tmp_path / "clip.mp4", _smooth_video(frames=5), fps=8)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temp file left behind
    assert read_video(tmp_path / "clip.mp4").shape[0] == 5


def test_written_video_has_the_umask_mode_of_an_ordinary_file(tmp_path: Path) -> None:
    # a temporary file is created 0600; the video must be readable as the JSON record beside it is
    old = os.umask(0o022)
    try:
        write_mp4(tmp_path / "clip.mp4", _smooth_video(frames=2), fps=8)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "clip.mp4").stat().st_mode) == 0o644


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_mp4(tmp_path / "odd.mp4", np.zeros((2, 33, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(tmp_path / "float.mp4", np.zeros((2, 32, 32, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_read_garbage_and_missing_give_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 50)
    with pytest.raises(VideoReadError, match=r"cannot read video .*bad\.mp4") as err:
        read_video(bad)
    assert isinstance(err.value, ValueError)
    assert "ffmpeg version" not in str(err.value)  # the reason, not ffmpeg's whole banner
    with pytest.raises(VideoReadError, match="no such file"):
        read_video(tmp_path / "missing.mp4")


@pytest.mark.parametrize(
    "layout, to_layout",
    [
        ("FHWC", lambda v: v),
        ("FCHW", lambda v: v.permute(0, 3, 1, 2)),
        ("CFHW", lambda v: v.permute(3, 0, 1, 2)),
    ],
)
def test_frames_to_uint8_layouts(layout: str, to_layout) -> None:
    fhwc = torch.rand(2, 5, 7, 3, generator=torch.Generator().manual_seed(0))
    want = (fhwc.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    x = to_layout(fhwc)
    assert np.array_equal(frames_to_uint8(x), want)
    assert np.array_equal(frames_to_uint8(x, layout=layout), want)
    assert np.array_equal(frames_to_uint8(x.numpy()), want)


def test_frames_to_uint8_clamps_and_rounds_half_to_even() -> None:
    # k.5/255 * 255 is exactly k.5 in float32: halves go to the even neighbour; out of range clamps.
    vals = torch.tensor([-0.3, 0.5 / 255, 1.5 / 255, 2.5 / 255, 3.5 / 255, 1.0, 1.7], dtype=torch.float64)
    x = vals.view(1, 1, -1, 1).expand(1, 1, -1, 3)
    assert frames_to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 2, 2, 4, 255, 255]


def test_frames_to_uint8_rejects_ambiguous_and_bad_input() -> None:
    with pytest.raises(ValueError, match="cannot infer the layout"):
        frames_to_uint8(torch.zeros(3, 8, 8, 3))  # 3 frames FHWC or CFHW?
    assert frames_to_uint8(torch.zeros(3, 8, 8, 3), layout="FHWC").shape == (3, 8, 8, 3)
    with pytest.raises(ValueError, match="float"):
        frames_to_uint8(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        frames_to_uint8(torch.full((2, 8, 8, 3), float("nan")))
