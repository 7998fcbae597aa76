"""GPU paths (skipped without CUDA): bf16 generation, CUDA-synchronised timing, CUDA peak memory."""

from __future__ import annotations

import json

import pytest

from sencache_bench.runner import Runner
from sencache_bench.spec import resolve

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", ["tiny-wan", "tiny-cogvideox", "tiny-ltx", "tiny-hunyuanvideo"])
def test_tiny_model_on_cuda_bf16(name, tiny_spec):
    spec = resolve(tiny_spec(model={"name": name, "device": "cuda", "dtype": "bfloat16"}, sampling={"steps": 4},
                             policy={"name": "static", "every": 2}, prompts=["a red ball"]))
    assert spec.device == "cuda" and spec.dtype == "bfloat16"
    runner = Runner(spec)
    rec = json.loads(runner.run_item(*runner.items()[0]).read_text())
    assert rec["memory_kind"] == "cuda_max_allocated" and rec["peak_memory_mb"] > 0
    assert rec["device_name"] and rec["latency"]["denoise_s"] > 0
    assert rec["nfe"] == 2 and rec["reference"]["nfe"] == 4
    assert rec["flops"]["total"] < rec["reference"]["flops"]["total"]
    timing = rec["timing"]  # CUDA events beside perf_counter, both synchronised: the two clocks agree
    for wall, cuda in zip(timing["policy_s"] + timing["baseline_s"], timing["policy_cuda_s"] + timing["baseline_cuda_s"]):
        assert cuda == pytest.approx(wall, rel=0.2, abs=0.005)


def test_peak_memory_is_per_generation_on_cuda(tiny_spec):
    """The allocator's peak is reset per generation: a second, smaller generation reports its own peak."""
    import torch

    from sencache_bench.runner import Session

    session = Session(resolve(tiny_spec(model={"name": "tiny-wan", "device": "cuda"}, sampling={"steps": 2})))
    big = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")  # 256 MiB held during the first generation
    first = session.generate("a red ball", 0)
    del big
    second = session.generate("a red ball", 0)
    assert first.memory_above_start_mb < 50 and first.peak_memory_mb - second.peak_memory_mb > 200
