"""`sencache-bench flops`: exact FLOPs of a full-size model per component, offline, in seconds."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import BenchError


class OutputFormat(str, Enum):
    rich = "rich"
    json = "json"


def flops(
    spec: Annotated[Optional[Path], typer.Argument(help="Experiment spec (YAML): count its model and sampling.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Registered full-size model.")] = None,
    height: Annotated[Optional[int], typer.Option(min=1, help="Video height (default: the spec's or model's).")] = None,
    width: Annotated[Optional[int], typer.Option(min=1, help="Video width (default: the spec's or model's).")] = None,
    frames: Annotated[Optional[int], typer.Option(min=1, help="Number of frames (default: the spec's or model's).")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Denoising steps (default: the spec's or model's).")] = None,
    nfe: Annotated[Optional[float], typer.Option(
        min=0, help="Computed transformer calls per CFG branch of a cached run (out of --steps): adds its total.")] = None,
    format: Annotated[OutputFormat, typer.Option("--format", help="rich table or JSON.")] = OutputFormat.rich,
) -> None:
    """Exact FLOPs of a full-size model (with and without attention), from its architecture alone."""
    from ..measure.full_size import count_full_size, policy_total

    name, sampling = _resolve(spec, model)
    counted = count_full_size(name, _pick(height, sampling.height), _pick(width, sampling.width),
                              _pick(frames, sampling.frames), _pick(steps, sampling.steps), sampling.guidance_scale)
    cached = policy_total(counted, nfe) if nfe is not None else None
    if format is OutputFormat.json:
        out = counted.to_dict()
        if cached is not None:
            out["policy"] = {"nfe": nfe, "total": cached.to_dict(), "reduction": _reduction(cached, counted.total),
                             "reduction_no_attn": _reduction(cached, counted.total, no_attn=True)}
        typer.echo(json.dumps(out, indent=2))
    else:
        Console().print(_table(counted, nfe, cached))


def _resolve(spec: Path | None, model: str | None):
    """(registered model name, sampling defaults) from a spec file or --model."""
    if (spec is None) == (model is None):
        raise BenchError("give either a spec file or --model (e.g. sencache-bench flops --model wan2.1-t2v-1.3b)")
    if spec is not None:
        from ..spec import load_spec

        resolved = load_spec(spec)
        if resolved.entry is None:
            raise BenchError(f"{resolved.model_name!r} is not a registered model: FLOPs are counted from the "
                             f"architectures of the registered full-size models")
        return resolved.entry.name, resolved.sampling
    from ..models import MODELS

    entry = MODELS.get(model)
    return entry.name, entry.defaults


def _pick(given: int | None, default: int) -> int:
    return default if given is None else given


def _reduction(cached, full, no_attn: bool = False) -> float:
    return 1 - (cached.no_attn / full.no_attn if no_attn else cached.total / full.total)


def _table(f, nfe: float | None, cached) -> Table:
    cfg = f"{len(f.branches)} call(s)/step x batch {f.batch}"
    table = Table(title=f"{f.model}: {f.width}x{f.height}, {f.frames} frames, {f.steps} steps, "
                        f"guidance {f.guidance_scale:g} ({cfg})",
                  caption="full: attention's QK^T and PV included; no-attn: the papers' convention (SenCache, "
                          f"SemCache), which leaves them out. Counted in {f.seconds:.1f} s on the meta device.")
    table.add_column("component")
    table.add_column("count", justify="right")
    table.add_column("PFLOPs full", justify="right")
    table.add_column("PFLOPs no-attn", justify="right")
    table.add_column("attention", justify="right")
    rows = [("text encoder", f"x{f.prompt_passes}", f.text_encoder),
            ("transformer, one call", "", f.transformer_call),
            ("transformer loop", f"x{f.calls}", f.transformer_loop),
            ("VAE decode", "x1", f.vae_decode),
            ("total", "", f.total)]
    if cached is not None:
        rows.append((f"cached total (NFE {nfe:g}/{f.steps})", f"x{nfe * len(f.branches):g}", cached))
    for label, count, value in rows:
        table.add_row(label, count, _p(value.total), _p(value.no_attn), f"{value.attention / max(value.total, 1):.0%}")
    if cached is not None:
        table.add_row("reduction", "", f"{_reduction(cached, f.total):.1%}",
                      f"{_reduction(cached, f.total, no_attn=True):.1%}", "")
    return table


def _p(flops: int) -> str:
    value = flops / 1e15
    return f"{value:.4f}" if value < 1 else f"{value:.2f}"
