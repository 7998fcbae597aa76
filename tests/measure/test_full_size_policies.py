"""Every policy on every registered full-size architecture (issue 13): what the tiny configs hide.

Each full-size transformer is built from its shipped config (``measure/architectures/<model>.json``) at full
width, heads, patch sizes and text width, with depth cut to 2 blocks per stack (HunyuanVideo: 2 dual-stream, 2
single-stream), random seeded weights, inside its real pipeline class with small stand-ins for the text encoder
(output width = the transformer's text width) and the VAE (the real latent channels and compression factors).
It runs through the harness's own ``Runner`` (references, records, NFE, trace, FLOP pricing) at the smallest
legal height and width and the fewest frames that give 3 post-patch latent frames (so TMM can drop one), for a
few steps, under every policy the family supports, each set so that it reuses. CPU, about a minute per model.
"""

from __future__ import annotations

import dataclasses
import gc
import math

import pytest
import torch

from sencache_bench.errors import BenchError
from sencache_bench.measure.full_size import load_architecture
from sencache_bench.models import FAMILIES, MODELS
from sencache_bench.models.tokenizers import clip_tokenizer, llama_tokenizer, t5_tokenizer
from sencache_bench.policies.sencache import forced_ends
from sencache_bench.policies.teacache import PUBLISHED as TEACACHE_PUBLISHED
from sencache_bench.results.store import read_json
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve

pytestmark = pytest.mark.slow

FULL_SIZE = ["wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "cogvideox-2b", "cogvideox-5b", "cogvideox1.5-5b", "ltx-video",
             "hunyuanvideo", "wan2.2-ti2v-5b", "hunyuanvideo-1.5"]
#: registered full-size models this test does not build yet, and why
NOT_YET_MODELS = {"opensora-1.2": "its pipeline is ours (T5 + our VAE), not a diffusers class with the stand-ins "
                                  "built here; tests/models/test_opensora.py runs every policy on tiny-opensora and "
                                  "checks the full-size call's FLOPs on the meta device",
                  "wan2.1-i2v-14b-480p": "WanImageToVideoPipeline needs a CLIP image encoder and a conditioning image "
                                         "that build_pipeline does not make; tests/models/test_i2v.py runs tiny-wan-i2v "
                                         "(the same classes) against a direct count and the full-size call by hand",
                  "hunyuanvideo-1.5-i2v": "HunyuanVideo15ImageToVideoPipeline needs a SigLIP image encoder and a "
                                          "conditioning image that build_pipeline does not make; its transformer is "
                                          "hunyuanvideo-1.5's (task_type aside), built here at full width, and "
                                          "tests/models/test_hunyuanvideo15_i2v.py runs tiny-hunyuanvideo15-i2v (the "
                                          "same classes) against a direct count"}
STEPS = 6
TEXT_LENGTH = 8  # text tokens (the width is the real one; the length is not part of the architecture)
# smallest legal height = width per family (spatial multiple); frames giving 3 post-patch latent frames
SIZE = {"wan": (16, 9), "cogvideox": (16, 9), "ltx": (32, 17), "hunyuanvideo": (16, 9), "hunyuanvideo15": (16, 9)}
# cogvideox1.5-5b: temporal patch 2, 5 latent frames padded to 6, 3 after patching; wan2.2-ti2v-5b: 16x VAE, patch 2
SIZE_OVERRIDE = {"cogvideox1.5-5b": (16, 17), "wan2.2-ti2v-5b": (32, 9)}


def test_every_registered_full_size_model_is_covered():
    from sencache_bench.measure.full_size import ARCHITECTURES

    assert sorted(p.stem for p in ARCHITECTURES.glob("*.json")) == sorted(FULL_SIZE + list(NOT_YET_MODELS)
                                                                          + list(TWO_EXPERTS))
    assert all(MODELS.get(n).build is None for n in FULL_SIZE)


# ---------------------------------------------------------------------------------------------------
# The reduced full-width pipelines
# ---------------------------------------------------------------------------------------------------
def _transformer(arch: dict) -> torch.nn.Module:
    config = dict(arch["transformer"]["config"])
    for key in ("num_layers", "num_single_layers"):
        if key in config:
            config[key] = 2
    if "max_text_seq_length" in config:  # CogVideoX: the pipeline's max_sequence_length must equal it
        config["max_text_seq_length"] = TEXT_LENGTH
    torch.manual_seed(0)
    return _real_class(arch["transformer"]["class"]).from_config(config).eval()


