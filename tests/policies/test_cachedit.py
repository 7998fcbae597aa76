"""cache-dit's DBCache / DBPrune through cache_dit.enable_cache: our recorder's counts against cache-dit's own.

``cache_dit.summary`` reports, per block stack, the steps it cached (``cached_steps``: the first call of a
step, i.e. cond or the batched cond_uncond; ``cfg_cached_steps``: the second, uncond) and, for DBPrune, the
blocks it pruned per step. The recorder sees which blocks' real forward ran; the two must agree call by call.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

cache_dit = pytest.importorskip("cache_dit", reason="cache-dit is an optional extra (make env installs it)")

from sencache_bench.errors import BenchError, SpecError  # noqa: E402
from sencache_bench.policies.cachedit import PIPELINE_FIELDS, DBCacheSpec, DBPruneSpec  # noqa: E402
from sencache_bench.runner import Session, price  # noqa: E402
from sencache_bench.spec import load_spec, resolve  # noqa: E402

from sencache_bench.models import MODELS  # noqa: E402

# cache-dit's families (Open-Sora has no cache-dit adapter: test_refused_where_cache_dit_has_no_adapter)
# tiny-wan22 left out: cache-dit's summary is per transformer (its two experts: tests/models/test_wan22.py)
TINY_MODELS = [name for name in MODELS if name.startswith("tiny-") and name not in ("tiny-opensora", "tiny-wan22")
               and MODELS.get(name).image != "required"]  # I2V needs sampling.image: tests/models/test_i2v.py

STEPS = 8
PROMPT = "a red ball"
# thresholds high enough that every tiny model caches (checked while writing: 5 or 6 of the 6 post-warm-up steps)
LOOSE = {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "max_warmup_steps": 2, "residual_diff_threshold": 0.5}

_SESSIONS: dict[str, tuple] = {}


def _session(model: str, tmp_path_factory, steps: int = STEPS):
    """One session per model for the module, with its spec and uncached reference."""
    if model not in _SESSIONS:
        spec = {"model": {"name": model}, "sampling": {"steps": steps}, "prompts": [PROMPT], "metrics": ["psnr"],
                "output": {"dir": str(tmp_path_factory.mktemp("results"))}}
        session = Session(resolve(spec))
        _SESSIONS[model] = spec, session, session.generate(PROMPT, seed=0)
    return _SESSIONS[model]


def _run(spec, session, policy):
    config = resolve(dict(spec, policy=policy)).policy
    return config, session.generate(PROMPT, seed=0, policy=config)


def _stats_by_stack(config) -> dict:
    """cache-dit's stats per block stack ("blocks", "transformer_blocks", ...); summary lists some twice."""
    return {s.cache_options["name"].rsplit("_", 1)[0]: s for s in config.last_stats()}


def _stack_ranges(session) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, name in enumerate(session.block_names):
        out.setdefault(name.rsplit(".", 1)[0], []).append(i)
    return out


def _first_call_branch(branch: str) -> bool:
    """cache-dit's even/odd convention: the first call of a step is its "non-CFG" one."""
    return branch != "uncond"


def _assert_detached(session):
    from diffusers.hooks import HookRegistry

    from sencache_bench.measure.calls import MARKER_HOOK

    assert not getattr(session.transformer, "_is_cached", False)
    assert "forward" in session.transformer.__dict__  # diffusers' hook wrapper is back in place
    for module in (session.transformer, *session.blocks):
        assert HookRegistry.check_if_exists_or_initialize(module)._hook_order == [MARKER_HOOK]


@pytest.fixture(scope="module")
def bench():
    spec = load_spec("configs/bench_dbcache.yaml")
    return spec, Session(spec)


# -- the fields are cache-dit's -------------------------------------------------------------------
@pytest.mark.parametrize("spec_cls, config_cls, excluded", [
    (DBCacheSpec, cache_dit.DBCacheConfig, set(PIPELINE_FIELDS)),
    (DBPruneSpec, cache_dit.DBPruneConfig, set(PIPELINE_FIELDS)),
])
def test_fields_and_defaults_are_cache_dits(spec_cls, config_cls, excluded):
    theirs = {f.name: f for f in dataclasses.fields(config_cls) if f.name not in excluded}
    ours = {k: f for k, f in spec_cls.model_fields.items() if k not in ("name", "calibrator")}
    assert set(ours) == set(theirs)
    instance = config_cls()
    for key, field in ours.items():
        assert field.get_default(call_default_factory=True) == getattr(instance, key), key
    assert spec_cls.knob.field == "residual_diff_threshold" and spec_cls.knob.more_compute == "lower"


