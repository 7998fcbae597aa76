"""A --quick bench-model training (seconds): the CLI writes a pipeline that loads and generates through the
same path as full-size models, with a provenance whose hashes match, and the training is seeded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sencache_bench.bench.train import TrainConfig, sha256_file, train
from sencache_bench.errors import BenchError
from sencache_bench.models import MODELS
from sencache_bench.runner import Session
from sencache_bench.spec import resolve


@pytest.fixture(scope="module")
def quick_weights(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "weights"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "sencache_bench", "train-bench-model", "--quick", "--out", str(out),
                           "--seed", "7", "--threads", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[vae-image] step" in proc.stdout and "[vae] step" in proc.stdout and "[transformer] step" in proc.stdout and "saved" in proc.stdout
    return out


def test_quick_training_writes_a_loadable_pipeline(quick_weights, tiny_spec):
    assert (quick_weights / "model_index.json").is_file()
    assert not list(quick_weights.parent.glob(".weights.partial-*"))  # written under a temporary name, renamed
    d = MODELS.get("bench-t2v").defaults
    spec = resolve(tiny_spec(model={"name": "bench-t2v", "path": str(quick_weights)},
                             sampling={"steps": 2, "seeds": [0]}, prompts=["a red square moving right"]))
    assert spec.source == str(quick_weights) and spec.family.name == "wan"
    assert (spec.sampling.height, spec.sampling.width, spec.sampling.frames) == (d.height, d.width, d.frames) == (
        64, 64, 17)
    assert spec.sampling.guidance_scale == 3.0 and spec.sampling.shift == 3.0
    session = Session(spec)
    assert type(session.pipe).__name__ == "WanPipeline"
    cfg = session.pipe.vae.config
    assert len(cfg.latents_mean) == len(cfg.latents_std) == cfg.z_dim == 8 and cfg.latents_std != [1.0] * 8
    a = session.generate("a red square moving right", seed=0)
    b = session.generate("a red square moving right", seed=0)
    assert a.frames.shape == (17, 64, 64, 3) and (a.frames == b.frames).all()
    assert {c.branch for c in a.calls} == {"cond", "uncond"}


def test_provenance(quick_weights):
    prov = json.loads((quick_weights / "provenance.json").read_text())
    weights = sorted(p.relative_to(quick_weights).as_posix() for p in quick_weights.rglob("*.safetensors"))
    assert sorted(prov["weights"]) == weights and len(weights) == 3  # vae, transformer, text encoder
    for rel, digest in prov["weights"].items():
        assert sha256_file(quick_weights / rel) == digest
    assert prov["data"]["seed"] == 7 and prov["config"]["seed"] == 7 and prov["config"]["quick"] is True
    assert prov["steps"] == {"vae_image": 2, "vae": 3, "transformer": 6}
    for key in ("vae_weighted_mse", "vae_eval_psnr_db", "flow_loss"):
        assert isinstance(prov["final_losses"][key], float)
    assert prov["wall_time_s"]["total"] > 0 and len(prov["data"]["held_out"]) == 12
    assert {"torch", "diffusers", "transformers"} <= set(prov["versions"])


def test_training_is_seeded(quick_weights, tmp_path):
    """The same seed and settings give bit-identical weights (in-process run vs the CLI's).

    Both on one torch thread (the test session's setting): float reductions, hence the bits, depend on
    the thread count."""
    prov = train(tmp_path / "again", TrainConfig.quick_config(seed=7), log=lambda line: None)
    assert prov["weights"] == json.loads((quick_weights / "provenance.json").read_text())["weights"]


def test_existing_output_needs_force(quick_weights):
    with pytest.raises(BenchError, match="--force"):
        train(quick_weights, TrainConfig.quick_config(seed=7), log=lambda line: None)


def test_missing_weights_say_how_to_train(tiny_spec, tmp_path):
    spec = resolve(tiny_spec(model={"name": "bench-t2v", "path": str(tmp_path / "nowhere")}, sampling={"steps": 2}))
    with pytest.raises(BenchError, match="sencache-bench train-bench-model"):
        Session(spec)


def test_vae_step_options_rescale_their_own_stages():
    """--vae-steps rescales the clip stages, --vae-image-steps the single-frame ones; the lrs stay."""
    cfg = TrainConfig()
    assert cfg.vae_stages == ((300, 4e-4), (100, 2e-4)) and cfg.vae_image_stages == ((250, 1e-3), (550, 4e-4))
    assert cfg.with_vae_steps(200).vae_stages == ((150, 4e-4), (50, 2e-4))  # 200 * 300/400 = 150
    assert cfg.with_vae_steps(200).vae_image_stages == cfg.vae_image_stages
    assert cfg.with_vae_steps(400, image=True).vae_image_stages == ((125, 1e-3), (275, 4e-4))  # 400 * 250/800
    assert cfg.with_vae_steps(1).vae_stages == ((1, 4e-4),)  # no empty second stage
