"""The bench model's data: prompt grammar, parser, held-out combinations and clip rendering."""

from __future__ import annotations

import numpy as np
import pytest

from sencache_bench.bench.data import (BACKGROUNDS, COLOURS, FRAMES, HELD_OUT, MOTIONS, SHAPES, SIZE, TEXT_LENGTH,
                                       WORDS, PromptParseError, Scene, SceneObject, core_combos, core_prompt, dataset,
                                       is_held_out, parse_prompt, render, render_prompt)
from sencache_bench.bench.quality import analyse, check_video


@pytest.mark.parametrize("colour", list(COLOURS))
@pytest.mark.parametrize("shape", SHAPES)
def test_core_grammar_parses(colour, shape):
    for direction in ("left", "right", "up", "down"):
        scene = parse_prompt(f"a {colour} {shape} moving {direction}")
        assert scene == Scene((SceneObject(colour, shape, direction),), "plain")
    assert parse_prompt(f"a {colour} {shape} standing still").objects == (SceneObject(colour, shape, "still"),)


def test_extended_grammar():
    s = parse_prompt("A yellow triangle moving up quickly and a green circle bouncing left and right slowly "
                     "on a textured background.")
    assert s.background == "textured"
    assert s.objects == (SceneObject("yellow", "triangle", "up", "quickly"),
                         SceneObject("green", "circle", "bounce_lr", "slowly"))
    assert parse_prompt("a red circle bouncing up and down").objects[0].motion == "bounce_ud"
    assert parse_prompt("a blue square moving left slowly on a grey background").objects[0].speed == "slowly"
    assert parse_prompt("a blue square standing still on a plain background") == parse_prompt(
        "a blue square standing still")


@pytest.mark.parametrize("bad", ["a purple square moving left", "a red hexagon standing still",
                                 "a red square moving sideways", "a red square standing still quickly",
                                 "a red square moving left and a red circle standing still",  # same colour twice
                                 "a red square", "red square moving left", "a red ball bouncing on grass"])
def test_outside_the_grammar(bad):
    with pytest.raises(PromptParseError, match="prompt"):
        parse_prompt(bad)


def test_prompts_round_trip_and_fit_the_text_length():
    scenes = [s for s, _ in dataset(2000, seed=3)]
    for scene in scenes:
        assert parse_prompt(scene.prompt) == scene
        assert len(scene.prompt.split()) + 1 <= TEXT_LENGTH  # + </s>
        assert set(scene.prompt.split()) <= set(WORDS)
    kinds = {len(s.objects) for s in scenes}, {s.background for s in scenes}, {o.motion for s in scenes
                                                                                 for o in s.objects}
    assert kinds[0] == {1, 2} and kinds[1] == set(BACKGROUNDS) and len(kinds[2]) == 7
    assert any(s.is_static for s in scenes) and not all(s.is_static for s in scenes)


def test_held_out_combinations():
    assert len(HELD_OUT) == 12 and len(core_combos(True)) == 12 and len(core_combos(False)) == 48
    seen = core_combos(held_out=False)
    for i, j in ((0, 1), (0, 2), (1, 2)):  # every pair of (colour, shape, motion) values is still seen
        pairs = {(c[i], c[j]) for c in core_combos()}
        assert pairs == {(c[i], c[j]) for c in seen}
    train = dataset(3000, seed=0, exclude_held_out=True)
    assert not any(is_held_out(s) for s, _ in train)
    assert any(is_held_out(s) for s, _ in dataset(3000, seed=0))
    assert dataset(50, seed=0, exclude_held_out=True) == train[:50]  # seeded


def test_rendering_is_seeded_and_colours_exact():
    a = render_prompt("a green circle moving up", seed=5)
    b = render_prompt("a green circle moving up", seed=5)
    c = render_prompt("a green circle moving up", seed=6)
    assert a.frames.shape == (FRAMES, SIZE, SIZE, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames) and not np.array_equal(a.frames, c.frames)
    colours = {tuple(int(v) for v in px) for px in a.frames.reshape(-1, 3)}
    assert colours == {COLOURS["green"], BACKGROUNDS["plain"]}
    assert (a.frames[a.mask] == COLOURS["green"]).all()
    assert (a.frames[~a.mask] == BACKGROUNDS["plain"]).all()
    assert 100 < a.mask[0].sum() < 250  # a 14-15 pixel object