@pytest.mark.parametrize("name, config_name", [("taylorseer", "TaylorSeerCalibratorConfig"),
                                                ("foca", "FoCaCalibratorConfig"), ("dmd", "DMDCalibratorConfig")])
def test_calibrator_fields_and_defaults_are_cache_dits(name, config_name):
    config_cls = getattr(cache_dit, config_name)
    spec = DBCacheSpec(calibrator=name)
    theirs = {f.name for f in dataclasses.fields(config_cls)} - {"calibrator_type", "calibrator_kwargs"}
    ours = spec.calibrator.model_dump(exclude={"name"})
    assert set(ours) == theirs
    instance = config_cls()
    assert all(getattr(instance, k) == v for k, v in ours.items())
    _, calib = spec.cache_dit_configs(separate_cfg=True)
    assert isinstance(calib, config_cls) and calib.calibrator_type == name


# -- NFE and traces against cache_dit.summary -----------------------------------------------------
@pytest.mark.parametrize("model", TINY_MODELS)
def test_dbcache_cached_steps_equal_cache_dit_summary(model, tmp_path_factory):
    spec, session, reference = _session(model, tmp_path_factory)
    config, gen = _run(spec, session, dict(LOOSE, name="dbcache"))
    stats = _stats_by_stack(config)
    stacks = _stack_ranges(session)
    assert set(stats) == set(stacks)
    branches = {c.branch for c in gen.calls}
    for branch in branches:
        calls = [c for c in gen.calls if c.branch == branch]
        assert [c.step for c in calls] == list(range(STEPS))
        skipped_any = set()
        for stack, blocks in stacks.items():
            middle = blocks[1:]  # F1B0: every block after the first is cached
            ours = [c.step for c in calls if not set(middle) & set(c.blocks_ran)]
            s = stats[stack]
            theirs = s.cached_steps if _first_call_branch(branch) else s.cfg_cached_steps
            assert ours == theirs, (stack, branch)
            skipped_any |= set(ours)
        nfe = sum(c.computed for c in calls)
        assert nfe == STEPS - len(skipped_any) and 0 < nfe < STEPS
        assert all(c.blocks_ran[0] == 0 for c in calls)  # the Fn block runs at every step
    assert (gen.frames != reference.frames).any()
    assert config.inputs()["cache_dit"] == {"source": f"cache-dit {cache_dit.__version__}"}  # in the record
    _assert_detached(session)


def test_wan_without_cfg_makes_one_call_per_step_and_cache_dit_counts_it_so(tmp_path_factory):
    """guidance_scale 1: one cond call per step; cache-dit's CFG bookkeeping must be off (else odd calls are CFG)."""
    spec, _, _ = _session("tiny-wan", tmp_path_factory)
    spec = dict(spec, sampling={"steps": STEPS, "guidance_scale": 1.0})
    session = Session(resolve(spec))
    config, gen = _run(spec, session, dict(LOOSE, name="dbcache"))
    assert {c.branch for c in gen.calls} == {"cond"} and len(gen.calls) == STEPS
    (stats,) = _stats_by_stack(config).values()
    assert stats.cfg_cached_steps == [] and stats.cached_steps == [c.step for c in gen.calls if not c.computed]
    assert stats.cached_steps


def test_setting_labels_name_the_calibrator():
    assert DBCacheSpec().setting() == "default"
    assert DBCacheSpec(calibrator="taylorseer").setting() == "calibrator=taylorseer"
    label = DBCacheSpec(Fn_compute_blocks=1, calibrator={"name": "dmd", "dmd_history": 4}).setting()
    assert label == "Fn_compute_blocks=1,calibrator=dmd(dmd_history=4)"


