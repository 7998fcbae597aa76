"""Procedural clips for the bench-t2v model: coloured shapes moving on plain or lightly textured backgrounds.

Everything is made in numpy from a seed; nothing is downloaded. A clip is 17 frames of 64x64 RGB
(uint8). Each clip has a prompt from a small grammar, and :func:`parse_prompt` turns a prompt back
into the scene parameters (the quality checks use it to know what a generated video should show).

Grammar (words are lower case; :func:`parse_prompt` also accepts surrounding spaces, upper case and a
final full stop)::

    prompt     := object [" and " object] [" on a " background " background"]
    object     := "a " colour " " shape " " motion
    motion     := "standing still"
                | "moving " direction [" " speed]
                | "bouncing " ("left and right" | "up and down") [" " speed]
    colour     := "red" | "green" | "blue" | "yellow"
    shape      := "square" | "circle" | "triangle"
    direction  := "left" | "right" | "up" | "down"
    speed      := "slowly" | "quickly"
    background := "plain" | "grey" | "textured"

e.g. "a red square moving right", "a blue circle standing still", "a yellow triangle moving up quickly
and a green circle standing still on a textured background". Without a background phrase the
background is plain (dark). The two objects of a prompt have different colours.

Motion, in pixels per frame over the 16 frame intervals of a clip: moving slowly 1, moving 2, moving
quickly 3 (so 16, 32 and 48 pixels over the clip, always inside the frame); bouncing goes 1.5x as fast
and reflects at the frame's edges. Scenes range from fully static (one or two objects standing still on
a plain background) to highly dynamic (two objects moving quickly or bouncing).

Held out: 12 of the 60 single-object (colour, shape, motion) combinations, with motion one of
standing still / moving left / right / up / down, never appear in the transformer's training data
(:data:`HELD_OUT`); every colour, shape and motion, and every pair of them, still does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

SIZE = 64  # height and width in pixels
FRAMES = 17  # 4k+1, as Wan's causal VAE needs
TEXT_LENGTH = 24  # max_sequence_length of the text encoder: the longest prompt is 21 words + </s>

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 210, 40),
}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
MOTIONS = ("still", "left", "right", "up", "down")  # the motions of the core grammar (and of HELD_OUT)
BOUNCES = {"left and right": "bounce_lr", "up and down": "bounce_ud"}
SPEEDS: dict[str, float] = {"slowly": 1.0, "normal": 2.0, "quickly": 3.0}  # pixels per frame when moving
BOUNCE_FACTOR = 1.5
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"plain": (24, 24, 32), "grey": (96, 96, 96),
                                                "textured": (28, 28, 36)}
TEXTURE_TILE = 8  # pixels; the textured background is tiles of +-TEXTURE_AMPLITUDE grey levels
TEXTURE_AMPLITUDE = 8
RADIUS = 7.0  # circle radius; squares have half-side 6, triangles a height of 13 and base of 15
MARGIN = 8.0  # an object's centre stays this far from the frame's edges

WORDS = ["a", "and", "on", "background", "standing", "still", "moving", "bouncing", *COLOURS, *SHAPES,
         *DIRECTIONS, "slowly", "quickly", *BACKGROUNDS]


def _held_out() -> frozenset[tuple[str, str, str]]:
    # Each (colour, shape) pair loses one motion: colour i, shape j -> motion (i + 2j) mod 5. Every
    # (colour, motion) pair keeps at least two shapes and every (shape, motion) pair three colours.
    return frozenset((colour, shape, MOTIONS[(i + 2 * j) % len(MOTIONS)])
                     for i, colour in enumerate(COLOURS) for j, shape in enumerate(SHAPES))


HELD_OUT: frozenset[tuple[str, str, str]] = _held_out()


class PromptParseError(ValueError):
    """A prompt outside the grammar of the bench model."""


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    motion: str = "still"  # "still", "left", "right", "up", "down", "bounce_lr" or "bounce_ud"
    speed: str = "normal"  # "slowly", "normal" or "quickly" (always "normal" when still)

    def __post_init__(self):
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r} (valid: {', '.join(COLOURS)})")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r} (valid: {', '.join(SHAPES)})")
        if self.motion not in (*MOTIONS, *BOUNCES.values()):
            raise ValueError(f"unknown motion {self.motion!r}")
        if self.speed not in SPEEDS or (self.motion == "still" and self.speed != "normal"):
            raise ValueError(f"invalid speed {self.speed!r} for motion {self.motion!r}")

    @property
    def combo(self) -> tuple[str, str, str]:
        """(colour, shape, motion) with bounces counted as their own motions."""
        return (self.colour, self.shape, self.motion)

    @property
    def pixels_per_frame(self) -> float:
        if self.motion == "still":
            return 0.0
        return SPEEDS[self.speed] * (BOUNCE_FACTOR if self.motion.startswith("bounce") else 1.0)

    def phrase(self) -> str:
        if self.motion == "still":
            motion = "standing still"
        elif self.motion in DIRECTIONS:
            motion = f"moving {self.motion}"
        else:
            motion = "bouncing " + next(k for k, v in BOUNCES.items() if v == self.motion)
        if self.speed != "normal":
            motion += f" {self.speed}"
        return f"a {self.colour} {self.shape} {motion}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str = "plain"

    def __post_init__(self):
        if not 1 <= len(self.objects) <= 2:
            raise ValueError(f"a scene has one or two objects, got {len(self.objects)}")
        if len({o.colour for o in self.objects}) != len(self.objects):
            raise ValueError("the objects of a scene must have different colours")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r} (valid: {', '.join(BACKGROUNDS)})")

    @property
    def prompt(self) -> str:
        text = " and ".join(o.phrase() for o in self.objects)
        return text if self.background == "plain" else f"{text} on a {self.background} background"

    @property
    def is_static(self) -> bool:
        return all(o.motion == "still" for o in self.objects)


@dataclass
class Clip:
    frames: np.ndarray  # uint8 (F, H, W, 3)
    mask: np.ndarray  # bool (F, H, W): pixels covered by an object
    centres: np.ndarray  # float (objects, F, 2): each object's centre (x, y) per frame, in pixels
    scene: Scene = field(repr=False, default=None)


# -- prompts ------------------------------------------------------------------------------------------

_C = "|".join(COLOURS)
_S = "|".join(SHAPES)
_D = "|".join(DIRECTIONS)
_SP = "slowly|quickly"
_OBJ = (rf"a (?:{_C}) (?:{_S}) (?:standing still|moving (?:{_D})(?: (?:{_SP}))?"
        rf"|bouncing (?:left and right|up and down)(?: (?:{_SP}))?)")
_OBJ_GROUPS = re.compile(rf"a ({_C}) ({_S}) (?:(standing still)|moving ({_D})(?: ({_SP}))?"
                         rf"|bouncing (left and right|up and down)(?: ({_SP}))?)")
_PROMPT = re.compile(rf"({_OBJ})(?: and ({_OBJ}))?(?: on a ({'|'.join(BACKGROUNDS)}) background)?")


def normalise_prompt(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


def parse_prompt(text: str) -> Scene:
    """Prompt -> scene parameters; :class:`PromptParseError` for a prompt outside the grammar."""
    norm = normalise_prompt(text)
    m = _PROMPT.fullmatch(norm)
    if m is None:
        raise PromptParseError(f"prompt {text!r} is outside the bench grammar: expected e.g. "
                               f"'a red square moving right' or 'a blue circle standing still'")
    objects = []
    for part in (m.group(1), m.group(2)):
        if part is None:
            continue
        g = _OBJ_GROUPS.fullmatch(part)
        colour, shape, still, direction, speed1, bounce, speed2 = g.groups()
        if still:
            motion, speed = "still", "normal"
        elif direction:
            motion, speed = direction, speed1 or "normal"
        else:
            motion, speed = BOUNCES[bounce], speed2 or "normal"
        objects.append(SceneObject(colour, shape, motion, speed))
    try:
        return Scene(tuple(objects), m.group(3) or "plain")
    except ValueError as err:
        raise PromptParseError(f"prompt {text!r}: {err}") from None


def core_prompt(colour: str, shape: str, motion: str) -> str:
    """The core grammar: 'a {colour} {shape} moving {direction}' or 'a {colour} {shape} standing still'."""
    return SceneObject(colour, shape, motion).phrase()


def core_combos(held_out: bool | None = None) -> list[tuple[str, str, str]]:
    """The 60 single-object (colour, shape, motion) combos; only held-out ones (True) or only seen ones (False)."""
    combos = [(c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS]
    if held_out is None:
        return combos
    return [combo for combo in combos if (combo in HELD_OUT) == held_out]


def is_held_out(scene: Scene) -> bool:
    return any(o.combo in HELD_OUT for o in scene.objects)


# -- scenes -------------------------------------------------------------------------------------------

# The training mixture: mostly the core grammar (one object, normal speed, plain background), the rest
# speed words, bouncing, backgrounds and two objects.
MIX_CORE, MIX_SINGLE, MIX_PAIR = 0.70, 0.15, 0.15


def _random_object(rng: np.random.Generator, colour: str, varied: bool) -> SceneObject:
    shape = SHAPES[rng.integers(len(SHAPES))]
    if not varied:
        return SceneObject(colour, shape, MOTIONS[rng.integers(len(MOTIONS))])
    motions = (*MOTIONS, *BOUNCES.values())
    motion = motions[rng.integers(len(motions))]
    speed = "normal" if motion == "still" else ("slowly", "normal", "quickly")[rng.integers(3)]
    return SceneObject(colour, shape, motion, speed)


def sample_scene(rng: np.random.Generator, exclude_held_out: bool = False) -> Scene:
    """A random scene from the training mixture (resampled while it shows a held-out combo, if asked)."""
    while True:
        u = rng.random()
        colours = list(COLOURS)
        first = colours.pop(rng.integers(len(colours)))
        if u < MIX_CORE:
            scene = Scene((_random_object(rng, first, varied=False),))
        else:
            objects = [_random_object(rng, first, varied=True)]
            if u >= MIX_CORE + MIX_SINGLE:
                objects.append(_random_object(rng, colours[rng.integers(len(colours))], varied=True))
            background = tuple(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
            scene = Scene(tuple(objects), background)
        if not (exclude_held_out and is_held_out(scene)):
            return scene


def dataset(n: int, seed: int, exclude_held_out: bool = False) -> list[tuple[Scene, int]]:
    """n (scene, render seed) pairs, reproducible from ``seed``."""
    rng = np.random.default_rng([seed, 1])
    out = []
    for _ in range(n):
        scene = sample_scene(rng, exclude_held_out)
        out.append((scene, int(rng.integers(2**31))))
    return out


# -- rendering ----------------------------------------------------------------------------------------

def _shape_mask(shape: str, cx: float, cy: float, size: int) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = xs - cx, ys - cy
    if shape == "square":
        return (np.abs(dx) <= RADIUS - 1) & (np.abs(dy) <= RADIUS - 1)
    if shape == "circle":
        return dx * dx + dy * dy <= RADIUS * RADIUS
    # triangle pointing up: apex at cy - 7, base at cy + 6, 15 pixels wide at the base
    return (dy >= -RADIUS) & (dy <= RADIUS - 1) & (np.abs(dx) <= (dy + RADIUS) / (2 * RADIUS - 1) * (RADIUS + 0.5))


def _track(obj: SceneObject, rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
    """(frames, 2) centre positions: inside the frame throughout, bouncing off its edges."""
    lo, hi = MARGIN, size - MARGIN
    start = rng.uniform(lo, hi, size=2)
    v = obj.pixels_per_frame
    t = np.arange(frames, dtype=np.float64)
    track = np.repeat(start[None], frames, axis=0)
    if obj.motion in DIRECTIONS:
        dx, dy = DIRECTIONS[obj.motion]
        axis, sign = (0, dx) if dx else (1, dy)
        travel = v * (frames - 1)
        span = max(hi - lo - travel, 0.0)
        first = lo + rng.uniform(0, span) if sign > 0 else hi - rng.uniform(0, span)
        track[:, axis] = first + sign * v * t
    elif obj.motion.startswith("bounce"):
        axis = 0 if obj.motion == "bounce_lr" else 1
        sign = 1 if rng.random() < 0.5 else -1
        width = hi - lo
        pos = (start[axis] - lo) + sign * v * t  # unfolded, then reflected into [0, width]
        pos = np.mod(pos, 2 * width)
        track[:, axis] = lo + np.where(pos > width, 2 * width - pos, pos)
    return track


def _background(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    img = np.empty((size, size, 3), dtype=np.int16)
    img[:] = BACKGROUNDS[name]
    if name == "textured":
        tiles = -(-size // TEXTURE_TILE)
        offsets = rng.integers(-TEXTURE_AMPLITUDE, TEXTURE_AMPLITUDE + 1, size=(tiles, tiles))
        offsets = np.kron(offsets, np.ones((TEXTURE_TILE, TEXTURE_TILE), dtype=np.int64))[:size, :size]
        img += offsets[..., None].astype(np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def render(scene: Scene, seed: int = 0, frames: int = FRAMES, size: int = SIZE) -> Clip:
    """Render a scene: start positions and texture come from ``seed``; colours are exactly COLOURS."""
    rng = np.random.default_rng([seed, 2])
    bg = _background(scene.background, rng, size)
    for _attempt in range(50):  # two objects: keep them apart all clip long
        tracks = np.stack([_track(o, rng, frames, size) for o in scene.objects])
        if len(tracks) == 1 or np.linalg.norm(tracks[0] - tracks[1], axis=-1).min() >= 2 * RADIUS + 1:
            break
    video = np.repeat(bg[None], frames, axis=0)
    mask = np.zeros((frames, size, size), dtype=bool)
    for obj, track in zip(scene.objects, tracks):
        colour = np.array(COLOURS[obj.colour], dtype=np.uint8)
        for f in range(frames):
            m = _shape_mask(obj.shape, track[f, 0], track[f, 1], size)
            video[f][m] = colour
            mask[f] |= m
    return Clip(frames=video, mask=mask, centres=tracks, scene=scene)


def render_prompt(prompt: str, seed: int = 0, frames: int = FRAMES, size: int = SIZE) -> Clip:
    return render(parse_prompt(prompt), seed, frames, size)
