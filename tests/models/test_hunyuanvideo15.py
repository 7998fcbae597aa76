"""HunyuanVideo 1.5 (tiny-hunyuanvideo15, hunyuanvideo-1.5): our pipeline subclass reproduces diffusers' own call bit
for bit, its CFG branches and per-branch NFE by hand, FLOPs against a direct FlopCounterMode count, the meta-device
transformer against diffusers' forward, the full-size count by hand, and one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sencache_bench.errors import BenchError, SpecError
from sencache_bench.measure.flops import count_flops
from sencache_bench.models import MODELS
from sencache_bench.models.hunyuanvideo15 import HunyuanVideo15FlopModel
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve
from tests.measure.test_calls import PARTS, direct_count  # the direct FlopCounterMode count

PROMPT = "a red ball bouncing on grass"
STEPS = 4


def _spec(tmp_path, policy=None, **sampling):
    return resolve({"model": {"name": "tiny-hunyuanvideo15"}, "prompts": [PROMPT], "metrics": ["psnr"],
                    "sampling": {"steps": STEPS, "seeds": [0], **sampling}, "policy": policy or {"name": "none"},
                    "output": {"dir": str(tmp_path / "out"), "save_videos": False}})


def tiny_pipe(name: str):
    """A tiny model's pipeline as a session holds it: built, every component in eval mode, no progress bar."""
    pipe = MODELS.get(name).build(0)
    for comp in pipe.components.values():
        if isinstance(comp, torch.nn.Module):
            comp.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe("tiny-hunyuanvideo15")


def test_official_settings():
    """Official README (480p T2V: CFG 6, shift 5, 50 steps, 121 frames) and the pipeline's 16:9 bucket at 480p."""
    entry = MODELS.get("hunyuanvideo-1.5")
    d = entry.defaults
    assert (d.steps, d.guidance_scale, d.shift, d.frames, d.height, d.width) == (50, 6.0, 5.0, 121, 480, 848)
    assert entry.repo_id == "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v"
    assert entry.family.pipeline_cls().__name__ == "BenchHunyuanVideo15Pipeline"
    assert entry.family.branches(6.0) == ("cond", "uncond") and entry.family.branches(1.0) == ("cond",)


@pytest.mark.parametrize("guidance", [None, 3.0])
def test_pipeline_reproduces_diffusers_call(pipe, guidance):
    """Our call (guidance_scale, callback) equals diffusers' HunyuanVideo15Pipeline.__call__ bit for bit, the guider
    set to the same scale; the callback sees every step."""
    from diffusers import ClassifierFreeGuidance, HunyuanVideo15Pipeline

    common = dict(height=32, width=32, num_frames=9, num_inference_steps=3, output_type="np")
    steps = []
    ours = pipe(PROMPT, guidance_scale=guidance, generator=torch.Generator().manual_seed(0),
                callback_on_step_end=lambda p, i, t, kw: steps.append(i) or kw, **common).frames[0]
    guider = pipe.guider
    try:
        pipe.guider = ClassifierFreeGuidance(guidance_scale=guidance or guider.guidance_scale)
        theirs = HunyuanVideo15Pipeline.__call__(pipe, PROMPT, generator=torch.Generator().manual_seed(0),
                                                 **common).frames[0]
    finally:
        pipe.guider = guider
    assert np.array_equal(ours, theirs) and steps == [0, 1, 2]


