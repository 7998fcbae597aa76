"""FLOPs of a run (priced from its call trace, or by the replay for in-block caches) equal a direct count of the
whole cached generation, part by part (text encoder, transformer, VAE decoding)."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from torch.utils.flop_counter import FlopCounterMode

from sencache_bench.policies.static import StaticConfig
from sencache_bench.runner import Runner, Session, price
from sencache_bench.spec import resolve

PARTS = ("text_encoder", "transformer", "vae_decode")


@contextmanager
def _hooked(module, on_enter, on_exit):
    """Forward pre/post hooks on one module: the component's FLOPs are what the counter gains while it runs."""
    handles = [module.register_forward_pre_hook(lambda m, a: on_enter()),
               module.register_forward_hook(lambda m, a, o: on_exit())]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def direct_count(session: Session, generate) -> dict[str, list[int]]:
    """A second method, independent of the project's pricing: torch's FlopCounterMode over the whole generation,
    each FLOP attributed to the component running when it was counted (forward hooks on the text encoders and
    the transformer, a wrapper around ``vae.decode``), not by the counter's module names nor by call-trace pricing.

    Returns ``{part: [total, attention]}`` plus ``"outside"``: FLOPs counted while none of the three ran.
    Attention is any op whose name says attention; on CPU that is the fused SDPA kernel, counted with the
    formula sencache_bench.measure.flops registers (torch's own ``sdpa_flop_count``; the formula alone, checked
    against a hand count in test_attention_is_counted_on_cpu_tiny_wan)."""
    counter = FlopCounterMode(display=False)
    parts = {name: [0, 0] for name in (*PARTS, "outside")}
    open_: dict[str, tuple[int, int, int]] = {}  # part -> (depth, total at entry, attention at entry)

    def now() -> tuple[int, int]:
        ops = counter.get_flop_counts().get("Global", {})
        return sum(ops.values()), sum(v for op, v in ops.items() if "attention" in str(op))

    def enter(part):
        def hook():
            depth, tot, att = open_.get(part, (0, 0, 0))
            open_[part] = (depth + 1, *now()) if depth == 0 else (depth + 1, tot, att)
        return hook

    def leave(part):
        def hook():
            depth, tot, att = open_[part]
            if depth == 1:
                end = now()
                parts[part][0] += end[0] - tot
                parts[part][1] += end[1] - att
            open_[part] = (depth - 1, tot, att)
        return hook

    pipe = session.pipe
    encoders = [m for name, m in pipe.components.items() if name.startswith("text_encoder") and m is not None]
    decode = pipe.vae.decode

    def counted_decode(*args, **kwargs):
        enter("vae_decode")()
        try:
            return decode(*args, **kwargs)
        finally:
            leave("vae_decode")()

    pipe.vae.decode = counted_decode
    experts = [m for name, m in pipe.components.items() if name.startswith("transformer") and m is not None]
    try:
        with _hooked(pipe.transformer, enter("transformer"), leave("transformer")):
            hooks = [_hooked(m, enter("text_encoder"), leave("text_encoder")) for m in encoders]
            hooks += [_hooked(m, enter("transformer"), leave("transformer")) for m in experts[1:]]  # Wan 2.2
            for h in hooks:
                h.__enter__()
            try:
                with counter:
                    generate()
            finally:
                for h in hooks:
                    h.__exit__(None, None, None)
    finally:
        del pipe.vae.decode  # the instance attribute: the class's method again
    total = now()
    parts["outside"] = [total[0] - sum(parts[p][0] for p in PARTS), total[1] - sum(parts[p][1] for p in PARTS)]
    return parts


def assert_parts_equal(flops: dict, direct: dict) -> None:
    """Each part apart, attention included and without it; nothing counted outside the three parts."""
    assert direct["outside"] == [0, 0], "FLOPs outside text encoder, transformer and VAE decoding"
    assert direct["transformer"][1] > 0, "CPU attention counted (else the attention checks prove nothing)"
    for part in PARTS:
        tot, att = direct[part]
        assert tot > 0, part
        assert flops[part] == tot, part
        assert flops[f"{part}_no_attn"] == tot - att, part