@pytest.mark.parametrize("model", ["tiny-wan", "tiny-hunyuanvideo"])
def test_dbprune_pruned_blocks_equal_cache_dit_summary(model, tmp_path_factory):
    spec, session, _ = _session(model, tmp_path_factory)
    config, gen = _run(spec, session, dict(LOOSE, name="dbprune"))
    stats = list(_stats_by_stack(config).values())
    pruned_total = 0
    for c in gen.calls:
        ours = len(session.blocks) - len(c.blocks_ran)
        key = "pruned_blocks" if _first_call_branch(c.branch) else "cfg_pruned_blocks"
        theirs = sum(getattr(s, key)[c.step] for s in stats)
        assert ours == theirs, (c.branch, c.step)
        assert c.computed == (ours == 0)
        pruned_total += ours
    assert pruned_total > 0
    _assert_detached(session)


@pytest.mark.parametrize("calibrator", ["taylorseer", "foca", {"name": "dmd", "dmd_history": 4}])
def test_calibrators_run_and_change_the_output(calibrator, bench):
    """On bench-t2v (on tiny-wan TaylorSeer's forecast equals plain reuse to the last bit, so it would prove nothing)."""
    spec, session = bench
    prompt = spec.prompts[0].text
    configs = [DBCacheSpec(**LOOSE, **extra).bind(model="bench-t2v", family="wan", steps=spec.sampling.steps)
               for extra in ({}, {"calibrator": calibrator})]
    plain, calibrated = (session.generate(prompt, seed=0, policy=c) for c in configs)
    assert sum(not c.computed for c in calibrated.calls) > 0
    assert (calibrated.frames != plain.frames).any()  # the forecast replaced the plain reuse
    _assert_detached(session)


def test_after_dbcache_uncached_is_the_reference_and_runs_repeat(tmp_path_factory):
    spec, session, reference = _session("tiny-wan", tmp_path_factory)
    _, first = _run(spec, session, dict(LOOSE, name="dbcache"))
    _, second = _run(spec, session, dict(LOOSE, name="dbcache"))  # a fresh cache context per video
    assert (first.frames == second.frames).all()
    assert [c.computed for c in first.calls] == [c.computed for c in second.calls]
    again = session.generate(PROMPT, seed=0)
    assert all(c.computed for c in again.calls) and (again.frames == reference.frames).all()


# -- bench-t2v: the shipped config, the pipeline path, Bn blocks ----------------------------------
def test_bench_config_nfe_equals_cache_dit_and_its_pipeline_path(bench):
    """Per-branch NFE = steps - cache-dit's cached steps; cache-dit's own pipeline path caches the same steps."""
    spec, session = bench
    prompt = spec.prompts[0].text
    gen = session.generate(prompt, seed=0, policy=spec.policy)
    (stats,) = _stats_by_stack(spec.policy).values()
    steps = spec.sampling.steps
    nfe = {b: sum(c.computed for c in gen.calls if c.branch == b) for b in ("cond", "uncond")}
    assert nfe == {"cond": steps - len(stats.cached_steps), "uncond": steps - len(stats.cfg_cached_steps)}
    assert 0 < nfe["cond"] < steps
    # cache_dit.enable_cache(pipe): patches the pipeline class's __call__; restore as detach does
    cache, _ = spec.policy.cache_dit_configs(separate_cfg=True)
    forward = session.transformer.__dict__["forward"]
    cache_dit.enable_cache(session.pipe, cache_config=cache)
    try:
        frames = session._call(prompt, 0)
        (theirs,) = {s.cache_options["name"]: s for s in cache_dit.summary(session.pipe, logging=False)}.values()
    finally:
        session.transformer.__dict__.pop("_original_forward", None)
        session.transformer.forward = forward
        cache_dit.disable_cache(session.pipe)
    assert theirs.cached_steps == stats.cached_steps and theirs.cfg_cached_steps == stats.cfg_cached_steps
    from sencache_bench.metrics.video_io import frames_to_uint8

    assert (frames_to_uint8(frames, layout="FHWC") == gen.frames).all()