@pytest.mark.parametrize("direction,axis,sign", [("right", 0, 1), ("left", 0, -1), ("down", 1, 1), ("up", 1, -1)])
@pytest.mark.parametrize("speed,per_frame", [("", 2.0), (" slowly", 1.0), (" quickly", 3.0)])
def test_moving_clip_moves_the_expected_amount(direction, axis, sign, speed, per_frame):
    for seed in range(4):
        clip = render_prompt(f"a red triangle moving {direction}{speed}", seed=seed)
        d = clip.centres[0, -1] - clip.centres[0, 0]
        assert d[axis] == pytest.approx(sign * per_frame * (FRAMES - 1))
        assert d[1 - axis] == 0
        measured = _centroid(clip.mask[-1]) - _centroid(clip.mask[0])
        assert measured[axis] == pytest.approx(sign * per_frame * (FRAMES - 1), abs=1.0)
        edges = clip.mask[:, [0, -1], :].sum() + clip.mask[:, :, [0, -1]].sum()
        assert clip.mask.any(axis=(1, 2)).all() and edges == 0  # whole object inside the frame all clip long


def _centroid(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_still_bouncing_and_two_objects():
    still = render_prompt("a blue square standing still on a textured background", seed=1)
    assert (still.frames == still.frames[0]).all()
    assert len({tuple(p) for p in still.frames[0][~still.mask[0]]}) > 1  # textured, but dark and grey
    bounce = render_prompt("a yellow circle bouncing left and right quickly", seed=2)
    x = bounce.centres[0, :, 0]
    assert np.ptp(x) > SIZE / 2 and (np.diff(x) > 0).any() and (np.diff(x) < 0).any()
    assert (x >= 8).all() and (x <= SIZE - 8).all()
    pair = render_prompt("a red square moving right and a blue circle moving left", seed=3)
    assert pair.centres.shape == (2, FRAMES, 2)
    assert np.linalg.norm(pair.centres[0] - pair.centres[1], axis=-1).min() >= 15
    colours = {tuple(int(v) for v in px) for px in pair.frames.reshape(-1, 3)}
    assert colours == {COLOURS["red"], COLOURS["blue"], BACKGROUNDS["plain"]}


@pytest.mark.parametrize("combo", core_combos()[::7])
def test_quality_checks_pass_on_rendered_clips(combo):
    """The checks of the quality bar accept the training data itself."""
    prompt = core_prompt(*combo)
    for background in BACKGROUNDS:
        scene = Scene(parse_prompt(prompt).objects, background)
        check = check_video(render(scene, seed=11).frames, prompt)
        assert check.colour_ok and check.motion_ok, check
    assert analyse(render_prompt(prompt, 0).frames).dominant == combo[0]


def test_quality_checks_reject_wrong_videos():
    right = render_prompt("a red square moving right", seed=0).frames
    assert not check_video(right, "a red square moving left").motion_ok
    assert not check_video(right, "a red square standing still").motion_ok
    assert not check_video(right, "a blue square moving right").colour_ok
    blank = np.zeros((FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    c = check_video(blank, "a red square moving right")
    assert c.dominant is None and not c.colour_ok and not c.motion_ok
    assert check_video(right, "a red square moving right quickly").motion_ok is None  # not part of the bar
    assert set(MOTIONS) == {"still", "left", "right", "up", "down"}


def test_bench_prompt_file_is_in_the_grammar():
    from sencache_bench.prompts import read_prompt_file
    from sencache_bench.spec import REPO_ROOT

    pairs = read_prompt_file(REPO_ROOT / "prompts" / "bench.yaml")
    assert {g for _, g in pairs} == {"static", "neutral", "dynamic"}
    for text, group in pairs:
        scene = parse_prompt(text)
        assert scene.is_static == (group == "static"), text