def _real_class(name: str):
    """The diffusers class an architecture names; for a family's meta-device counting class (HunyuanVideo 1.5's
    HunyuanVideo15FlopModel), the diffusers transformer it subclasses: the pipeline runs the real one."""
    import diffusers

    from sencache_bench.measure.full_size import _model_class

    return next(c for c in _model_class(name).__mro__
                if c.__module__.startswith("diffusers.") and hasattr(diffusers, c.__name__))


def _t5(width: int, umt5: bool = False):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    cfg = dict(vocab_size=len(t5_tokenizer()), d_model=width, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
               relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(0)
    if umt5:
        return UMT5EncoderModel(UMT5Config(feed_forward_proj="gated-gelu", **cfg))
    return T5EncoderModel(T5Config(**cfg))


def build_pipeline(name: str):
    """The model's pipeline class with the reduced full-width transformer and the stand-ins."""
    import diffusers

    arch = load_architecture(name)
    entry = MODELS.get(name)
    family = entry.family.name
    transformer = _transformer(arch)
    cfg = transformer.config
    torch.manual_seed(0)
    if family == "wan" and arch.get("expand_timesteps"):  # Wan 2.2 TI2V-5B: the Wan 2.2 VAE's layout (48 channels,
        # pixel patch 2, 16x spatial, 4x temporal) and a timestep per token
        vae = diffusers.AutoencoderKLWan(base_dim=8, decoder_base_dim=8, z_dim=cfg.in_channels, dim_mult=[1, 1, 1, 1],
                                         num_res_blocks=1, temperal_downsample=[False, True, True], is_residual=True,
                                         in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
                                         scale_factor_temporal=4, latents_mean=[0.0] * cfg.in_channels,
                                         latents_std=[1.0] * cfg.in_channels)
        parts = dict(tokenizer=t5_tokenizer(), text_encoder=_t5(cfg.text_dim, umt5=True), vae=vae,
                     scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0), expand_timesteps=True)
    elif family == "wan":
        vae = diffusers.AutoencoderKLWan(base_dim=3, z_dim=cfg.in_channels, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                         temperal_downsample=[False, True, True])
        scheduler = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                      flow_shift=3.0)
        parts = dict(tokenizer=t5_tokenizer(), text_encoder=_t5(cfg.text_dim, umt5=True), vae=vae,
                     scheduler=scheduler)
    elif family == "hunyuanvideo15":
        return _hunyuanvideo15(transformer, arch)
    elif family == "cogvideox":
        vae = diffusers.AutoencoderKLCogVideoX(
            in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
            latent_channels=cfg.in_channels, layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4)
        scheduler = (diffusers.CogVideoXDDIMScheduler() if name == "cogvideox-2b"
                     else diffusers.CogVideoXDPMScheduler(timestep_spacing="trailing"))
        parts = dict(tokenizer=t5_tokenizer(), text_encoder=_t5(cfg.text_embed_dim), vae=vae, scheduler=scheduler)
    elif family == "ltx":
        vae = diffusers.AutoencoderKLLTXVideo(
            in_channels=3, out_channels=3, latent_channels=cfg.in_channels, block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, True, False),
            decoder_spatio_temporal_scaling=(True, True, True, False),
            decoder_inject_noise=(False, False, False, False, False), upsample_residual=(False, False, False, False),
            upsample_factor=(1, 1, 1, 1), timestep_conditioning=False, patch_size=4, patch_size_t=1,
            encoder_causal=True, decoder_causal=False)
        vae.use_framewise_encoding = vae.use_framewise_decoding = False
        parts = dict(tokenizer=t5_tokenizer(), text_encoder=_t5(cfg.caption_channels), vae=vae,
                     scheduler=diffusers.FlowMatchEulerDiscreteScheduler())
    else:
        from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

        vae = diffusers.AutoencoderKLHunyuanVideo(
            in_channels=3, out_channels=3, latent_channels=cfg.in_channels,
            down_block_types=("HunyuanVideoDownBlock3D",) * 4, up_block_types=("HunyuanVideoUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8), layers_per_block=1, act_fn="silu", norm_num_groups=4,
            scaling_factor=0.476986, spatial_compression_ratio=8, temporal_compression_ratio=4,
            mid_block_add_attention=True)
        llama_tok, clip_tok = llama_tokenizer(), clip_tokenizer()
        torch.manual_seed(0)
        llama = LlamaModel(LlamaConfig(
            bos_token_id=1, eos_token_id=2, pad_token_id=3, hidden_size=cfg.text_embed_dim, intermediate_size=37,
            num_attention_heads=4, num_key_value_heads=4, head_dim=8, num_hidden_layers=3,
            vocab_size=len(llama_tok), hidden_act="silu", max_position_embeddings=512))
        torch.manual_seed(0)
        clip = CLIPTextModel(CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=cfg.pooled_projection_dim,
            intermediate_size=37, num_attention_heads=4, num_hidden_layers=1, vocab_size=len(clip_tok),
            hidden_act="gelu", projection_dim=32, max_position_embeddings=77))
        parts = dict(text_encoder=llama, tokenizer=llama_tok, text_encoder_2=clip, tokenizer_2=clip_tok, vae=vae,
                     scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0))
    if "experts" in arch:  # Wan 2.2: a second expert of the same architecture, the official boundary and shift
        torch.manual_seed(1)
        parts.update(transformer_2=_real_class(arch["transformer"]["class"]).from_config(cfg).eval(),
                     boundary_ratio=arch["experts"]["boundary_ratio"])
        parts["scheduler"] = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction",
                                                               use_flow_sigmas=True, flow_shift=arch["experts"]["shift"])
    return getattr(diffusers, entry.family.pipeline_class)(transformer=transformer, **parts)


