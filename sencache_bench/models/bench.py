"""bench-t2v: the small WanPipeline the project trains itself (``sencache-bench train-bench-model``).

Its weights live in the package (``sencache_bench/bench/weights/``, a diffusers directory written by
``save_pretrained``) and load through the same ``load_pretrained`` path as the full-size models.
"""

from __future__ import annotations

from ..bench import WEIGHTS_DIR
from ..bench.data import FRAMES, SIZE, TEXT_LENGTH, render_prompt
from .base import ModelEntry, SamplingDefaults
from .wan import WAN


def ground_truth_clip(prompt: str, seed: int):
    """The procedural clip of ``prompt`` (the kind of video bench-t2v was trained on): SenCache calibrates on it."""
    return render_prompt(prompt, seed).frames

BENCH_T2V = ModelEntry(
    "bench-t2v", WAN,
    SamplingDefaults(steps=30, height=SIZE, width=SIZE, frames=FRAMES, guidance_scale=3.0, shift=3.0, fps=8),
    repo_id=str(WEIGHTS_DIR),
    call_kwargs={"max_sequence_length": TEXT_LENGTH},
    description="small WanPipeline trained by the project on procedural shape clips (64x64, 17 frames)",
    missing_hint="the bench-t2v weights are not trained yet: run `sencache-bench train-bench-model` "
                 "(about 47 min on a 2-core CPU), or set model.path to a trained copy",
    # in the grammar (the generic calibration prompts are mostly unknown words to its tokenizer), none in
    # prompts/bench.yaml, no held-out combination; static to dynamic
    calibration_prompts=(
        "a green circle standing still",
        "a blue square standing still on a grey background",
        "a red square moving left",
        "a blue triangle moving down slowly on a grey background",
        "a yellow square moving right quickly",
        "a red circle bouncing up and down",
        "a green triangle moving up and a blue circle standing still on a textured background",
        "a yellow circle bouncing left and right quickly and a red triangle moving left",
    ),
    calibration_clips=ground_truth_clip,
)
