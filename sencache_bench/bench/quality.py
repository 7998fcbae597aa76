"""The bench model's quality bar, measured on generated videos.

- Colour: the dominant non-background colour (pixels with chroma >= 0.25, each given the palette
  colour of nearest hue, counted over all frames but the first) is the prompt's colour in at least
  90% of videos.
- Motion: for "moving left/right/up/down" the centroid of the prompt colour's pixels moves that way by at
  least a quarter of the frame in at least 80% of videos; for "standing still" it moves less than a
  tenth of the frame (also in at least 80% of videos). The centroid's start is the mean over frames
  1-2 and its end the mean over the last two frames: Wan's causal VAE encodes frame 0 alone and it
  often comes out off-colour.
- Determinism: the same prompt and seed give bit-identical videos.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import COLOURS, DIRECTIONS, FRAMES, MOTIONS, SIZE, TEXT_LENGTH, parse_prompt

CHROMA_MIN = 0.25  # max - min of RGB in [0, 1]: the backgrounds have at most 0.04
MIN_PIXELS = 4  # fewer pixels of a colour in a frame: no centroid for that frame
COLOUR_BAR, MOTION_BAR, STILL_BAR = 0.90, 0.80, 0.80
MOVE_MIN = SIZE / 4  # pixels along the prompt's direction
STILL_MAX = SIZE / 10  # pixels in any direction

COLOUR_NAMES = tuple(COLOURS)


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees of float RGB in [0, 1] (..., 3)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(-1), rgb.min(-1)
    d = np.where(mx - mn == 0, 1e-9, mx - mn)
    h = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return h * 60.0


_PALETTE_HUES = _hue(np.array([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float64) / 255)


def colour_labels(frames: np.ndarray) -> np.ndarray:
    """(F, H, W) index into COLOUR_NAMES of each pixel's nearest palette hue; -1 for background (low chroma)."""
    rgb = np.asarray(frames, dtype=np.float64) / 255.0
    chroma = rgb.max(-1) - rgb.min(-1)
    dist = np.abs(_hue(rgb)[..., None] - _PALETTE_HUES)
    dist = np.minimum(dist, 360 - dist)
    labels = dist.argmin(-1).astype(np.int8)
    labels[chroma < CHROMA_MIN] = -1
    return labels


@dataclass
class VideoAnalysis:
    colour_pixels: dict[str, int]  # per palette colour, over frames 1..F-1
    dominant: str | None
    centroids: np.ndarray  # (F, 2) x, y of the tracked colour's pixels; NaN where too few
    displacement: tuple[float, float] | None  # (dx, dy) in pixels, end minus start


def analyse(frames: np.ndarray, track: str | None = None) -> VideoAnalysis:
    """Dominant colour and the centroid track of ``track`` (default: the dominant colour)."""
    labels = colour_labels(frames)
    counts = {name: int((labels[1:] == i).sum()) for i, name in enumerate(COLOUR_NAMES)}
    dominant = max(counts, key=counts.get) if any(counts.values()) else None
    colour = track or dominant
    centroids = np.full((len(frames), 2), np.nan)
    if colour is not None:
        idx = COLOUR_NAMES.index(colour)
        for f in range(len(frames)):
            ys, xs = np.nonzero(labels[f] == idx)
            if len(xs) >= MIN_PIXELS:
                centroids[f] = (xs.mean() + 0.5, ys.mean() + 0.5)
    start, end = centroids[1:3], centroids[-2:]
    displacement = None
    if not (np.isnan(start).all() or np.isnan(end).all()):
        d = np.nanmean(end, axis=0) - np.nanmean(start, axis=0)
        displacement = (float(d[0]), float(d[1]))
    return VideoAnalysis(counts, dominant, centroids, displacement)


@dataclass
class VideoCheck:
    prompt: str
    seed: int
    colour: str  # the prompt's colour
    motion: str  # the prompt's motion
    dominant: str | None
    displacement: tuple[float, float] | None
    colour_ok: bool
    motion_ok: bool | None  # None: no motion check for this prompt (bouncing, speed words, two objects)


def check_video(frames: np.ndarray, prompt: str, seed: int = 0) -> VideoCheck:
    """The colour and motion checks of one generated video against its (single-object) prompt."""
    scene = parse_prompt(prompt)
    obj = scene.objects[0]
    a = analyse(frames, track=obj.colour)
    colour_ok = a.dominant == obj.colour if len(scene.objects) == 1 else (
        a.dominant in {o.colour for o in scene.objects})
    motion_ok = None
    if len(scene.objects) == 1 and obj.motion in MOTIONS and obj.speed == "normal":
        if a.displacement is None:
            motion_ok = False
        elif obj.motion == "still":
            motion_ok = float(np.hypot(*a.displacement)) < STILL_MAX
        else:
            ux, uy = DIRECTIONS[obj.motion]
            motion_ok = a.displacement[0] * ux + a.displacement[1] * uy >= MOVE_MIN
    return VideoCheck(prompt, seed, obj.colour, obj.motion, a.dominant, a.displacement, colour_ok, motion_ok)