def _hunyuanvideo15(transformer, arch: dict):
    """HunyuanVideo 1.5's pipeline on the reduced transformer: a 3-layer Qwen2.5-VL text model and a 1-layer ByT5
    encoder at the real output widths (3584, 1472), a 5-level VAE stand-in with the real 32 latent channels and
    16x / 4x compression, 4 zero SigLIP tokens of the real width (the pipeline's, for text-to-video)."""
    from diffusers import AutoencoderKLHunyuanVideo15, ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

    from sencache_bench.models.hunyuanvideo15 import BenchHunyuanVideo15Pipeline, qwen_tokenizer, template_prefix_tokens

    cfg, vae_cfg = transformer.config, arch["vae"]["config"]
    tokenizer, tokenizer_2 = qwen_tokenizer(), ByT5Tokenizer()
    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanVideo15(in_channels=3, out_channels=3, latent_channels=vae_cfg["latent_channels"],
                                      block_out_channels=(64,) * 5, layers_per_block=1,  # >= 2 x latent channels
                                      spatial_compression_ratio=vae_cfg["spatial_compression_ratio"],
                                      temporal_compression_ratio=vae_cfg["temporal_compression_ratio"],
                                      downsample_match_channel=False, upsample_match_channel=False)
    torch.manual_seed(0)
    text_encoder = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(  # the pipeline reads hidden_states[-3]
        vocab_size=len(tokenizer), hidden_size=cfg.text_embed_dim, intermediate_size=16, num_hidden_layers=3,
        num_attention_heads=28, num_key_value_heads=4, rope_theta=1000000.0,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        rope_scaling={"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"}))
    torch.manual_seed(0)
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), d_model=cfg.text_embed_2_dim, d_kv=8, d_ff=16,
                                             num_layers=1, num_heads=2, relative_attention_num_buckets=8,
                                             pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    pipe = BenchHunyuanVideo15Pipeline(
        text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
        guider=ClassifierFreeGuidance(guidance_scale=6.0))
    pipe.tokenizer_max_length, pipe.tokenizer_2_max_length, pipe.vision_num_semantic_tokens = 16, TEXT_LENGTH, 4
    pipe.prompt_template_encode_start_idx = template_prefix_tokens(pipe)
    return pipe