@pytest.mark.parametrize("name", ["tiny-wan", "tiny-hunyuanvideo", "tiny-cogvideox", "tiny-opensora"])
@pytest.mark.parametrize("reuse", ["residual", "output", None])
def test_priced_trace_matches_direct_count(name, reuse, tiny_spec):
    """The trace prices each part of the generation as the direct count of that part, on every family."""
    session = Session(resolve(tiny_spec(model={"name": name}, sampling={"steps": 4})))
    parts = session.count_flops("a red ball", seed=0)
    policy = StaticConfig(every=2, reuse=reuse) if reuse else None
    holder = {}
    direct = direct_count(session, lambda: holder.setdefault("gen", session.generate("a red ball", seed=0,
                                                                                     policy=policy)))
    priced = price(parts, holder["gen"].calls)
    assert_parts_equal(priced, direct)
    if reuse is not None:
        full = price(parts, session.generate("a red ball", seed=0).calls)
        assert priced["transformer"] < full["transformer"]


def test_attention_is_counted_on_cpu_tiny_wan(tiny_spec):
    """Hand formula 4*B*H*Sq*Sk*D per attention: self-attention over 12 video tokens, cross over 16 text tokens."""
    session = Session(resolve(tiny_spec()))
    parts = session.count_flops("a red ball", seed=0)
    heads, dim, video, text = 2, 12, 3 * 2 * 2, 16  # latent 3x4x4 with patch (1,2,2); max_sequence_length 16
    per_block = 4 * heads * video * video * dim + 4 * heads * video * text * dim
    assert [b[1] for b in parts["call"]["blocks"]] == [per_block, per_block]
    assert parts["call"]["outside"][1] == 0


# thresholds loose enough that the tiny model caches (tests/policies/test_cachedit.py)
CACHE_DIT = {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "max_warmup_steps": 1, "residual_diff_threshold": 0.5}

EVERY_POLICY = [
    ("tiny-wan", {"name": "none"}),
    ("tiny-wan", {"name": "static", "every": 2}),
    ("tiny-wan", {"name": "sencache", "eps_main": 0.3, "max_reuse": 2}),
    ("tiny-wan", {"name": "sencache-global", "budget": 0.5, "max_reuse": 2}),  # calibrates its own profile, table
    ("tiny-wan", {"name": "lemica", "budget": 0.5}),  # measures its own graph
    ("tiny-wan", {"name": "dicache", "tau": 0.3}),  # the probe block runs on reused calls
    ("tiny-wan", {"name": "dpcache", "budget": 0.5}),  # calibrates its own step errors
    ("tiny-wan", {"name": "teacache", "thresh": 0.2, "coefficients": "configs/calibrated/tiny-wan_teacache.json"}),
    ("tiny-wan", {"name": "magcache", "ratios": "configs/calibrated/tiny-wan_magcache.json"}),
    ("tiny-wan", {"name": "semcache"}),
    ("tiny-opensora", {"name": "adacache", "codebook": {0.5: 3, 1.0: 2, 100.0: 1}, "moreg": True}),
    ("tiny-wan", {"name": "fbc", "threshold": 0.5}),
    ("tiny-wan", {"name": "pab", "spatial_attention_block_skip_range": 2,
                  "spatial_attention_timestep_skip_range": [-1, 1001]}),
    ("tiny-cogvideox", {"name": "fastercache", "spatial_attention_timestep_skip_range": [-1, 900]}),
    ("tiny-wan", {"name": "taylorseer", "cache_interval": 2, "disable_cache_before_step": 1}),
    ("tiny-wan", {"name": "taylorseer", "cache_interval": 2, "disable_cache_before_step": 1, "use_lite_mode": True}),
    ("tiny-wan", {"name": "diffusers-magcache", "ratios": "configs/calibrated/tiny-wan_magcache.json"}),
    ("tiny-wan", {"name": "dbcache", **CACHE_DIT}),
    ("tiny-wan", {"name": "dbprune", **CACHE_DIT}),
    ("tiny-wan", {"name": "easycache", "tau": 0.5}),
    ("tiny-wan", {"name": "seacache", "threshold": 2.0}),
    ("tiny-cogvideox", {"name": "seacache", "threshold": 2.0}),  # the harness completes the cache context
]