def test_prompt_reaches_the_transformer(pipe):
    """The chat template's prefix is cropped (as the official 108 tokens are), so the Qwen tokens the transformer
    sees start with the prompt: two prompts give two embeddings."""
    embeds = [pipe.encode_prompt(p, device="cpu")[0] for p in ("a red ball", "a blue cat")]
    ids = pipe.tokenizer.apply_chat_template(
        [[{"role": "system", "content": pipe.system_message}, {"role": "user", "content": "a red ball"}]],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt").input_ids[0]
    assert pipe.tokenizer.decode(ids[pipe.prompt_template_encode_start_idx:]).startswith("a red ball<|im_end|>")
    assert not torch.allclose(embeds[0], embeds[1])


def test_static_every_2_counts_per_branch_by_hand(tmp_path):
    """static every=2 over 4 steps: each branch computes steps 0 and 2 (by hand: step % 2 == 0), NFE 2 per branch;
    the calls alternate cond, uncond within a step at the step's timestep. Guidance 1: one branch only."""
    runner = Runner(_spec(tmp_path, {"name": "static", "every": 2}), log=lambda s: None)
    rec = json.loads(runner.run_item(*runner.items()[0]).read_text())
    assert rec["nfe_per_branch"] == {"cond": 2, "uncond": 2} and rec["calls_per_branch"] == {"cond": 4, "uncond": 4}
    trace = rec["trace"]
    assert [(c["branch"], c["step"]) for c in trace] == [(b, s) for s in range(STEPS) for b in ("cond", "uncond")]
    assert [c["computed"] for c in trace] == [s % 2 == 0 for s in range(STEPS) for _ in range(2)]
    assert all(trace[2 * s]["t"] == trace[2 * s + 1]["t"] for s in range(STEPS))
    one = Runner(_spec(tmp_path / "g1", {"name": "static", "every": 2}, guidance_scale=1.0), log=lambda s: None)
    rec1 = json.loads(one.run_item(*one.items()[0]).read_text())
    assert rec1["nfe_per_branch"] == {"cond": 2} and {c["branch"] for c in rec1["trace"]} == {"cond"}


@pytest.mark.parametrize("policy", [{"name": "static", "every": 2}, {"name": "easycache", "tau": 0.5},
                                    {"name": "semcache", "alpha": 0.4, "beta": 0.6}], ids=lambda p: p["name"])
def test_flops_equal_a_direct_count(tmp_path, policy):
    """A cached run's record, part by part, equals torch's FlopCounterMode over the same generation (SemCache: its
    TMM calls on the kept tokens; EasyCache: its reused calls run nothing)."""
    spec = _spec(tmp_path, policy)
    runner = Runner(spec, log=lambda s: None)
    rec = json.loads(runner.run_item(*runner.items()[0]).read_text())
    holder = {}
    direct = direct_count(runner.session, lambda: holder.setdefault(
        "gen", runner.session.generate(PROMPT, 0, policy=spec.policy)))
    for part in PARTS:
        assert direct[part][0] > 0, part
        assert rec["flops"][part] == direct[part][0], part
        assert rec["flops"][f"{part}_no_attn"] == direct[part][0] - direct[part][1], part
    assert direct["outside"][0] == 0
    assert rec["flops"]["transformer"] < rec["reference"]["flops"]["transformer"]


def test_flop_model_matches_diffusers_forward(pipe):
    """The meta-countable forward (no token reordering) gives diffusers' output and the same FLOPs on real tensors."""
    tr = pipe.transformer
    flop_model = HunyuanVideo15FlopModel.from_config(tr.config).eval()
    flop_model.load_state_dict(tr.state_dict())
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1.0] * 5 + [0.0] * 3])
    glyph_mask = torch.tensor([[1.0] * 2 + [0.0] * 2])
    kwargs = dict(hidden_states=torch.randn(1, 9, 3, 4, 4, generator=g), timestep=torch.tensor([700.0]),
                  encoder_hidden_states=torch.randn(1, 8, 16, generator=g), encoder_attention_mask=mask,
                  encoder_hidden_states_2=torch.randn(1, 4, 8, generator=g), encoder_attention_mask_2=glyph_mask,
                  image_embeds=torch.zeros(1, 4, 12))
    with torch.no_grad():
        theirs = count_flops(lambda: tr(**kwargs, return_dict=False))
        ours = count_flops(lambda: flop_model(**kwargs))
        out = tr(**kwargs, return_dict=False)[0], flop_model(**kwargs)[0]
    torch.testing.assert_close(out[1], out[0], rtol=1e-5, atol=1e-5)
    assert (ours.total, ours.attention) == (theirs.total, theirs.attention)


@pytest.mark.parametrize("policy, reason", [
    ({"name": "semcache"}, "SemCache has no published (alpha, beta) for the hunyuanvideo15 family"),
    ({"name": "fastercache"}, "the hunyuanvideo15 family has no fastercache adapter"),
    ({"name": "teacache", "thresh": 0.1}, "coefficients"),
])
def test_policies_that_cannot_run_are_refused_in_one_line(tmp_path, policy, reason):
    with pytest.raises((SpecError, BenchError)) as err:
        _spec(tmp_path, policy)
    assert reason in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.slow
def test_full_size_transformer_call_by_hand():
    """848x480, 121 frames: latent 31 x 30 x 53 (stride 4, 16, 16), patch 1: 49290 video tokens + 1000 Qwen + 256
    glyph + 729 image = 51275 joint tokens, width 2048, 54 blocks: attention 4 * N^2 * 2048 per block plus the token
    refiner's 2 layers over the 1000 Qwen tokens. A block's matmuls: q, k, v, out (4 d^2) and the 4x MLP (8 d^2) per
    token, and two 6d modulations of temb: 2 * (12 d^2 * N + 12 d^2) = 24 d^2 (N + 1)."""
    from sencache_bench.measure.full_size import count_full_size

    f = count_full_size("hunyuanvideo-1.5", 480, 848, 121, 50)
    n, d = 31 * 30 * 53 + 1000 + 256 + 729, 2048
    assert f.transformer_call.attention == 54 * 4 * n * n * d + 2 * 4 * 1000 * 1000 * d
    blocks = f.call_cost.blocks
    assert len(blocks) == 54 and all(b[0] - b[1] == 24 * d * d * (n + 1) for b in blocks)
    assert f.calls == 100 and f.prompt_passes == 2