def full_size_spec(name: str, out, policy: dict):
    """The registered model's spec at the small size, built by :func:`build_pipeline` instead of downloaded."""
    entry = MODELS.get(name)
    side, frames = SIZE_OVERRIDE.get(name, SIZE[entry.family.name])
    spec = resolve({"model": {"name": name}, "prompts": ["a red ball"], "policy": policy, "metrics": ["psnr"],
                    "sampling": {"steps": STEPS, "height": side, "width": side, "frames": frames, "seeds": [0]},
                    "output": {"dir": str(out), "save_videos": False},
                    "timing": {"timed": False}})  # what runs and what it costs, not how fast: one generation
    kwargs = {"max_sequence_length": TEXT_LENGTH, **{k: v for k, v in entry.call_kwargs.items()
                                                     if k == "guidance_scale_2"}}
    if entry.family.name == "hunyuanvideo":
        kwargs["prompt_template"] = {"template": "{}", "crop_start": 0}
    stand_in = dataclasses.replace(entry, build=lambda seed: build_pipeline(name), repo_id=None, call_kwargs=kwargs)
    return dataclasses.replace(spec, entry=stand_in, source=None)


# ---------------------------------------------------------------------------------------------------
# Policies, each set to reuse (a random model gives no meaningful thresholds)
# ---------------------------------------------------------------------------------------------------
def policies(family: str, profile: str, magcache_ratios: str | None,
             teacache_coefficients: str | None = None) -> dict[str, dict]:
    """Every policy the family supports, keyed by a label (TeaCache: the published coefficients, or a
    calibrated file where none is published)."""
    p = {
        "static": {"name": "static", "every": 2},
        "sencache": {"name": "sencache", "eps_start": 1e9, "eps_main": 1e9, "max_reuse": 2, "profile": profile},
        "teacache": ({"name": "teacache", "coefficients": teacache_coefficients, "thresh": 1e9}
                     if teacache_coefficients else {"name": "teacache", "preset": "slow", "thresh": 1e9}),
        "magcache": {"name": "magcache", "thresh": 1e9, "max_reuse": 2,
                     **({"ratios": magcache_ratios} if magcache_ratios else {})},
        "semcache": {"name": "semcache", "alpha": 0.0, "beta": 100.0, "tmm": False},  # error: paper
        "semcache-relative": {"name": "semcache", "alpha": 0.0, "beta": 100.0, "error": "relative", "tmm": False},
        # p_s = 0: every call computes, TMM drops a frame of each computed call after the warm-up
        "semcache-tmm": {"name": "semcache", "alpha": 0.0, "beta": 0.0, "keep_ratio": 0.5},
        "fbc": {"name": "fbc", "threshold": 1e9},
        "pab": {"name": "pab", "spatial_attention_timestep_skip_range": [-1, 1001],
                "cross_attention_block_skip_range": 2, "cross_attention_timestep_skip_range": [-1, 1001]},
        "taylorseer": {"name": "taylorseer", "cache_interval": 2, "disable_cache_before_step": 1},
        "taylorseer-lite": {"name": "taylorseer", "cache_interval": 2, "disable_cache_before_step": 1,
                            "use_lite_mode": True},
        "diffusers-magcache": {"name": "diffusers-magcache", "ratios": [1.0] * STEPS, "threshold": 1e9},
        "easycache": {"name": "easycache", "tau": 1e9},
        # the last step reused too: on Wan 2.2 the high-noise expert's reuse (steps 1-2 of 6) alone leaves the
        # stand-in VAE's uint8 frames unchanged, so the low-noise expert must reuse for the output to differ
        "seacache": {"name": "seacache", "threshold": 1e9, "cache_end_steps": 0},
        "dicache": {"name": "dicache", "tau": 1e9, "warmup": 0.0},  # the probe block runs on every reused call
    }
    if "split" in FAMILIES.get(family).adapters.get("adacache", {}):  # HunyuanVideo is refused (its adapter says why)
        p["adacache"] = {"name": "adacache", "codebook": {1e9: 3}, "moreg": True}  # steps 3 and 4 reused (of 6)
    if family in ("cogvideox", "hunyuanvideo"):
        p["fastercache"] = {"name": "fastercache", "spatial_attention_timestep_skip_range": [-1, 900]}
    return p


IN_BLOCK = {"pab", "taylorseer", "fastercache", "semcache-tmm"}  # every call still runs its last block


def test_the_policy_table_covers_every_registered_policy():
    """A newly registered policy needs its settings above ("none" is the reference of every run)."""
    from sencache_bench.policies import POLICIES

    covered = {p["name"] for p in policies("cogvideox", "profile.json", None).values()} | {"none"}
    assert sorted(set(POLICIES) - covered - set(NOT_YET)) == [], "add settings for these policies to policies()"


