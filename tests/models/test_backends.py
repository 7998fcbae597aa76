"""Each tiny backend runs the real diffusers pipeline: eval mode, CFG branches, determinism, loading by path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sencache_bench.errors import BenchError
from sencache_bench.models import MODELS
from sencache_bench.runner import Session
from sencache_bench.spec import resolve

TINY_MODELS = [name for name in MODELS if name.startswith("tiny-")]
IMAGE = str(Path(__file__).resolve().parents[2] / "configs" / "images" / "p002.png")  # for image-to-video models

BRANCHES = {"tiny-wan": {"cond", "uncond"}, "tiny-wan22": {"cond", "uncond"}, "tiny-wan22-ti2v": {"cond", "uncond"},
            "tiny-wan-i2v": {"cond", "uncond"}, "tiny-cogvideox": {"cond_uncond"}, "tiny-ltx": {"cond_uncond"},
            "tiny-hunyuanvideo": {"cond"}, "tiny-opensora": {"cond_uncond"}, "tiny-hunyuanvideo15": {"cond", "uncond"},
            "tiny-hunyuanvideo15-i2v": {"cond", "uncond"}}


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_backend_generates_deterministically(name, tiny_spec):
    image = {"image": IMAGE} if MODELS.get(name).image == "required" else {}
    spec = resolve(tiny_spec(model={"name": name}, sampling={"steps": 3, **image}))
    session = Session(spec)
    for comp in session.pipe.components.values():
        if isinstance(comp, torch.nn.Module):
            assert not any(m.training for m in comp.modules()), f"{type(comp).__name__} left in train mode"
    a = session.generate("a red ball bouncing on grass", seed=0)
    b = session.generate("a red ball bouncing on grass", seed=0)
    c = session.generate("a red ball bouncing on grass", seed=1)
    assert a.frames.shape == (9, 32, 32, 3) and a.frames.dtype.name == "uint8"
    assert (a.frames == b.frames).all(), "same prompt and seed must give the same video"
    assert not (a.frames == c.frames).all(), "another seed must give another video"
    per_branch = {}
    for call in a.calls:
        per_branch[call.branch] = per_branch.get(call.branch, 0) + 1
        assert call.computed and call.forward_ran and len(call.blocks_ran) == len(session.blocks)
    assert set(per_branch) == BRANCHES[name]
    assert all(n == 3 for n in per_branch.values())
    assert [c.step for c in a.calls if c.branch == next(iter(BRANCHES[name]))] == [0, 1, 2]


@pytest.mark.parametrize("name", ["tiny-wan", "tiny-cogvideox", "tiny-hunyuanvideo", "tiny-opensora"])
def test_save_pretrained_then_load_by_path(name, tiny_spec, tmp_path):
    """The real from_pretrained path: a saved tiny pipeline loads by directory, family read from model_index.json."""
    entry = MODELS.get(name)
    entry.build(0).save_pretrained(tmp_path / "pipe")
    d = entry.defaults
    sampling = {"steps": 2, "height": d.height, "width": d.width, "frames": d.frames,
                "guidance_scale": d.guidance_scale, "shift": d.shift, "text_length": 16}
    loaded_spec = resolve(tiny_spec(model={"name": str(tmp_path / "pipe")}, sampling=sampling))
    assert loaded_spec.family.name == entry.family.name and loaded_spec.entry is None
    loaded = Session(loaded_spec).generate("a quiet library", seed=0)
    assert loaded.frames.shape == (9, 32, 32, 3)
    if name != "tiny-hunyuanvideo":  # its tiny entry also sets a short prompt template
        built = Session(resolve(tiny_spec(model={"name": name}, sampling=sampling))).generate("a quiet library", seed=0)
        assert (built.frames == loaded.frames).all(), "loading by path must give the same pipeline"


def test_missing_weights_offline_is_one_clear_line(tiny_spec, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = resolve(tiny_spec(model={"name": "wan2.1-t2v-1.3b"}, sampling={}))
    with pytest.raises(BenchError) as err:
        Session(spec)
    msg = str(err.value)
    assert "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in msg and "hf download" in msg and "\n" not in msg


def test_missing_local_directory(tiny_spec, tmp_path):
    from sencache_bench.models.base import load_pretrained
    from sencache_bench.models.wan import WAN

    with pytest.raises(BenchError, match="does not exist"):
        load_pretrained(WAN, str(tmp_path / "nothing" / "here"), torch.float32)
