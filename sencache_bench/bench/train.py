"""Train bench-t2v: a small WanPipeline on the procedural clips of :mod:`sencache_bench.bench.data`.

Stages, one after another (two torch processes on two cores slow each other about 5x):

1. VAE: AutoencoderKLWan (1.85M parameters; 8x spatial with patch size 2, 4x temporal: a 17x64x64 clip
   is an 8x5x8x8 latent) trained as an autoencoder on the posterior mean plus small fixed noise, no KL
   (with sampled latents and a KL term the latent went unused), object pixels weighted 5x. First on
   single frames, then on clips: Wan's causal VAE encodes a first frame alone, through every spatial
   weight, at a 17th of a clip's cost. Trained on clips from the start (500 steps, 20 min), the encoder
   kept only the objects' brightness (the latents of the four colours were collinear) and the decoder
   painted every object one average hue; single frames in batches of 32 learn the colours in minutes.
   The per-channel mean and std of the training latents go into the VAE config, which WanPipeline uses
   to un-normalise latents before decoding.
2. Text encoder: a frozen random UMT5 encoder (d_model 64, 2 layers) with a word-level T5 tokenizer built
   in code from the grammar's words.
3. Transformer: WanTransformer3DModel (3.94M parameters, 80 video tokens) trained by rectified flow as
   Wan is: x_s = (1 - s) x0 + s noise, target noise - x0, timestep 1000 s with s logit-normal and
   shifted by 3 (the sampling scheduler's shift), 10% empty prompts for classifier-free guidance,
   AdamW with linear warm-up and cosine decay, EMA of the weights for sampling. The training latents
   are encoded once, before this stage, from clips without the held-out combinations.

The pipeline is saved with ``save_pretrained`` (weights stored as float16 by default: half the size;
loading with ``torch_dtype=float32`` upcasts them) and a ``provenance.json``: config, data seed,
steps, final losses, wall times, library versions and the sha256 of every weight file. The output
directory is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import BenchError
from ..results.store import sha256_file
from .architecture import TrainConfig, build_text, build_transformer, build_vae
from .data import FRAMES, HELD_OUT, SIZE, core_combos, core_prompt, dataset, render

Log = Callable[[str], None]


@dataclass
class StageResult:
    steps: int
    wall_s: float
    final: dict


# -- helpers ------------------------------------------------------------------------------------------

def _fmt_s(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _clips_to_tensor(clips) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (F, H, W, 3) clips -> video in [-1, 1] (B, 3, F, H, W) and object masks (B, 1, F, H, W)."""
    frames = np.stack([c.frames for c in clips])
    video = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    mask = torch.from_numpy(np.stack([c.mask for c in clips]))[:, None].float()
    return video, mask


def _psnr(mse_pm1: float) -> float:
    """PSNR in dB of a mean squared error measured on [-1, 1] images."""
    return 10 * math.log10(4.0 / max(mse_pm1, 1e-12))


