"""EasyCache: the rule on scripted tensors worked out by hand, transform reuse, cond decides and uncond follows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sencache_bench.errors import PolicyError
from sencache_bench.policies.base import apply_policy, remove_policy
from sencache_bench.policies.easycache import EasyCacheConfig, EasyCachePolicy
from sencache_bench.policy import CachePolicy, CallInfo, Decision
from sencache_bench.runner import Session
from sencache_bench.spec import resolve

ROOT = Path(__file__).resolve().parents[2]


def const(value: float) -> torch.Tensor:
    return torch.full((1, 2, 3), value, dtype=torch.float64)


# x_t (inputs) and y_t (outputs of the computed calls) of a 10-step run; warm-up 0.2 * 10 = 2 steps
X = [10.0, 9.0, 8.8, 8.6, 8.5, 8.49, 8.4, 8.39, 8.375, 8.37]
Y = {0: 4.0, 1: 3.5, 3: 3.0, 6: 2.0, 8: 1.5, 9: 1.0}
# worked by hand (||.||_1 of a constant tensor is its absolute value):
#   0, 1: warm-up, computed. After 1: k = |3.5 - 4| / |9 - 10| = 0.5
#   2: eps = 0.5 * |8.8 - 9| / 3.5 = 0.028571 < 0.05: reuse
#   3: eps = 0.5 * 0.2 / 3.5 = 0.028571, E = 0.057143 >= 0.05: compute, E = 0; k = |3 - 3.5| / |8.6 - 9| = 1.25
#   4: eps = 1.25 * 0.1 / 3 = 0.041667: reuse
#   5: eps = 1.25 * 0.01 / 3 = 0.0041667 (the change from step 4's input, not from step 3's), E = 0.045833: reuse
#   6: eps = 1.25 * 0.09 / 3 = 0.0375, E = 0.083333: compute; k = |2 - 3| / |8.4 - 8.6| = 5
#   7: eps = 5 * 0.01 / 2 = 0.025: reuse;  8: eps = 5 * 0.015 / 2 = 0.0375, E = 0.0625: compute
#   9: the last step computes whatever E
EXPECTED = [(True, None), (True, None), (False, 0.028571), (True, 0.057143), (False, 0.041667), (False, 0.045833),
            (True, 0.083333), (False, 0.025), (True, 0.0625), (True, None)]


def test_rule_on_a_scripted_sequence():
    policy = EasyCachePolicy(tau=0.05, num_steps=10)
    state = policy.new_state()
    got = []
    for i, x in enumerate(X):
        call = CallInfo(branch="cond", index=i, timestep=1000.0 - 100 * i, latent=const(x))
        d = policy.decide(state, call)
        got.append((d.compute, None if d.score is None else round(d.score, 6)))
        if d.compute:
            policy.after_compute(state, call, const(Y[i]))
    assert [g[0] for g in got] == [e[0] for e in EXPECTED]
    for (_, score), (_, want) in zip(got, EXPECTED):
        assert score == pytest.approx(want, abs=1e-5) if want is not None else score is None
    assert state.k == pytest.approx(0.5 / 0.005, rel=1e-3)  # between the computed steps 8 and 9


def test_warm_up_is_the_official_ratio():
    """Wan 2.1's script: ret_steps 10 of 50; on other step counts the same fraction, at least one step."""
    policy = EasyCachePolicy(tau=0.05)
    assert [policy.warmup_steps(n) for n in (50, 40, 10, 4, 2)] == [10, 8, 2, 1, 1]


class _TransformEvery(CachePolicy):
    name = "transform-every"
    reuse = "transform"

    def decide(self, state, call: CallInfo) -> Decision:
        return Decision(compute=call.index == 0)


@pytest.mark.parametrize("return_dict", [False, True])
def test_transform_reuse_returns_the_input_plus_the_transformation_exactly(tiny_spec, return_dict):
    session = Session(resolve(tiny_spec()))
    tr = session.transformer
    g = torch.Generator().manual_seed(0)
    x_a, x_b = torch.randn(1, 16, 3, 4, 4, generator=g), torch.randn(1, 16, 3, 4, 4, generator=g)
    text = torch.randn(1, 16, 32, generator=g)

    def call(x, t):
        with tr.cache_context("cond"):
            out = tr(hidden_states=x, timestep=torch.tensor([t]), encoder_hidden_states=text, return_dict=return_dict)
        return out.sample if return_dict else out[0]

    with torch.no_grad():
        apply_policy(tr, session.blocks, _TransformEvery())
        try:
            y_a = call(x_a, 900.0)
            reused = call(x_b, 800.0)
        finally:
            remove_policy(tr)
        plain_b = call(x_b, 800.0)
    assert torch.equal(reused, x_b + (y_a - x_a))
    assert not torch.allclose(reused, plain_b, atol=1e-3)  # it is a reuse, not a recomputation