def test_bn_blocks_make_a_partial_call_priced_by_its_blocks(bench):
    """F1B1 on bench-t2v's 6 blocks: a cached step runs blocks 0 and 5 only; it is not computed and costs them."""
    spec, session = bench
    config = DBCacheSpec(Fn_compute_blocks=1, Bn_compute_blocks=1, max_warmup_steps=2,
                         residual_diff_threshold=0.3).bind(model="bench-t2v", family="wan", steps=spec.sampling.steps)
    prompt = spec.prompts[0].text
    gen = session.generate(prompt, seed=0, policy=config)
    n = len(session.blocks)
    partial = [c for c in gen.calls if not c.computed]
    full = [c for c in gen.calls if c.computed]
    assert partial and all(c.blocks_ran == [0, n - 1] for c in partial)
    assert all(sorted(c.blocks_ran) == list(range(n)) for c in full)
    (stats,) = _stats_by_stack(config).values()
    assert len(partial) == len(stats.cached_steps) + len(stats.cfg_cached_steps)
    flops = session.count_flops(prompt, seed=0)
    call = flops["call"]
    outside, blocks = call["outside"][0], [b[0] for b in call["blocks"]]
    want = len(full) * (outside + sum(blocks)) + len(partial) * (outside + blocks[0] + blocks[-1])
    assert price(flops, gen.calls)["transformer"] == want


# -- refusals -------------------------------------------------------------------------------------
def test_unsupported_transformer_is_refused_with_the_reason():
    with pytest.raises(BenchError, match="cache-dit has no block adapter for Linear"):
        DBCacheSpec().attach(torch.nn.Linear(2, 2), [])


def test_too_many_compute_blocks_is_refused(tmp_path_factory):
    spec, session, _ = _session("tiny-wan", tmp_path_factory)
    config = resolve(dict(spec, policy={"name": "dbcache", "Fn_compute_blocks": 2, "Bn_compute_blocks": 1})).policy
    with pytest.raises(BenchError, match="Fn_compute_blocks \\+ Bn_compute_blocks = 3 exceeds the 2 blocks"):
        session.generate(PROMPT, seed=0, policy=config)
    _assert_detached(session)


@pytest.mark.parametrize("policy, message", [
    ({"name": "dbcache", "Fn_compute_blocks": -1}, "Fn_compute_blocks"),
    ({"name": "dbcache", "residual_diff_treshold": 0.1}, "residual_diff_treshold"),
    ({"name": "dbcache", "calibrator": "taylor"}, "calibrator"),
    ({"name": "dbcache", "calibrator": {"name": "taylorseer", "dmd_history": 3}}, "dmd_history"),
    ({"name": "dbcache", "steps_computation_mask": [1, 0, 1]}, "one per step"),
    ({"name": "dbprune", "steps_computation_policy": "sometimes"}, "steps_computation_policy"),
])
def test_bad_fields_are_spec_errors(policy, message, tiny_spec):
    with pytest.raises(SpecError, match=message):
        resolve(tiny_spec(policy=policy))


def test_refused_where_cache_dit_has_no_adapter(tiny_spec):
    from sencache_bench.errors import SpecError
    from sencache_bench.spec import resolve

    with pytest.raises(SpecError, match="cache-dit has no block adapter for OpenSoraPipeline"):
        resolve(tiny_spec(model={"name": "tiny-opensora"}, sampling={}, policy={"name": "dbcache"}))


def test_cache_dit_stats_are_kept_per_expert(tmp_path_factory):
    """tiny-wan22 (5 high-noise steps, 3 low-noise): each expert's cache-dit summary is kept, not only the last
    detached one (each names its own expert's block stack); asking for one summary on two experts is one line.
    (cache-dit's summaries on this two-transformer pipeline list no cached steps while the trace shows reuse
    on both experts: their counts are not compared here.)"""
    from sencache_bench.errors import BenchError

    spec, session, _ = _session("tiny-wan22", tmp_path_factory)
    config, gen = _run(spec, session, dict(LOOSE, name="dbcache"))
    per_expert = config.stats_per_expert()
    assert set(per_expert) == {"transformer", "transformer_2"}
    names = {e: {s.cache_options["name"] for s in summary} for e, summary in per_expert.items()}
    assert names["transformer"].isdisjoint(names["transformer_2"])  # two caches, one per expert's stack
    for expert, summary in per_expert.items():
        assert summary and config.last_stats(expert) == summary
    assert any(not c.computed for c in gen.calls if c.expert == "transformer_2")  # the low expert cached too
    with pytest.raises(BenchError, match="several experts"):
        config.last_stats()
    _assert_detached(session)
