"""The hook framework on real tiny pipelines: per-branch NFE, reuse modes, residual exactness."""

from __future__ import annotations

from typing import Literal

import pytest
import torch

from sencache_bench.errors import PolicyError
from sencache_bench.models import MODELS
from sencache_bench.policies.static import StaticConfig
from sencache_bench.policy import CachePolicy, CallInfo, Decision, PolicyConfig
from sencache_bench.runner import Session
from sencache_bench.spec import resolve

TINY_MODELS = [name for name in MODELS if name.startswith("tiny-")
               and MODELS.get(name).image != "required"]  # I2V: tests/models/test_i2v.py


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("reuse", ["residual", "output"])
def test_static_every_k_counts_per_branch(name, reuse, tiny_spec):
    steps, k = 7, 3
    session = Session(resolve(tiny_spec(model={"name": name}, sampling={"steps": steps})))
    gen = session.generate("a red ball", seed=0, policy=StaticConfig(every=k, reuse=reuse))
    branches = {c.branch for c in gen.calls}
    # each expert's first call computes (Wan 2.2's low-noise expert reuses nothing of the high-noise one)
    firsts = {min(c.step for c in gen.calls if c.expert == e) for e in {c.expert for c in gen.calls}}
    for branch in branches:
        calls = [c for c in gen.calls if c.branch == branch]
        assert [c.step for c in calls] == list(range(steps))
        assert [c.computed for c in calls] == [i % k == 0 or i in firsts for i in range(steps)]
        # output reuse skips the whole forward; residual reuse still runs embeddings and head
        assert all(c.forward_ran == (c.computed or reuse == "residual") for c in calls)
        assert all(len(c.blocks_ran) == (len(session.blocks) if c.computed else 0) for c in calls)
    assert sum(c.computed for c in gen.calls) == len(branches) * len(set(range(0, steps, k)) | firsts)


def test_static_step_list_and_policy_removed_after_run(tiny_spec):
    session = Session(resolve(tiny_spec(sampling={"steps": 5})))
    cached = session.generate("a quiet library", seed=0, policy=StaticConfig(steps=[0, 3]))
    assert [c.computed for c in cached.calls if c.branch == "cond"] == [True, False, False, True, False]
    plain = session.generate("a quiet library", seed=0)
    assert all(c.computed for c in plain.calls), "a policy must be detached after its run"
    again = session.generate("a quiet library", seed=0)
    assert (plain.frames == again.frames).all()


def test_residual_reuse_adds_the_cached_residual(tiny_spec):
    """Same inputs twice in one branch: the reused call must reproduce the computed output."""
    from sencache_bench.policies.base import apply_policy, remove_policy

    session = Session(resolve(tiny_spec()))
    tr = session.transformer
    g = torch.Generator().manual_seed(0)
    kwargs = dict(hidden_states=torch.randn(1, 16, 3, 4, 4, generator=g), timestep=torch.tensor([500.0]),
                  encoder_hidden_states=torch.randn(1, 16, 32, generator=g), return_dict=False)
    with torch.no_grad():
        plain = tr(**kwargs)[0]
        apply_policy(tr, session.blocks, StaticConfig(every=2).make_policy())
        with tr.cache_context("cond"):
            first = tr(**kwargs)[0]
        with tr.cache_context("cond"):
            reused = tr(**kwargs)[0]
        with tr.cache_context("cond"):
            recomputed = tr(**{**kwargs, "timestep": torch.tensor([100.0])})[0]
        with tr.cache_context("uncond"):  # another branch starts with a computed call
            other = tr(**{**kwargs, "timestep": torch.tensor([100.0])})[0]
        remove_policy(tr)
    assert torch.equal(first, plain)
    torch.testing.assert_close(reused, plain, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(recomputed, plain, atol=1e-3)
    torch.testing.assert_close(other, recomputed, atol=0, rtol=0)


class _ReuseUncached(CachePolicy):
    """Computes only the calls of ``computes`` (a branch name) from call 0 on: the other branch reuses call 0."""

    name = "reuse-uncached"

    def __init__(self, reuse: str, in_block: bool, computes: str):
        self.reuse, self.decide_in_block, self.computes = reuse, in_block, computes

    def decide(self, state, call: CallInfo) -> Decision:
        return Decision(compute=call.branch == self.computes)


class _ReuseUncachedConfig(PolicyConfig):
    name: Literal["test-reuse-uncached"] = "test-reuse-uncached"
    reuse: Literal["output", "residual"] = "output"
    in_block: bool = False
    computes: str = "none"

    def make_policy(self):
        return _ReuseUncached(self.reuse, self.in_block, self.computes)


@pytest.mark.parametrize("reuse,in_block", [("output", False), ("residual", False), ("residual", True)])
@pytest.mark.parametrize("computes,reused", [("none", "cond"), ("cond", "uncond")])
def test_reuse_with_nothing_cached_is_one_policy_error(tiny_spec, reuse, in_block, computes, reused):
    """Output reuse used to return None and residual reuse to add nothing, ending in a TypeError deep in the
    pipeline: the framework names the policy, the branch and the call. The cache is per branch: a computed
    cond call does not let the uncond branch reuse. The policy is detached afterwards."""
    session = Session(resolve(tiny_spec(sampling={"steps": 3})))
    config = _ReuseUncachedConfig(reuse=reuse, in_block=in_block, computes=computes)
    with pytest.raises(PolicyError) as err:
        session.generate("a red ball", seed=0, policy=config)
    assert str(err.value) == (f"policy 'test-reuse-uncached' reused call 0 of branch {reused!r} before any call "
                              f"was computed: a policy must compute the first call of each branch")
    plain = session.generate("a red ball", seed=0)
    assert all(c.computed for c in plain.calls)