def test_cond_decides_and_uncond_follows(tiny_spec):
    """On tiny-wan (cond then uncond at each step) the uncond call takes the cond call's decision and score."""
    spec = resolve(tiny_spec(sampling={"steps": 10}, policy={"name": "easycache", "tau": 0.3}))
    gen = Session(spec).generate("a red ball", seed=0, policy=spec.policy)
    cond = [(c.step, c.computed, c.score) for c in gen.calls if c.branch == "cond"]
    uncond = [(c.step, c.computed, c.score) for c in gen.calls if c.branch == "uncond"]
    assert uncond == cond
    computed = [c[1] for c in cond]
    assert computed[:2] == [True, True] and computed[-1] is True and not all(computed)


class _Recorder(EasyCachePolicy):
    def __init__(self):
        super().__init__(tau=10.0, num_steps=4)
        self.asked = []

    def decide(self, state, call):
        self.asked.append(call.branch)
        return super().decide(state, call)


def test_uncond_first_is_refused_and_batched_cfg_decides_once(tiny_spec):
    """decide_on='cond': an uncond call that comes before its step's cond call cannot follow it (one line); a
    batched run (one cond_uncond call per step) decides on its own batch."""
    session = Session(resolve(tiny_spec()))
    tr = session.transformer
    g = torch.Generator().manual_seed(0)
    kwargs = dict(hidden_states=torch.randn(1, 16, 3, 4, 4, generator=g), timestep=torch.tensor([500.0]),
                  encoder_hidden_states=torch.randn(1, 16, 32, generator=g), return_dict=False)
    policy = _Recorder()
    with torch.no_grad():
        apply_policy(tr, session.blocks, policy, label="easycache")
        try:
            for branch in ("uncond", "cond"):
                with tr.cache_context(branch):
                    tr(**kwargs)
            with tr.cache_context("uncond"), pytest.raises(PolicyError) as err:
                tr(**kwargs)
        finally:
            remove_policy(tr)
    assert str(err.value) == ("policy 'easycache' decides on branch 'cond' and applies it to 'uncond', but call 1 of "
                              "'uncond' came before 'cond''s call of that step: this pipeline's call order cannot "
                              "share the decision")

    spec = resolve(tiny_spec(model={"name": "tiny-cogvideox"}, sampling={"steps": 6},
                             policy={"name": "easycache", "tau": 0.3}))
    gen = Session(spec).generate("a red ball", seed=0, policy=spec.policy)
    assert {c.branch for c in gen.calls} == {"cond_uncond"}
    assert not all(c.computed for c in gen.calls) and gen.calls[0].computed


def test_model_whose_output_is_not_its_input_shape_is_refused_in_one_line(tiny_spec, tmp_path):
    """Open-Sora's learned-sigma head returns 8 channels for 4 in: x + (y - x) means nothing there."""
    spec = resolve(tiny_spec(model={"name": "tiny-opensora"}, sampling={"steps": 3}, policy={"name": "easycache"}))
    with pytest.raises(PolicyError, match=r"output \(2, 8, .*\) is not shaped like its input \(2, 4, "):
        Session(spec).generate("a red ball", seed=0, policy=spec.policy)
    proc = subprocess.run([sys.executable, "-m", "sencache_bench", "run", "configs/tiny_wan.yaml",
                           "--set", "model.name=tiny-opensora", "--set", "policy.name=easycache",
                           "--set", "sampling.steps=3", "--set", f"output.dir={tmp_path / 'cli'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "━" not in ln]
    assert lines[-1].startswith("error: policy 'easycache' reuses the transformation y - x"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_binds_the_spec_step_count():
    config = EasyCacheConfig(tau=0.1).bind(model="tiny-wan", family="wan", steps=7)
    assert config.make_policy().num_steps == 7
