"""First frames for image-to-video on CPU: PNGs of the clips bench-t2v was trained to produce.

``python -m sencache_bench.models.first_frames OUT_DIR [PROMPT_FILE] [--seed=N]`` writes ``pNNN.png`` per prompt of
a prompt file (default prompts/bench_ci.yaml): frame 0 of the procedural clip of that prompt (bench/data.py's
renderer, the ground truth bench-t2v learns), so the same prompt and seed give the same pixels on any machine.
Use one as ``sampling.image`` of an I2V spec (configs/tiny_i2v.yaml).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import BenchError


def first_frame(prompt: str, seed: int = 0):
    """uint8 (H, W, 3): frame 0 of the bench renderer's clip of ``prompt``."""
    from ..bench.data import render_prompt

    return render_prompt(prompt, seed).frames[0]


def write_first_frame(path: Path, prompt: str, seed: int = 0) -> Path:
    """:func:`first_frame` of ``prompt`` as a PNG at ``path`` (its folder made)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(first_frame(prompt, seed)).save(path)
    return path


def write_first_frames(out: Path, prompt_file: Path, seed: int = 0) -> list[Path]:
    from ..prompts import load_prompts

    prompts = load_prompts(str(prompt_file), search=[Path.cwd(), Path(__file__).resolve().parents[2]])
    return [write_first_frame(out / f"p{p.index:03d}.png", p.text, seed) for p in prompts]


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--seed")]
    seed = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--seed=")), 0)
    if not 1 <= len(args) <= 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        for path in write_first_frames(Path(args[0]), Path(args[1] if len(args) > 1 else "prompts/bench_ci.yaml"),
                                       seed):
            print(path)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
