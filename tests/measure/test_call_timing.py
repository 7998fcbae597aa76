"""Per-call timing and decision overhead from the call recorder: perf_counter on CPU, CUDA events read once on
CUDA (no synchronisation per call); and benchmarks/gpu_check.py's parts that need no GPU."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from sencache_bench.measure.flops import CallCost
from sencache_bench.policies.base import CachePolicy, CallInfo, Decision, PolicyConfig
from sencache_bench.runner import Session
from sencache_bench.spec import resolve

ROOT = Path(__file__).resolve().parents[2]
PAUSE = 0.004  # seconds the test policy spends deciding (a sleep: a known, machine-independent floor)


class PausingPolicy(CachePolicy):
    """Computes even steps, reuses odd ones, and takes PAUSE seconds to decide each call."""

    name = "pausing"

    def decide(self, state, call: CallInfo) -> Decision:
        time.sleep(PAUSE)
        return Decision(compute=call.index % 2 == 0)


class PausingConfig(PolicyConfig):
    def make_policy(self):
        return PausingPolicy()


def _session(tiny_spec, steps=4, **model):
    return Session(resolve(tiny_spec(model={"name": "tiny-wan", **model}, sampling={"steps": steps})))


def test_decision_time_is_recorded_per_call_on_cpu(tiny_spec):
    session = _session(tiny_spec)
    assert not session.recorder.cuda
    gen = session.generate("a red ball", 0, policy=PausingConfig())
    assert len(gen.calls) == 8  # 4 steps x (cond, uncond)
    for call in gen.calls:
        assert PAUSE <= call.decide_s <= call.seconds  # deciding happens inside the call
        assert (call.hook_s is not None) == call.computed  # after_compute: on computed calls only
        assert (call.hook_s or 0.0) < call.seconds
        d = call.to_json()
        assert d["decide_s"] == round(call.decide_s, 7) and d["s"] == round(call.seconds, 7)
    # the calls lie inside the denoising phase, which also holds the scheduler's steps between them
    assert sum(c.seconds for c in gen.calls) <= gen.latency["denoise_s"] + 1e-6
    assert sum(c.seconds for c in gen.calls) >= 8 * PAUSE


def test_uncached_calls_have_no_decision_time(tiny_spec):
    gen = _session(tiny_spec).generate("a red ball", 0)
    assert all(c.decide_s is None and c.hook_s is None and c.seconds > 0 for c in gen.calls)
    assert "decide_s" not in gen.calls[0].to_json()


@pytest.mark.gpu
def test_cuda_timing_synchronises_once_per_generation_not_per_call(tiny_spec, monkeypatch):
    """Events per call, one synchronisation after the timed region: the count of synchronisations does not grow
    with the number of calls, and the per-call seconds (read from the events) fill the denoising phase."""
    import torch

    count = {"n": 0}
    real = torch.cuda.synchronize

    def counting(*args, **kwargs):
        count["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.cuda, "synchronize", counting)
    syncs = {}
    for steps in (2, 6):
        session = _session(tiny_spec, steps=steps, device="cuda")
        assert session.recorder.cuda
        session.warm_up("a red ball")
        count["n"] = 0
        gen = session.generate("a red ball", 0, policy=PausingConfig())
        syncs[steps] = count["n"]
        assert len(gen.calls) == 2 * steps
        assert all(c.seconds > 0 and c.decide_s is not None and c.decide_s <= c.seconds for c in gen.calls)
        assert sum(c.seconds for c in gen.calls) <= gen.latency["denoise_s"] * 1.05 + 1e-3
    assert syncs[2] == syncs[6]


# -- benchmarks/gpu_check.py -------------------------------------------------------------------------
def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Call:
    def __init__(self, forward_ran, blocks_ran):
        self.forward_ran, self.blocks_ran = forward_ran, blocks_ran


def test_gpu_check_bound_and_latent_by_hand():
    gc = _gpu_check()
    # outside 10, two blocks of 20: a full call costs 50, a residual-reuse call 10; computed, reused -> 100 / 60
    cost = CallCost(outside=(10, 0), blocks=[(20, 0), (20, 0)])
    assert gc.amdahl_bound(cost, [_Call(True, [0, 1]), _Call(True, [])]) == pytest.approx(100 / 60)
    # Wan VAE: 4x temporal (81 frames -> 21), 8x spatial (480x832 -> 60x104), 16 channels
    assert gc.latent_shape(gc.architecture("wan2.1-t2v-1.3b", False), 480, 832, 81) == (1, 16, 21, 60, 104)
    # Wan 2.2 VAE: 4x temporal (121 -> 31), 16x spatial (704x1280 -> 44x80), 48 channels
    assert gc.latent_shape(gc.architecture("wan2.2-ti2v-5b", False), 704, 1280, 121) == (1, 48, 31, 44, 80)
    assert gc.summarize({"bare": [4.0, 2.0, 3.0], "static": []}, steps=2) == {"bare": 1.5}
    args = gc.parse([])
    assert (args.device, args.dtype, args.width, args.height, args.frames) == ("cuda", "bfloat16", 832, 480, 81)
    args = gc.parse(["--model", "wan2.2-ti2v-5b", "--frames", "49"])
    assert (args.width, args.height, args.frames) == (1280, 704, 49)


def test_gpu_check_runs_small_on_cpu():
    """The whole path at a tiny size: static every=2 over 2 steps computes 2 of its 4 calls."""
    report = _gpu_check().main(["--small", "--device", "cpu", "--dtype", "float32", "--steps", "2", "--rounds", "1",
                                "--height", "32", "--width", "32", "--frames", "5"])
    assert report["static"]["nfe"] == 2 and report["static"]["calls"] == 4
    assert 1.0 < report["static"]["bound"] < 2.0
    assert set(report["seconds_per_step"]) == {"bare", "recorded", "sync_per_call", "static"}


def test_gpu_check_runs_ti2v_small_on_cpu_with_a_timestep_per_token():
    """TI2V-5B's layout (48 channels, 16x VAE, expand_timesteps): 64x64x5 -> latent 2 x 4 x 4 -> 2 x 2 x 2 = 8
    tokens, each given the step's timestep; static every=2 still computes 2 of 4 calls."""
    gc = _gpu_check()
    arch = gc.architecture("wan2.2-ti2v-5b", True)
    loop = gc.Loop(None, arch, gc.latent_shape(arch, 64, 64, 5), steps=2, device="cpu", dtype=None)
    assert loop.tokens == 8
    report = gc.main(["--model", "wan2.2-ti2v-5b", "--small", "--device", "cpu", "--dtype", "float32", "--steps",
                      "2", "--rounds", "1", "--height", "64", "--width", "64", "--frames", "5"])
    assert report["latent"] == [1, 48, 2, 4, 4] and report["model"] == "wan2.2-ti2v-5b (small)"
    assert report["static"]["nfe"] == 2 and report["static"]["calls"] == 4
