"""Full-size FLOPs from the architecture files: the papers' Wan figures, every model, the CLI."""

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from sencache_bench.cli import flops as flops_cli
from sencache_bench.errors import BenchError
from sencache_bench.measure.full_size import (ARCHITECTURES, _build_diffusers, count_full_size, load_architecture,
                                              policy_total)
from sencache_bench.models import MODELS

FULL_SIZE = ["wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "cogvideox-2b", "cogvideox-5b", "cogvideox1.5-5b", "ltx-video",
             "hunyuanvideo", "opensora-1.2", "wan2.2-t2v-a14b", "wan2.2-ti2v-5b",
             "wan2.1-i2v-14b-480p", "hunyuanvideo-1.5", "hunyuanvideo-1.5-i2v"]
SLOW = {"wan2.1-t2v-14b", "cogvideox1.5-5b", "hunyuanvideo", "wan2.2-t2v-a14b", "wan2.1-i2v-14b-480p"}


@pytest.fixture(scope="module")
def wan():
    """Wan 2.1 T2V-1.3B at the papers' setting: 832x480, 81 frames, 50 steps, CFG (100 calls)."""
    return count_full_size("wan2.1-t2v-1.3b", height=480, width=832, frames=81, steps=50)


def test_wan_matches_the_papers_attention_free_figures(wan):
    assert (wan.calls, wan.batch, wan.branches, wan.prompt_passes) == (100, 1, ("cond", "uncond"), 2)
    loop = wan.transformer_loop
    assert loop.no_attn == pytest.approx(8.32e15, rel=0.015)  # SemCache Table 1
    assert loop.no_attn == pytest.approx(8_244_043e9, rel=0.015)  # SenCache supplement
    assert loop.total == pytest.approx(28.30e15, rel=0.02)  # EVALUATION.md: 71% of it attention
    assert loop.attention / loop.total == pytest.approx(0.71, abs=0.01)


def test_wan_attention_matches_the_hand_formula(wan):
    """Per layer: self-attention 4*S^2*dim over S = 21*30*52 latent tokens, cross-attention 4*S*512*dim."""
    tokens, dim, text, layers = 21 * (480 // 16) * (832 // 16), 12 * 128, 512, 30
    assert wan.transformer_call.attention == layers * (4 * tokens**2 * dim + 4 * tokens * text * dim)
    assert wan.call_cost.outside[1] == 0  # all attention sits in the blocks
    assert len(wan.call_cost.blocks) == layers
    assert sum(b[0] for b in wan.call_cost.blocks) + wan.call_cost.outside[0] == wan.transformer_call.total


def test_total_is_text_encoder_plus_loop_plus_vae(wan):
    parts = (wan.text_encoder, wan.transformer_loop, wan.vae_decode)
    assert wan.total.total == sum(p.total for p in parts)
    assert wan.total.no_attn == sum(p.no_attn for p in parts)
    assert all(0 < p.no_attn <= p.total for p in parts)


def test_policy_total_counts_computed_calls_only(wan):
    fixed = wan.text_encoder + wan.vae_decode
    assert policy_total(wan, 50) == wan.total
    assert policy_total(wan, 0) == fixed
    assert policy_total(wan, 25) == fixed + wan.transformer_call.scale(50)
    assert policy_total(wan, {"cond": 21, "uncond": 25}) == fixed + wan.transformer_call.scale(46)
    with pytest.raises(BenchError, match="between 0 and the 50 steps"):
        policy_total(wan, 51)
    with pytest.raises(BenchError, match="cond_uncond"):
        policy_total(wan, {"cond_uncond": 10})


# counted elsewhere: wan2.1-t2v-1.3b by the fixture above, hunyuanvideo-1.5-i2v by test_hunyuanvideo15_i2v.py
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in FULL_SIZE if n not in ("wan2.1-t2v-1.3b", "hunyuanvideo-1.5-i2v")])
def test_every_full_size_model_counts_offline(name):
    d = MODELS.get(name).defaults
    f = count_full_size(name, d.height, d.width, d.frames, d.steps)
    for part in (f.text_encoder, f.transformer_call, f.vae_decode):
        assert 0 < part.no_attn <= part.total
    assert f.transformer_call.attention > 0
    assert f.total.total == f.text_encoder.total + f.transformer_loop.total + f.vae_decode.total


