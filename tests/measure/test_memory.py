"""Peak memory per generation: it rises with what the generation allocates, and falls back for the next one."""

from __future__ import annotations

import sys

import pytest
import torch

from sencache_bench.measure.memory import PeakMemory, rss_mb


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="samples /proc/self/statm")
def test_each_generation_gets_its_own_peak():
    assert rss_mb() > 0
    with PeakMemory("cpu", interval_s=0.001) as big:
        block = torch.ones(64, 2**20 // 4 * 4)  # 256 MiB of float32, touched
        block += 1
        import time

        time.sleep(0.05)  # let the sampler see it
        del block
    with PeakMemory("cpu", interval_s=0.001) as small:
        torch.ones(16).sum()
    assert big.kind == "rss_sampled_peak"
    assert big.above_start_mb > 200
    assert small.above_start_mb < 50  # not the lifetime maximum: ru_maxrss would still say +256 MiB
