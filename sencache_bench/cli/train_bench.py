"""`sencache-bench train-bench-model`: train the small bench-t2v model and save it inside the package."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..bench import WEIGHTS_DIR


def train_bench_model(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to save the pipeline and provenance.json in.")]
    = WEIGHTS_DIR,
    seed: Annotated[int, typer.Option(help="Seed of the data, the initial weights and the training.")] = 0,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny sizes and step counts: a smoke test in seconds.")]
    = False,
    steps: Annotated[int | None, typer.Option(help="Transformer steps (default 3000; quick 6).")] = None,
    vae_image_steps: Annotated[int | None, typer.Option(
        help="VAE steps on single frames, batches of 32 (default 800; quick 2).")] = None,
    vae_steps: Annotated[int | None, typer.Option(help="VAE steps on clips, batches of 8 (default 400; quick 3).")]
    = None,
    clips: Annotated[int | None, typer.Option(help="Training clips encoded for the transformer (default 6000).")]
    = None,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: torch's choice).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")] = False,
) -> None:
    """Train the bench-t2v model (VAE, text encoder, transformer) and save it with its provenance."""
    from dataclasses import replace

    import torch

    from ..bench.train import TrainConfig, train
    from ..errors import BenchError

    for name, value in (("--steps", steps), ("--vae-image-steps", vae_image_steps), ("--vae-steps", vae_steps),
                        ("--clips", clips), ("--threads", threads)):
        if value is not None and value < 1:
            raise BenchError(f"{name}: must be at least 1, got {value}")
    if threads is not None:
        torch.set_num_threads(threads)
    cfg = TrainConfig.quick_config(seed) if quick else TrainConfig(seed=seed)
    if steps is not None:
        cfg = replace(cfg, steps=steps, warmup=min(cfg.warmup, max(1, steps // 10)))
    if vae_image_steps is not None:
        cfg = cfg.with_vae_steps(vae_image_steps, image=True)
    if vae_steps is not None:
        cfg = cfg.with_vae_steps(vae_steps)
    if clips is not None:
        cfg = replace(cfg, clips=clips)
    train(out, cfg, force=force, log=lambda line: print(line, flush=True))