@pytest.mark.parametrize("name", FULL_SIZE)
def test_architecture_files_carry_sources_and_the_vae_factors(name):
    """Each file names its sources; decoding 3 latent frames on meta gives the video the factors say."""
    arch = load_architecture(name)
    assert set(arch["_source"]) - {"experts", "image_encoder"} == {"transformer", "vae", "text_encoder", "pipeline"}
    # image tokens come from a cited image encoder, or from the pipeline itself (HunyuanVideo 1.5 text-to-video
    # passes zero SigLIP tokens, masked): then its pipeline source says so
    assert "image_encoder" not in arch["_source"] or "image_tokens" in arch
    assert "image_tokens" not in arch or "image_encoder" in arch["_source"] \
        or f"{arch['image_tokens']} SigLIP image tokens" in arch["_source"]["pipeline"]
    assert ("experts" in arch["_source"]) == ("experts" in arch)
    assert arch["repo_id"] == MODELS.get(name).repo_id
    vae, s, t = arch["vae"], arch["vae"]["spatial_compression"], arch["vae"]["temporal_compression"]
    model = _build_diffusers(vae)
    z = torch.empty(1, vae["config"].get("latent_channels", vae["config"].get("z_dim")), 3, 2, 3, device="meta")
    temb = {"temb": torch.empty(1, device="meta")} if vae["config"].get("timestep_conditioning") else {}
    assert model.decode(z, **temb, return_dict=False)[0].shape == (1, 3, 2 * t + 1, 2 * s, 3 * s)


def test_every_architecture_file_is_a_registered_model():
    assert sorted(p.stem for p in ARCHITECTURES.glob("*.json")) == sorted(FULL_SIZE)
    assert all(MODELS.canonical(name) == name for name in FULL_SIZE)


@pytest.mark.parametrize("model, match", [("tiny-wan", "no architecture file"), ("nope", "unknown model")])
def test_unknown_or_tiny_models_are_refused(model, match):
    with pytest.raises(BenchError, match=match):
        count_full_size(model, 480, 832, 81, 50)


def test_invalid_sizes_are_refused():
    with pytest.raises(BenchError, match="multiple of 16"):
        count_full_size("wan2.1-t2v-1.3b", 470, 832, 81, 50)


# --- the `flops` command (registered by the lead as app.command("flops")(flops)) ---------------------------

@pytest.fixture
def cli(wan, monkeypatch):
    calls = []

    def fake_count(*args):
        calls.append(args)
        return wan

    monkeypatch.setattr("sencache_bench.measure.full_size.count_full_size", fake_count)  # imported when run
    app = typer.Typer()
    app.command("flops")(flops_cli.flops)
    app.command("other")(lambda: None)  # keep `flops` a sub-command, as in the real app
    return app, calls


def test_cli_json_with_nfe(cli):
    app, calls = cli
    result = CliRunner().invoke(app, ["flops", "--model", "wan-1.3b", "--steps", "50", "--nfe", "25",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    assert calls == [("wan2.1-t2v-1.3b", 480, 832, 81, 50, 5.0)]
    out = json.loads(result.output)
    assert out["transformer_loop"]["pflops"] == pytest.approx(28.30, rel=0.02)
    assert out["transformer_loop"]["pflops_no_attn"] == pytest.approx(8.21, rel=0.01)
    assert out["policy"]["nfe"] == 25 and 0.45 < out["policy"]["reduction"] < 0.5


def test_cli_table_shows_both_conventions(cli):
    app, _ = cli
    result = CliRunner().invoke(app, ["flops", "--model", "wan2.1-t2v-1.3b"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "28.30" in result.output and "8.21" in result.output and "no-attn" in result.output


def test_cli_reads_a_spec(cli, tmp_path):
    app, calls = cli
    spec = tmp_path / "spec.yaml"
    spec.write_text("model:\n  name: wan2.1-t2v-1.3b\nsampling:\n  steps: 20\n  frames: 33\nprompts: ['a cat']\n")
    assert CliRunner().invoke(app, ["flops", str(spec), "--format", "json"]).exit_code == 0
    assert calls == [("wan2.1-t2v-1.3b", 480, 832, 33, 20, 5.0)]


@pytest.mark.parametrize("args, match", [([], "give either a model name or a spec"),
                                         (["--model", "tiny-wan"], "no architecture file")])
def test_cli_errors_are_bench_errors(args, match):
    with pytest.raises(BenchError, match=match):
        flops_cli.flops(**{"model": args[1]} if args else {})