def _rate(values: list[bool]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class QualityReport:
    checks: list[VideoCheck] = field(default_factory=list)
    deterministic: bool | None = None

    @property
    def colour_rate(self) -> float | None:
        return _rate([c.colour_ok for c in self.checks])

    @property
    def moving_rate(self) -> float | None:
        return _rate([c.motion_ok for c in self.checks if c.motion_ok is not None and c.motion != "still"])

    @property
    def still_rate(self) -> float | None:
        return _rate([c.motion_ok for c in self.checks if c.motion_ok is not None and c.motion == "still"])

    def failures(self) -> list[str]:
        """What misses the bar, one line each (empty: the bar is met)."""
        out = []
        for name, rate, bar in (("colour", self.colour_rate, COLOUR_BAR), ("moving", self.moving_rate, MOTION_BAR),
                                ("still", self.still_rate, STILL_BAR)):
            if rate is not None and rate < bar:
                out.append(f"{name}: {rate:.0%} of videos pass, the bar is {bar:.0%}")
        if self.deterministic is False:
            out.append("determinism: the same prompt and seed gave different videos")
        return out

    def summary(self) -> dict:
        n_moving = sum(c.motion_ok is not None and c.motion != "still" for c in self.checks)
        n_still = sum(c.motion_ok is not None and c.motion == "still" for c in self.checks)
        return {"videos": len(self.checks), "colour": self.colour_rate, "moving": self.moving_rate,
                "moving_videos": n_moving, "still": self.still_rate, "still_videos": n_still,
                "deterministic": self.deterministic}

    def lines(self, title: str = "") -> list[str]:
        fmt = lambda r: "-" if r is None else f"{r:6.1%}"  # noqa: E731
        s = self.summary()
        head = f"{title}: " if title else ""
        return [f"{head}{s['videos']} videos | colour {fmt(s['colour'])} (bar {COLOUR_BAR:.0%}) | "
                f"moving {fmt(s['moving'])} of {s['moving_videos']} (bar {MOTION_BAR:.0%}) | "
                f"still {fmt(s['still'])} of {s['still_videos']} (bar {STILL_BAR:.0%})"
                + ("" if self.deterministic is None else f" | deterministic {self.deterministic}")]


# -- generation ---------------------------------------------------------------------------------------

def load_bench_pipeline(path: str | Path | None = None):
    """The bench model through the same ``load_pretrained`` path as full-size models (float32, CPU)."""
    import torch

    from ..models.base import load_pretrained
    from ..models.bench import BENCH_T2V, WEIGHTS_DIR

    pipe = load_pretrained(BENCH_T2V.family, str(path or WEIGHTS_DIR), torch.float32,
                           missing_hint=BENCH_T2V.missing_hint)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, prompts: list[str], seeds: list[int], steps: int = 30, guidance_scale: float = 3.0,
             batch: int = 8, text_length: int = TEXT_LENGTH) -> list[np.ndarray]:
    """uint8 (F, H, W, 3) videos for (prompt, seed) pairs, generated ``batch`` at a time."""
    import torch

    from ..metrics.video_io import frames_to_uint8

    out = []
    for i in range(0, len(prompts), batch):
        p, s = prompts[i:i + batch], seeds[i:i + batch]
        with torch.no_grad():
            videos = pipe(prompt=p, generator=[torch.Generator("cpu").manual_seed(x) for x in s], height=SIZE,
                          width=SIZE, num_frames=FRAMES, num_inference_steps=steps, guidance_scale=guidance_scale,
                          max_sequence_length=text_length, output_type="np").frames
        out.extend(frames_to_uint8(np.asarray(v), layout="FHWC") for v in videos)
    return out


def evaluate(pipe, prompts: list[str], seeds: list[int], **kwargs) -> QualityReport:
    """Generate one video per (prompt, seed) and check each."""
    pairs = [(p, s) for p in prompts for s in seeds]
    videos = generate(pipe, [p for p, _ in pairs], [s for _, s in pairs], **kwargs)
    return QualityReport([check_video(v, p, s) for v, (p, s) in zip(videos, pairs)])


def is_deterministic(pipe, prompt: str, seed: int = 0, **kwargs) -> bool:
    """Two separate generations of the same prompt and seed are bit-identical."""
    a = generate(pipe, [prompt], [seed], **kwargs)[0]
    b = generate(pipe, [prompt], [seed], **kwargs)[0]
    return bool(np.array_equal(a, b))