# Wan 2.2's two experts (tiny-wan22, 4 steps: 2 high-noise, 2 low-noise): every policy that is not refused there
# (calibrated ones are: tests/models/test_wan22.py; fastercache: no Wan adapter) is priced against the direct
# count of the whole cached generation, both experts' calls included
EVERY_POLICY += [("tiny-wan22", p) for p in (
    {"name": "static", "every": 2}, {"name": "semcache"}, {"name": "fbc", "threshold": 0.5},
    {"name": "pab", "spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": [-1, 1001]},
    {"name": "taylorseer", "cache_interval": 2, "disable_cache_before_step": 1}, {"name": "dbcache", **CACHE_DIT},
    {"name": "easycache", "tau": 0.5}, {"name": "seacache", "threshold": 2.0}, {"name": "dicache", "tau": 0.3},
    {"name": "dpcache", "budget": 0.5}, {"name": "adacache", "codebook": {0.5: 3, 1.0: 2, 100.0: 1}})]
# Wan 2.2 TI2V's layout (tiny-wan22-ti2v: expand_timesteps, a per-token time embedding; one transformer)
EVERY_POLICY += [("tiny-wan22-ti2v", p) for p in (
    {"name": "static", "every": 2}, {"name": "sencache", "eps_main": 0.3, "max_reuse": 2}, {"name": "semcache"},
    {"name": "teacache", "thresh": 5.0, "coefficients": [0, 0, 0, 1, 0]}, {"name": "fbc", "threshold": 0.5},
    {"name": "pab", "spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": [-1, 1001]})]


STEPS = {"adacache": 8}  # steps 1, 2, N-1 and N always compute: 4 steps would reuse nothing
# on two experts 4 steps are 2 + 2: dpcache's keys are then all of them (0, 1 and the low-noise expert's first two),
# and easycache's warm-up leaves nothing to reuse
STEPS.update({("tiny-wan22", "dpcache"): 8, ("tiny-wan22", "easycache"): 8})


def test_every_registered_policy_is_in_the_list():
    """A policy added to the registry without a FLOP check here fails this test."""
    from sencache_bench.policies import POLICIES
    from sencache_bench.registry import BUILT_IN

    built_in = {name for name in POLICIES.names() if POLICIES.source(name) == BUILT_IN}
    assert built_in == {p["name"] for _, p in EVERY_POLICY}


@pytest.mark.parametrize("model,policy", EVERY_POLICY, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}={x}" for k, x in v.items() if k in ("name", "use_lite_mode")))
def test_every_policy_records_the_flops_its_generation_executes(model, policy, tiny_spec):
    """The record's FLOPs (priced from the trace, or by the replay for in-block caches) equal an independent
    direct count of the whole cached generation, text encoder, transformer and VAE decoding each apart,
    attention included and without it."""
    if policy["name"] in ("dbcache", "dbprune"):
        pytest.importorskip("cache_dit", reason="cache-dit is an optional extra (make env installs it)")
    spec = resolve(tiny_spec(model={"name": model}, sampling={"steps": STEPS.get((model, policy["name"]), STEPS.get(policy["name"], 4))},
                             prompts=["a red ball"], policy=policy))
    runner = Runner(spec, log=lambda s: None)
    rec = json.loads(runner.run_item(*runner.items()[0]).read_text())
    holder = {}
    direct = direct_count(runner.session, lambda: holder.setdefault(
        "gen", runner.session.generate("a red ball", 0, policy=spec.policy)))
    calls = holder["gen"].calls
    assert {c.branch: sum(x.computed for x in calls if x.branch == c.branch) for c in calls} \
        == rec["nfe_per_branch"], "the counted generation made the same decisions"
    assert_parts_equal(rec["flops"], direct)
    assert rec["flops"]["total"] == sum(t for t, _ in (direct[p] for p in PARTS))
    assert rec["flops_method"] == ("replay" if spec.policy.priced_by_replay() else "trace")
    if policy["name"] != "none":  # every setting here skips work, and the count sees it
        assert rec["flops"]["transformer"] < rec["reference"]["flops"]["transformer"]
