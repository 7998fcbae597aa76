"""`sencache-bench vbench setup` and `sencache-bench vbench RESULTS_DIR`: VBench in its own environment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import BenchError
from ..metrics.vbench import DEFAULT_TORCH, DIMENSIONS, MODES, default_env_dir, env_python, setup_env, total_score


def vbench(
    target: Annotated[str, typer.Argument(help="`setup` to create the VBench environment, or a results directory "
                                               "to score (a folder named setup: give ./setup).")],
    dimensions: Annotated[str, typer.Option("--dimensions", "-d", help=(
        "Comma-separated VBench dimensions, or `all`; temporal_flickering is the one that needs no weights. "
        f"Valid: {', '.join(DIMENSIONS)}."))] = "temporal_flickering",
    mode: Annotated[str, typer.Option("--mode", help="custom_input: any prompts (from the records); "
                                                     "vbench_standard: the VBench suite's prompts, videos "
                                                     "{prompt}-{i}.mp4.")] = "custom_input",
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "auto",
    env: Annotated[Path | None, typer.Option("--env", help=(
        f"The VBench virtual environment (default {default_env_dir()}; or set $SENCACHE_VBENCH_PYTHON)."))] = None,
    torch: Annotated[str, typer.Option("--torch", help="setup: the torch requirements for the VBench environment "
                                                       "(space-separated).")] = " ".join(DEFAULT_TORCH),
    references: Annotated[bool, typer.Option("--references/--no-references",
                                             help="Also score the uncached references.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Score videos that already have these dimensions again.")]
    = False,
) -> None:
    """Create VBench's environment (`setup`), or score a results directory's saved videos with VBench.

    Scores go into the run records (metrics.vbench_<dimension>); `table --layout semcache` shows them,
    with VBench's total score when all 16 dimensions are present. Dimensions whose model files are
    missing are skipped with one line naming each file and where it goes.
    """
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    log = lambda line: console.print(escape(line))  # noqa: E731
    if target == "setup":
        env_dir = env or default_env_dir()
        setup_env(env_dir, torch.split(), log=log)
        console.print(f"VBench environment ready: {env_dir}")
        return
    from ..results.store import load_records
    from ..results.tables import aggregate
    from ..results.vbench_scores import score_results

    results = Path(target)
    if not results.is_dir():
        raise BenchError(f"results directory {results} not found (or give `setup` to create the VBench environment)")
    results = results.absolute()  # the VBench worker runs in another directory: hand it absolute paths
    dims = list(DIMENSIONS) if dimensions.strip() == "all" else [d.strip() for d in dimensions.split(",") if d.strip()]
    if mode not in MODES:
        raise BenchError(f"--mode: unknown mode {mode!r} (valid: {', '.join(MODES)})")
    if device == "auto":
        import torch as _torch

        device = "cuda" if _torch.cuda.is_available() else "cpu"
    python = env_python(env) if env is not None else None
    score_results(results, dims, mode=mode, device=device, python=python, references=references, force=force,
                  log=log)
    records, _ = load_records(results)
    for row in aggregate(records):
        dims_row = row.get("vbench_dims") or {}
        if not dims_row:
            continue
        parts = [f"{d} {v:.4f}" for d, v in dims_row.items()]
        total = total_score(dims_row)
        if total:
            parts.insert(0, f"total {total['total']:.4f} (quality {total['quality']:.4f}, semantic "
                            f"{total['semantic']:.4f})")
        print(f"{row['model']} {row['policy']} ({row['setting']}), {row['videos']} videos: " + ", ".join(parts))
        ref = row.get("vbench_ref_dims") or {}
        if ref:
            print(f"{row['model']} uncached reference of those videos: " + ", ".join(f"{d} {v:.4f}"
                                                                                   for d, v in ref.items()))