def weight_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every weight file (*.safetensors / *.bin) under a pipeline directory, by relative path."""
    files = sorted(p for p in directory.rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())
    return {p.relative_to(directory).as_posix(): sha256_file(p) for p in files}


# -- stage 1: VAE -------------------------------------------------------------------------------------

def train_vae(vae, cfg: TrainConfig, log: Log, image: bool = False) -> StageResult:
    """Autoencoder training on fresh scenes of all combinations, posterior mean + fixed noise, no KL.

    ``image``: single frames (each scene's first frame) in batches of ``vae_image_batch``; otherwise whole
    clips in batches of ``vae_batch``."""
    vae.train()
    stages, batch, frames = ((cfg.vae_image_stages, cfg.vae_image_batch, 1) if image
                             else (cfg.vae_stages, cfg.vae_batch, FRAMES))
    tag = "vae-image" if image else "vae"
    opt = torch.optim.AdamW(vae.parameters(), lr=stages[0][1], weight_decay=0.0)
    offset = 0 if image else 1
    gen = torch.Generator().manual_seed(cfg.seed + 10 + offset)
    total = sum(n for n, _ in stages)
    scenes = dataset(total * batch, cfg.seed + 10 + offset)
    step, start = 0, time.perf_counter()
    losses, mses = [], []
    for stage, (n, lr) in enumerate(stages):
        for _ in range(n):
            warm = min(1.0, (step + 1) / cfg.vae_warmup) if cfg.vae_warmup else 1.0
            for group in opt.param_groups:
                group["lr"] = lr * warm
            chunk = scenes[step * batch:(step + 1) * batch]
            x, mask = _clips_to_tensor([render(s, seed, frames=frames) for s, seed in chunk])
            mean = vae.encode(x).latent_dist.mean
            z = mean + cfg.vae_noise * torch.randn(mean.shape, generator=gen)
            out = vae.decode(z).sample
            err = (out - x) ** 2
            weight = 1.0 + (cfg.vae_object_weight - 1.0) * mask
            loss = (err * weight).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
            opt.step()
            losses.append(loss.item())
            mses.append(err.mean().item())
            step += 1
            if step % cfg.log_every == 0 or step == total:
                k = min(cfg.log_every, len(losses))
                rate = (time.perf_counter() - start) / step
                log(f"[{tag}] step {step}/{total} (stage {stage + 1}, lr {lr:.0e}) loss {np.mean(losses[-k:]):.4f} "
                    f"psnr {_psnr(float(np.mean(mses[-k:]))):.1f} dB  {rate:.2f} s/step, "
                    f"eta {_fmt_s(rate * (total - step))}")
    vae.eval()
    k = min(50, len(losses))
    return StageResult(total, time.perf_counter() - start,
                       {"loss": float(np.mean(losses[-k:])), "psnr_db": _psnr(float(np.mean(mses[-k:])))})


@torch.no_grad()
def vae_eval_psnr(vae, cfg: TrainConfig, n: int = 32) -> float:
    """Reconstruction PSNR (posterior mean, no noise) on clips the VAE never saw."""
    clips = [render(s, seed) for s, seed in dataset(n, cfg.seed + 20)]
    errs = []
    for i in range(0, n, 8):
        x, _ = _clips_to_tensor(clips[i:i + 8])
        out = vae.decode(vae.encode(x).latent_dist.mean).sample
        errs.append(((out - x) ** 2).mean().item())
    return _psnr(float(np.mean(errs)))


@torch.no_grad()
def encode_latents(vae, scenes, log: Log, batch: int = 16) -> torch.Tensor:
    """Posterior means of the training clips, (N, z, 5, 8, 8), un-normalised."""
    out, start = [], time.perf_counter()
    for i in range(0, len(scenes), batch):
        x, _ = _clips_to_tensor([render(s, seed) for s, seed in scenes[i:i + batch]])
        out.append(vae.encode(x).latent_dist.mean)
        done = min(i + batch, len(scenes))
        if done % (batch * 50) == 0 or done == len(scenes):
            log(f"[encode] {done}/{len(scenes)} clips  {_fmt_s(time.perf_counter() - start)}")
    return torch.cat(out)


# -- stage 3: transformer -----------------------------------------------------------------------------

def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``; a multiplier of cfg.lr."""
    if cfg.warmup and step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def sample_sigmas(n: int, shift: float, gen: torch.Generator) -> torch.Tensor:
    """Logit-normal s in (0, 1), shifted as FlowMatchEulerDiscreteScheduler(shift) shifts its sigmas."""
    s = torch.sigmoid(torch.randn(n, generator=gen))
    return shift * s / (1 + (shift - 1) * s)


def train_transformer(transformer, latents: torch.Tensor, prompt_ids: torch.Tensor, embeds: torch.Tensor,
                      empty: torch.Tensor, cfg: TrainConfig, log: Log) -> tuple[dict, StageResult]:
    """Rectified-flow training; returns the EMA state dict and the stage's figures."""
    transformer.train()
    params = [p for p in transformer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_at(step, cfg))
    ema = {k: v.detach().clone() for k, v in transformer.state_dict().items()}
    named = dict(transformer.named_parameters())
    gen = torch.Generator().manual_seed(cfg.seed + 30)
    n = latents.shape[0]
    order, cursor = torch.randperm(n, generator=gen), 0
    losses, start = [], time.perf_counter()
    for step in range(cfg.steps):
        if cursor + cfg.batch > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor:cursor + cfg.batch]
        cursor += cfg.batch
        b = len(idx)
        x0 = latents[idx]
        ctx = embeds[prompt_ids[idx]].clone()
        drop = torch.rand(b, generator=gen) < cfg.empty_prompt
        ctx[drop] = empty
        noise = torch.randn(x0.shape, generator=gen)
        s = sample_sigmas(b, cfg.shift, gen)
        sv = s.view(b, 1, 1, 1, 1)
        xs = (1 - sv) * x0 + sv * noise
        pred = transformer(hidden_states=xs, timestep=s * 1000.0, encoder_hidden_states=ctx, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred.float(), (noise - x0).float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        decay = min(cfg.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, p in named.items():
                ema[k].lerp_(p.detach(), 1 - decay)
        losses.append(loss.item())
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            k = min(cfg.log_every, len(losses))
            rate = (time.perf_counter() - start) / done
            log(f"[transformer] step {done}/{cfg.steps} flow loss {np.mean(losses[-k:]):.4f} "
                f"lr {cfg.lr * lr_at(step, cfg):.1e}  {rate:.2f} s/step, eta {_fmt_s(rate * (cfg.steps - done))}")
    transformer.eval()
    k = min(100, len(losses))
    return ema, StageResult(cfg.steps, time.perf_counter() - start, {"flow_loss": float(np.mean(losses[-k:]))})


# -- the whole run ------------------------------------------------------------------------------------

def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file: give a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise BenchError(f"--out {out} already holds files: pass --force to replace them")


def train(out: Path, cfg: TrainConfig, force: bool = False, log: Log = print) -> dict:
    """Train all stages, save the pipeline and provenance.json into ``out``; returns the provenance."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    from ..runner import library_versions

    out = Path(out)
    _check_out(out, force)
    if cfg.weights_dtype not in ("float16", "float32"):
        raise BenchError(f"weights dtype must be float16 or float32, got {cfg.weights_dtype!r}")
    t0 = time.perf_counter()
    walls: dict[str, float] = {}
    log(f"bench-t2v training: seed {cfg.seed}, {'quick' if cfg.quick else 'full'} settings, "
        f"{torch.get_num_threads()} torch threads, {cfg.vae_image_steps} VAE steps on frames and "
        f"{cfg.vae_steps} on clips, {cfg.steps} transformer steps")

    # 1. VAE: single frames, then clips
    vae = build_vae(cfg)
    log(f"[vae] AutoencoderKLWan {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M parameters")
    image_result = train_vae(vae, cfg, log, image=True)
    walls["vae_image"] = image_result.wall_s
    vae_result = train_vae(vae, cfg, log)
    walls["vae"] = vae_result.wall_s
    vae.requires_grad_(False)
    eval_psnr = vae_eval_psnr(vae, cfg, n=4 if cfg.quick else 32)
    log(f"[vae] reconstruction PSNR on unseen clips: {eval_psnr:.1f} dB")

    # encode the transformer's training clips once (held-out combinations excluded)
    t = time.perf_counter()
    scenes = dataset(cfg.clips, cfg.seed, exclude_held_out=True)
    raw = encode_latents(vae, scenes, log)
    mean = raw.mean(dim=(0, 2, 3, 4))
    std = raw.std(dim=(0, 2, 3, 4)).clamp_min(1e-6)
    vae.register_to_config(latents_mean=[round(float(v), 6) for v in mean],
                           latents_std=[round(float(v), 6) for v in std])
    mean_t = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std_t = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    latents = ((raw - mean_t) / std_t).contiguous()
    walls["encode"] = time.perf_counter() - t

    # 2. text encoder, and the pipeline around it (its own encode_prompt makes the training embeddings)
    tokenizer, text_encoder = build_text(cfg)
    transformer = build_transformer(cfg)
    log(f"[transformer] WanTransformer3DModel {sum(p.numel() for p in transformer.parameters()) / 1e6:.2f}M "
        f"parameters, {latents.shape[0]} training clips, latent {tuple(latents.shape[1:])}")
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=cfg.shift))
    prompts = sorted({s.prompt for s, _ in scenes})
    index = {p: i for i, p in enumerate(prompts)}
    prompt_ids = torch.tensor([index[s.prompt] for s, _ in scenes])
    with torch.no_grad():
        embeds, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False,
                                       max_sequence_length=cfg.text_length, device=torch.device("cpu"))
        empty, _ = pipe.encode_prompt("", do_classifier_free_guidance=False,
                                      max_sequence_length=cfg.text_length, device=torch.device("cpu"))

    # 3. transformer
    ema, tr_result = train_transformer(transformer, latents, prompt_ids, embeds, empty[0], cfg, log)
    walls["transformer"] = tr_result.wall_s
    transformer.load_state_dict(ema)

    # save under a temporary name; hashes; optional quality check on the saved weights; rename
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    dtype = torch.float16 if cfg.weights_dtype == "float16" else torch.float32
    _save(pipe, tmp, dtype)
    hashes = weight_hashes(tmp)
    quality = None
    if cfg.eval_seeds > 0:
        quality = _quality(tmp, cfg, log)
    walls["total"] = time.perf_counter() - t0
    provenance = {
        "model": "bench-t2v",
        "created_by": "sencache-bench train-bench-model" + (" --quick" if cfg.quick else ""),
        "data": {"generator": "sencache_bench.bench.data", "seed": cfg.seed, "frames": FRAMES,
                 "height": SIZE, "width": SIZE, "transformer_clips": cfg.clips,
                 "vae_frames": cfg.vae_image_steps * cfg.vae_image_batch, "vae_clips": cfg.vae_steps * cfg.vae_batch,
                 "held_out": [list(c) for c in sorted(HELD_OUT)], "unique_prompts": len(prompts)},
        "config": asdict(cfg),
        "steps": {"vae_image": image_result.steps, "vae": vae_result.steps, "transformer": tr_result.steps},
        "final_losses": {"vae_image_psnr_db": image_result.final["psnr_db"],
                         "vae_weighted_mse": vae_result.final["loss"], "vae_train_psnr_db": vae_result.final["psnr_db"],
                         "vae_eval_psnr_db": eval_psnr, "flow_loss": tr_result.final["flow_loss"]},
        "latents": {"mean": vae.config.latents_mean, "std": vae.config.latents_std},
        "parameters": {"vae": sum(p.numel() for p in vae.parameters()),
                       "transformer": sum(p.numel() for p in transformer.parameters()),
                       "text_encoder": sum(p.numel() for p in text_encoder.parameters())},
        "wall_time_s": {k: round(v, 1) for k, v in walls.items()},
        "threads": torch.get_num_threads(),
        "versions": library_versions(),
        "weights": hashes,
        "quality": quality,
    }
    (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    log(f"saved {out} in {_fmt_s(walls['total'])} (flow loss {tr_result.final['flow_loss']:.4f}, "
        f"VAE PSNR {eval_psnr:.1f} dB)")
    return provenance


def _save(pipe, directory: Path, dtype: torch.dtype) -> None:
    """save_pretrained in ``dtype``, without diffusers' cast warnings and progress bars (loading upcasts)."""
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    try:
        pipe.to(dtype=dtype)
        pipe.save_pretrained(directory, safe_serialization=True)
    finally:
        dlog.set_verbosity(level)
        dlog.enable_progress_bar()


def _quality(directory: Path, cfg: TrainConfig, log: Log) -> dict:
    """The quality bar on the saved weights, held-out and seen core prompts."""
    from .quality import evaluate, is_deterministic, load_bench_pipeline

    pipe = load_bench_pipeline(directory)
    seeds = list(range(cfg.eval_seeds))
    result = {}
    for name, held in (("held_out", True), ("seen", False)):
        combos = core_combos(held_out=held)[:: 1 if held else 4]
        report = evaluate(pipe, [core_prompt(*c) for c in combos], seeds, guidance_scale=3.0, steps=30,
                          text_length=cfg.text_length)
        if name == "held_out":
            report.deterministic = is_deterministic(pipe, core_prompt(*combos[0]), 0, steps=30,
                                                    text_length=cfg.text_length)
        for line in report.lines(f"[quality] {name}"):
            log(line)
        for line in report.failures():
            log(f"[quality] {name} below the bar: {line}")
        result[name] = report.summary()
    return result