#: registered policies this test does not run yet, and why (each runs on every tiny model in its own tests)
NOT_YET = {
    "dbcache": "cache-dit's policies arrived after this test; tests/policies/test_cachedit.py covers the tiny models",
    "dbprune": "as dbcache",
    "sencache-global": "needs a displacement table calibrated on the full-width model (a few hundred calls)",
    "lemica": "needs a LeMiCa graph calibrated on the full-width model (O(N^3) calls)",
    "dpcache": "needs its step errors calibrated on the full-width model (4 uncached generations)",
}


@pytest.mark.parametrize("name", FULL_SIZE)
def test_every_policy_runs_on_the_full_width_architecture(name, tmp_path):
    from sencache_bench.calibration import CALIBRATORS

    family = MODELS.get(name).family
    base = full_size_spec(name, tmp_path, {"name": "none"})
    runner = Runner(base, log=lambda s: None)
    session = runner.session  # builds the reduced pipeline once; every policy's runner shares it
    cfg = session.transformer.config
    assert len(session.blocks) == (4 if family.name == "hunyuanvideo" else 2)
    arch = load_architecture(name)["transformer"]["config"]
    for key in ("num_attention_heads", "attention_head_dim", "in_channels", "patch_size", "patch_size_t",
                "text_dim", "text_embed_dim", "caption_channels", "ffn_dim"):
        if key in arch:
            assert getattr(cfg, key) == arch[key] if not isinstance(arch[key], list) else \
                list(getattr(cfg, key)) == arch[key], key

    # the calibrations the policies need, on the same pipeline (SenCache: 1 generated sample, 3 calls per step)
    profile = str(CALIBRATORS.get("sencache")(runner, samples=1, out=tmp_path / "profile.json", log=lambda s: None))
    ratios = None
    if name not in ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "hunyuanvideo"):  # no published MagCache curve
        ratios = str(CALIBRATORS.get("magcache")(runner, samples=1, out=tmp_path / "ratios.json",
                                                 log=lambda s: None))
    coefficients = None
    if name not in TEACACHE_PUBLISHED:  # Wan 2.2 TI2V-5B, HunyuanVideo 1.5: none published (TeaCache #89, #97)
        coefficients = str(CALIBRATORS.get("teacache")(runner, samples=1, out=tmp_path / "coefficients.json",
                                                       log=lambda s: None))
    branches = family.branches(base.sampling.guidance_scale)
    failures = []
    for label, policy in policies(family.name, profile, ratios, coefficients).items():
        spec = dataclasses.replace(full_size_spec(name, tmp_path, policy), entry=base.entry)
        run = Runner(spec, log=lambda s: None)
        run._session = session
        try:
            record = read_json(run.run_item(*run.items()[0]))
        except Exception as err:  # noqa: BLE001 - collect every policy's failure, report them together
            failures.append(f"{label}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            continue
        problems = _check(record, label, branches, forced_ends(family.name))
        failures += [f"{label}: {p}" for p in problems]
    del session, runner
    gc.collect()
    assert not failures, f"{name}:\n" + "\n".join(failures)


def _check(record: dict, label: str, branches: tuple[str, ...], forced=None) -> list[str]:
    """NFE and trace per branch, FLOP pricing, reuse (an output that differs from the reference, finite)."""
    problems = []
    trace = record["trace"]
    if [c["branch"] for c in trace] != list(branches) * STEPS:
        problems.append(f"trace branches {[c['branch'] for c in trace][:4]}... expected {list(branches)} per step")
    per_branch = {b: sum(c["computed"] for c in trace if c["branch"] == b) for b in branches}
    if record["nfe_per_branch"] != per_branch:
        problems.append(f"nfe_per_branch {record['nfe_per_branch']} != trace {per_branch}")
    flops, ref = record["flops"], record["reference"]["flops"]
    if label in IN_BLOCK:
        if any(n != STEPS for n in per_branch.values()):
            problems.append(f"an in-block cache skipped calls: {per_branch}")
    else:
        if not all(0 < n < STEPS for n in per_branch.values()):
            problems.append(f"no reuse: NFE per branch {per_branch} of {STEPS}")
        if not 0 < flops["transformer"] < ref["transformer"]:
            problems.append(f"transformer FLOPs {flops['transformer']} not below the reference's {ref['transformer']}")
    if record["identical_to_reference"]:
        problems.append("the output equals the reference: nothing was reused")
    psnr = record["metrics"].get("psnr")
    if psnr is None or math.isnan(psnr):
        problems.append(f"psnr {psnr}")
    if label == "semcache-tmm":
        if not any(c.get("tokens") and c["tokens"][0] < c["tokens"][1] for c in trace):
            problems.append("TMM dropped no frame tokens")
        if not (flops["per_computed_call"] < flops["per_call_full"] and flops["transformer"] < ref["transformer"]):
            problems.append("TMM's computed calls are priced as full calls")
    k = forced(STEPS) if forced else 0  # the official script's forced steps at each end (LTX: 0 at 6 steps)
    if label == "sencache" and k and not all(c["computed"] for c in trace[-k * len(branches):]):
        problems.append(f"the last {k} step(s) were not computed (the official script forces them)")
    if label in ("sencache", "teacache", "semcache", "semcache-relative", "magcache"):
        if not any(c.get("score") is not None for c in trace):
            problems.append("the trace has no scores")
    return problems


#: two-expert models (Wan 2.2): a calibrated policy needs a calibration per expert, and none is published for Wan 2.2:
#: sencache's profile file is missing, teacache and magcache have no published table (refused at validation),
#: diffusers-magcache refuses the plain ratio list given here (two experts take a per-expert file);
#: tests/calibration/test_two_experts_calibration.py, tests/policies/test_diffusers_magcache_experts.py and
#: tests/policies/test_schedules_experts.py run the per-expert ones on tiny-wan22 with calibrations made there
TWO_EXPERTS = ["wan2.2-t2v-a14b"]
CALIBRATED = {"sencache", "teacache", "magcache", "diffusers-magcache"}


@pytest.mark.parametrize("name", TWO_EXPERTS)
def test_two_experts_on_the_full_width_architecture(name, tmp_path):
    """Both experts at full width (2 blocks each): every uncalibrated policy reuses within each expert, never
    across the switch (each expert's first call computes), priced per expert; calibrated ones are refused."""
    base = full_size_spec(name, tmp_path, {"name": "none"})
    runner = Runner(base, log=lambda s: None)
    session = runner.session
    assert [e[0] for e in session.recorder.experts] == ["transformer", "transformer_2"]
    arch = load_architecture(name)["transformer"]["config"]
    for t in (session.pipe.transformer, session.pipe.transformer_2):
        assert (t.config.num_attention_heads, t.config.attention_head_dim, t.config.ffn_dim) == \
            (arch["num_attention_heads"], arch["attention_head_dim"], arch["ffn_dim"])
    branches = MODELS.get(name).family.branches(base.sampling.guidance_scale)
    failures = []
    for label, policy in policies("wan", "profile.json", None).items():
        try:
            spec = dataclasses.replace(full_size_spec(name, tmp_path, policy), entry=base.entry)
            run = Runner(spec, log=lambda s: None)
            run._session = session
            record = read_json(run.run_item(*run.items()[0]))
        except BenchError as err:  # ours, the spec's, or a wrapped library's: no published calibration for this model
            if policy["name"] not in CALIBRATED:
                failures.append(f"{label}: refused: {err}")
            continue
        if policy["name"] in CALIBRATED:
            failures.append(f"{label}: a calibrated policy ran on two experts")
            continue
        problems = _check(record, label, branches)
        trace = record["trace"]
        switch = next(i for i, c in enumerate(trace) if c["expert"] == "transformer_2")
        if not 0 < switch < len(trace) or any(c["expert"] != "transformer_2" for c in trace[switch:]):
            problems.append("the trace does not switch once from transformer to transformer_2")
        if label not in IN_BLOCK and not all(c["computed"] for c in trace[switch:switch + len(branches)]):
            problems.append("the low-noise expert's first call reused")
        per_expert = record.get("flops_per_expert")  # trace-priced runs; replay-priced ones count the whole
        if record["flops_method"] == "trace" and (per_expert is None or set(per_expert) != {"transformer",
                "transformer_2"} or sum(v["transformer"] for v in per_expert.values()) != record["flops"]["transformer"]):
            problems.append(f"FLOPs per expert {per_expert} do not add up to {record['flops']['transformer']}")
        failures += [f"{label}: {p}" for p in problems]
    assert not failures, f"{name}:\n" + "\n".join(failures)
