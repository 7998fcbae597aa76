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
