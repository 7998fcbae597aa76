"""SemCache: the equations on hand-made tensors, the decision rule, TMM's token dropping on every tiny model
(against a masked full-sequence reference), its counted FLOPs, and runs from YAML."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from sencache_bench.policies.base import CallInfo
from sencache_bench.policies.semcache import (SemCacheConfig, SemCachePolicy, SemCacheState, apply_semcache,
                                              count_kept_blocks, direction, eq8_rate, forced_keep_frames,
                                              frames_to_keep, layer_average, magnitude, motion_scores,
                                              remove_semcache, select_layers, semantic_threshold)
from sencache_bench.runner import Runner, Session
from sencache_bench.spec import load_spec, resolve

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny_semcache.yaml"
TINY = {"steps": 6, "height": 32, "width": 32, "frames": 17, "seeds": [0]}  # 5 latent frames on every tiny model
NO_PRESET = {"tiny-cogvideox", "tiny-ltx", "tiny-hunyuanvideo15"}  # no published (alpha, beta)
# tiny-hunyuanvideo15's tiny VAE has temporal factor 2: 9 frames give its 5 latent frames
TINY_OF = {"tiny-hunyuanvideo15": {**TINY, "frames": 9}}
# the text part of the joint key sequence: after the video tokens (HunyuanVideo, HunyuanVideo 1.5: image, ByT5 and
# Qwen tokens there), before them (CogVideoX)
TEXT_KEYS = {"tiny-hunyuanvideo15": ("encoder_hidden_states", "encoder_hidden_states_2", "image_embeds")}


# ---------------------------------------------------------------------------------------------------
# Equations (values by hand)
# ---------------------------------------------------------------------------------------------------
def test_magnitude_direction_threshold_by_hand():
    z_in, z_out = torch.tensor([[3.0, 4.0]]), torch.tensor([[6.0, 8.0]])  # norms 5 and 10
    m_raw, m_norm = magnitude(z_in, z_out, s_m=2.0)
    assert m_raw == pytest.approx(1.0) and m_norm == pytest.approx(math.tanh(0.5))  # (10 - 5) / 5, tanh(1 / 2)
    assert magnitude(z_out, z_in, s_m=1.0)[0] == pytest.approx(-0.5)  # (5 - 10) / 10
    assert direction(z_in, z_out) == pytest.approx((1.0, 0.0))  # same direction: D_norm 0
    assert direction(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])) == pytest.approx((0.0, 0.5))
    assert direction(z_in, -z_in) == pytest.approx((-1.0, 1.0))
    # p_s = 0.2 * tanh(1) + 0.8 * 0 ; with an orthogonal output of equal norm: 0.4 * tanh(0) + 0.6 * 0.5
    assert semantic_threshold(z_in, z_out, 0.2, 0.8, 1.0)["p_s"] == pytest.approx(0.2 * 0.7615941559557649)
    assert semantic_threshold(z_in, torch.tensor([[4.0, -3.0]]), 0.4, 0.6, 1.0)["p_s"] == pytest.approx(0.3)
    assert semantic_threshold(z_in, z_out, 0.0, 0.0, 1.0)["p_s"] == 0.0
    a, b = layer_average([(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 2.0])),
                          (torch.tensor([3.0, 5.0]), torch.tensor([2.0, 0.0]))])
    assert a.tolist() == [2.0, 4.0] and b.tolist() == [1.0, 1.0]


def test_eq8_rate_by_hand():
    # (|3 - 1| / |2 - 0.5|) * (|3 - 2| / |1 - 0.5|) = (2 / 1.5) * (1 / 0.5)
    o_t, i_t, o_p, i_p = (torch.tensor([v]) for v in (3.0, 1.0, 2.0, 0.5))
    assert eq8_rate(o_t, i_t, o_p, i_p) == pytest.approx(8.0 / 3.0)
    # L1 norms over all elements: O_t - I_t = (2, -2), O_p - I_p = (1, -1), O_t - O_p = (1, 3), I_t - I_p = (0, 4):
    # (4 / 2) * (4 / 4)
    o_t, i_t = torch.tensor([[3.0, 0.0]]), torch.tensor([[1.0, 2.0]])
    o_p, i_p = torch.tensor([[2.0, -3.0]]), torch.tensor([[1.0, -2.0]])
    assert eq8_rate(o_t, i_t, o_p, i_p) == pytest.approx(2.0)


def test_motion_scores_percentile_and_layers_by_hand():
    frames = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 2.0]]])  # (B=1, F=4, D=2)
    scores = motion_scores(frames)  # frame 0 has no predecessor
    assert math.isnan(scores[0])
    assert scores[1:] == pytest.approx([0.0, math.sqrt(2) / 2, 1.0 / 3.0])  # 0/2, sqrt2/(1+1), 1/(2+1)
    # frames whose score exceeds tau strictly: tau = median(0, .707, .333) = .333 keeps frame 2, not frame 3
    assert frames_to_keep(scores, 0.5) == [0, 2]
    assert frames_to_keep(scores, 0.7) == [0, 2, 3]  # tau = 30th percentile = 0.2
    assert frames_to_keep(scores, 1.0) == [0, 1, 2, 3] and frames_to_keep(scores, 0.01) == [0, 2]
    assert frames_to_keep(np.array([np.nan, 0.5, 0.5, 0.5]), 0.5) == [0, 1, 2, 3]  # none exceeds tau: all compute
    previous = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]])
    assert motion_scores(frames, previous) == pytest.approx([0.0, math.sqrt(2) / 2, 0.0, 1.0 / 3.0])
    assert select_layers(30, 15) == [0, 1, 2, 3, 4, 12, 13, 14, 15, 16, 25, 26, 27, 28, 29]
    assert select_layers(30, 3) == [0, 14, 29] and select_layers(2, 15) == [0, 1]
    assert select_layers(20, 18) == [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 14, 15, 16, 17, 18, 19]
    assert len(select_layers(30, 16)) == 16 and len(select_layers(5, 4)) == 4


def test_relative_error_and_reuse_rule_by_hand():
    """error: relative (ours): E += rate * ||I_t - I_{t-1}||_1 / ||O_r||_1; REUSE while E < p_s, else COMPUTE, E = 0."""
    policy = SemCachePolicy({}, None, alpha=0.2, beta=0.8, warmup=2, tmm=False, error="relative")
    state = SemCacheState(threshold=0.1, rate=2.0, ref_output_l1=10.0, prev_input=torch.zeros(1, 2, 1))
    call = CallInfo(branch="cond", index=2, timestep=500.0, latent=torch.zeros(1))
    state.current_input = torch.tensor([[[0.1], [0.2]]])  # ||dI||_1 = 0.3: E = 2 * 0.3 / 10 = 0.06
    d = policy.decide(state, call)
    assert not d.compute and d.score == pytest.approx(0.06) and d.threshold == 0.1
    state.current_input = torch.tensor([[[0.4], [0.2]]])  # + 2 * 0.3 / 10: E = 0.12 >= 0.1
    d = policy.decide(state, CallInfo("cond", 3, 400.0, torch.zeros(1)))
    assert d.compute and d.score == pytest.approx(0.12) and state.error == 0.0
    assert policy.decide(state, CallInfo("cond", 1, 900.0, torch.zeros(1))).compute  # warm-up


def test_paper_error_follows_algorithm_1_by_hand():
    """error: paper (the default): I, O = the model's input latent and output. Test E < p_s; reuse and then add
    Eq. 8's increment against the previous call, or compute and reset E. p_s = 3, scalars (I, O) per call:

    call  I    O    decision (E at the test)        increment after the call
    0     0.5  2    C (warm-up)                     -
    1     1    3    R (0 < 3)                       (2 / 1.5) * (1 / 0.5) = 8/3
    2     2    4    R (8/3 < 3)                     (2 / 2) * (1 / 1) = 1      -> E = 11/3
    3     3    4.5  C (11/3 >= 3), E = 0            - (computed)
    4     3.5  5    R (0 < 3)                       (1.5 / 1.5) * (0.5 / 0.5) = 1
    """
    policy = SemCachePolicy({}, None, alpha=0.2, beta=0.8, warmup=1, tmm=False)
    assert policy.error_mode == "paper"
    state = SemCacheState()
    seq = [(0.5, 2.0), (1.0, 3.0), (2.0, 4.0), (3.0, 4.5), (3.5, 5.0)]
    decisions = []
    for k, (i, o) in enumerate(seq):
        state.current_input = torch.full((1, 2, 1), i)
        d = policy.decide(state, CallInfo("cond", k, 1000.0 - 100 * k, torch.zeros(1)))
        decisions.append(d)
        policy.after_call(state, d, torch.full((1, 4), i), torch.full((1, 4), o))
        if k == 0:
            state.threshold = 3.0  # p_s, measured by the attention hooks in a real run
    assert [d.compute for d in decisions] == [True, False, False, True, False]
    assert [d.score for d in decisions] == [None, 0.0, pytest.approx(8 / 3), pytest.approx(11 / 3), 0.0]
    assert state.error == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------
def test_config_presets_and_errors(tiny_spec):
    from sencache_bench.errors import SpecError
    from sencache_bench.models import FAMILIES
    from sencache_bench.policies.semcache import describe

    spec = resolve(tiny_spec(policy={"name": "semcache"}))
    assert describe(spec.policy, FAMILIES.get("wan"))["alpha"] == 0.2
    assert describe(spec.policy, FAMILIES.get("hunyuanvideo"))["beta"] == 0.6
    with pytest.raises(SpecError, match="no published"):
        resolve(tiny_spec(model={"name": "tiny-ltx"}, policy={"name": "semcache"}))
    with pytest.raises(SpecError, match="both alpha and beta"):
        resolve(tiny_spec(policy={"name": "semcache", "alpha": 0.5}))
    with pytest.raises(SpecError, match="keep_ratio"):
        resolve(tiny_spec(policy={"name": "semcache", "keep_ratio": 0.0}))
    assert resolve(tiny_spec(policy={"name": "semcache"})).policy.error == "paper"
    with pytest.raises(SpecError, match="error"):
        resolve(tiny_spec(policy={"name": "semcache", "error": "literal"}))  # the degenerate reading is gone
    assert SemCacheConfig(alpha=0.0, beta=1.0, tmm=False).setting() == "alpha=0.0,beta=1.0,tmm=False"


# ---------------------------------------------------------------------------------------------------
# TMM on every tiny model: kept tokens vs the full sequence with the dropped tokens masked out of attention
# ---------------------------------------------------------------------------------------------------
def _call_inputs(session) -> dict:
    """The keyword arguments of the transformer's first call in a 1-step generation."""
    captured = {}

    def grab(module, args, kwargs):
        captured.setdefault("kwargs", dict(kwargs))

    handle = session.transformer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        session._call("a red ball bouncing on grass", seed=0, steps=1)
    finally:
        handle.remove()
    kwargs = captured["kwargs"]
    kwargs["return_dict"] = False
    return kwargs


@contextmanager
def _mask_keys(joint_length: int, video_offset: int, dropped: torch.Tensor):
    """The reference of token dropping: every attention whose keys are the joint (video [+ text]) sequence
    ignores the dropped video tokens as keys; per-token layers are unaffected, so the kept tokens' outputs are
    those of a sequence without the dropped tokens, at their own positions."""
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def masked(query, key, value, attn_mask=None, *args, **kwargs):
        if key.shape[-2] == joint_length:
            visible = torch.ones(joint_length, dtype=torch.bool, device=key.device)
            visible[video_offset + dropped.to(key.device)] = False
            visible = visible.view(1, 1, 1, -1)
            if attn_mask is None:
                attn_mask = visible
            elif attn_mask.dtype == torch.bool:
                attn_mask = attn_mask & visible
            else:
                attn_mask = attn_mask.masked_fill(~visible, float("-inf"))
        return sdpa(query, key, value, attn_mask, *args, **kwargs)

    torch.nn.functional.scaled_dot_product_attention = masked
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = sdpa


def _frames(session, kwargs, tensor):
    """A transformer input or output grouped per post-patch frame, with the family's adapter."""
    adapter = session.spec.family.adapters["semcache"]
    return adapter["frames"](session.transformer, {**kwargs, "hidden_states": tensor})


@pytest.mark.parametrize("name", ["tiny-wan", "tiny-hunyuanvideo", "tiny-cogvideox", "tiny-ltx", "tiny-hunyuanvideo15"])
def test_tmm_kept_tokens_match_the_full_path(name, tiny_spec):
    policy = {"name": "semcache"} if name not in NO_PRESET else {"name": "semcache", "alpha": 0.2, "beta": 0.8}
    session = Session(resolve(tiny_spec(model={"name": name}, sampling=TINY_OF.get(name, TINY), policy=policy)))
    tr = session.transformer
    kwargs = _call_inputs(session)
    _, per_frame = _frames(session, kwargs, kwargs["hidden_states"])
    n_frames = _frames(session, kwargs, kwargs["hidden_states"])[0].shape[1]
    assert n_frames == 5

    def run(frames=None):
        if frames is not None:
            apply_semcache(tr, session.blocks, session.spec.policy.build(tr, force_keep=forced_keep_frames(frames)))
        try:
            with torch.no_grad(), tr.cache_context("cond"):
                return tr(**kwargs)[0]
        finally:
            remove_semcache(tr)

    plain = run()
    assert torch.equal(run(list(range(n_frames))), plain), "all frames kept must be the full path exactly"

    kept = [0, 2, 3]
    dropped = torch.cat([torch.arange(f * per_frame, (f + 1) * per_frame) for f in (1, 4)])
    # the joint key sequence: video tokens (+ text tokens after them in HunyuanVideo, before them in CogVideoX)
    n_video = n_frames * per_frame
    text = {"tiny-hunyuanvideo": 16, "tiny-cogvideox": 16}.get(name, 0) + sum(
        kwargs[k].shape[1] for k in TEXT_KEYS.get(name, ()))
    offset = text if name == "tiny-cogvideox" else 0
    with _mask_keys(n_video + text, offset, dropped), torch.no_grad():
        reference = tr(**kwargs)[0]
    out = run(kept)
    got, want = _frames(session, kwargs, out)[0], _frames(session, kwargs, reference)[0]
    torch.testing.assert_close(got[:, kept], want[:, kept], rtol=1e-4, atol=1e-5)
    # the dropped frames really are not computed: they differ from the reference (no cache: head of the input)
    assert not torch.allclose(got[:, [1, 4]], want[:, [1, 4]], atol=1e-3)
    # and token positions matter: the kept frames differ from the plain full-sequence call
    assert not torch.allclose(got[:, kept], _frames(session, kwargs, plain)[0][:, kept], atol=1e-4)


# ---------------------------------------------------------------------------------------------------
# Counted FLOPs, runs
# ---------------------------------------------------------------------------------------------------
def test_tmm_cuts_counted_flops_per_computed_call(tiny_spec):
    session = Session(resolve(tiny_spec(sampling=TINY, policy={"name": "semcache"})))
    full = session.count_flops("a red ball", seed=0)["call"]["blocks"]
    n_video = 20  # 5 latent frames x 4 tokens
    half = count_kept_blocks(session, session.spec.policy, 8, "a red ball")
    three = count_kept_blocks(session, session.spec.policy, 12, "a red ball")
    for f, h, t in zip(full, half, three):
        assert h[0] < t[0] < f[0] and h[1] < t[1] < f[1]  # total and attention FLOPs per block
    # linear layers scale with the tokens, self-attention faster: attention FLOPs are not a token fraction
    assert sum(b[1] for b in half) < sum(b[1] for b in full) * 8 / n_video * 1.01


def test_yaml_tiny_wan_records_effective_nfe_and_tmm_flops(tmp_path):
    spec = load_spec(CONFIG, [f"output.dir={tmp_path}", 'prompts=["a red ball bouncing on grass"]'])
    runner = Runner(spec)
    rec = json.loads(runner.run_item(*runner.items()[0]).read_text())
    assert rec["policy"] == "semcache"
    trace = rec["trace"]
    assert all("threshold" in c for c in trace if c["step"] >= 2) and any("tokens" in c for c in trace)
    tmm_calls = [c for c in trace if "tokens" in c]
    assert all(c["computed"] and c["tokens"] == [12, 20] for c in tmm_calls)  # 3 of 5 frames
    computed = sum(c["computed"] for c in trace)
    effective = sum(c["computed"] * (c["tokens"][0] / c["tokens"][1] if "tokens" in c else 1) for c in trace)
    assert rec["nfe_effective"] == pytest.approx(effective / 2) and rec["nfe_effective"] < rec["nfe"] == computed / 2
    flops = rec["flops"]
    assert flops["per_computed_call"] < flops["per_call_full"]
    assert flops["transformer"] < rec["reference"]["flops"]["transformer"]


@pytest.mark.parametrize("name", ["tiny-hunyuanvideo", "tiny-cogvideox", "tiny-ltx", "tiny-opensora"])
def test_yaml_runs_on_the_other_tiny_models(name, tmp_path):
    extra = ["policy.alpha=0.2", "policy.beta=0.8"] if name in NO_PRESET else []
    spec = load_spec(CONFIG, [f"output.dir={tmp_path}", f"model.name={name}", 'prompts=["a red ball"]',
                              "sampling.steps=6", "sampling.guidance_scale=3.0", *extra])
    runner = Runner(spec)
    rec = json.loads(runner.run_item(*runner.items()[0]).read_text())
    assert rec["policy"] == "semcache" and rec["nfe"] <= 6 and rec["nfe_effective"] <= rec["nfe"]
    assert rec["flops"]["transformer"] <= rec["reference"]["flops"]["transformer"]


def test_zero_threshold_never_reuses_and_no_tmm_is_full(tiny_spec):
    session = Session(resolve(tiny_spec(sampling={"steps": 6, "frames": 17},
                                        policy={"name": "semcache", "alpha": 0.0, "beta": 0.0, "tmm": False})))
    gen = session.generate("a red ball", seed=0, policy=session.spec.policy)
    assert all(c.computed and c.tokens is None for c in gen.calls)
    assert all(c.threshold == 0.0 for c in gen.calls if c.step >= 2)
    plain = session.generate("a red ball", seed=0)
    assert np.array_equal(plain.frames, gen.frames)


def test_threshold_is_eq6_on_the_layer_averaged_cross_attention(tiny_spec):
    """The trace's p_s at step 2 (cond) = p_s of Z_in, Z_out averaged over tiny-wan's 2 attn2 layers at step 1."""
    session = Session(resolve(tiny_spec(sampling={"steps": 3, "frames": 17},
                                        policy={"name": "semcache", "tmm": False, "s_m": 0.5})))
    tr, seen, calls = session.transformer, [], []
    handles = [tr.register_forward_pre_hook(lambda m, a: calls.append(len(calls)))]
    for block in tr.blocks:
        handles.append(block.attn2.register_forward_hook(
            lambda m, args, out: seen.append((len(calls) - 1, args[0].clone(), out.clone()))))
    try:
        gen = session.generate("a red ball", seed=0, policy=session.spec.policy)
    finally:
        for h in handles:
            h.remove()
    pairs = [(z_in, z_out) for call, z_in, z_out in seen if call == 2]  # calls: cond 0, uncond 0, cond 1, ...
    assert len(pairs) == 2
    expected = semantic_threshold(*layer_average(pairs), alpha=0.2, beta=0.8, s_m=0.5)["p_s"]
    traced = [c for c in gen.calls if c.branch == "cond" and c.step == 2][0]
    assert traced.threshold == pytest.approx(expected, rel=1e-5)


def test_paper_error_on_tiny_wan_is_eq8_on_the_models_input_and_output(tiny_spec):
    """The trace's E (score) at every call = the sum of Eq. 8's increments, on the transformer's own input latent
    and output (captured outside the policy), over the reused calls since the branch's last computed call."""
    session = Session(resolve(tiny_spec(sampling={"steps": 10, "frames": 9},
                                        policy={"name": "semcache", "alpha": 0.0, "beta": 20.0, "tmm": False})))
    seen = []
    handle = session.transformer.register_forward_hook(
        lambda m, args, kwargs, out: seen.append((kwargs["hidden_states"].float().clone(), out[0].float().clone())),
        with_kwargs=True)
    try:
        gen = session.generate("a red ball", seed=0, policy=session.spec.policy)
    finally:
        handle.remove()
    assert [c.branch for c in gen.calls] == ["cond", "uncond"] * 10 and len(seen) == 20
    chains = 0
    for k0, branch in enumerate(("cond", "uncond")):
        calls, io = gen.calls[k0::2], seen[k0::2]
        error = 0.0
        for k, c in enumerate(calls):
            if k >= 2:  # warm-up over, p_s known: the score is E at the test
                assert c.score == pytest.approx(error, rel=1e-5, abs=1e-9), (branch, k)
                assert c.computed == (error >= c.threshold)
            if c.computed:
                error = 0.0
            else:
                (i_t, o_t), (i_p, o_p) = io[k], io[k - 1]
                error += eq8_rate(o_t, i_t, o_p, i_p)
                chains += not calls[k - 1].computed
    assert chains > 0  # some reuse followed a reuse: the accumulation itself was checked


# ---------------------------------------------------------------------------------------------------
# Decision overhead (issue 27): cheaper forms of the same computations, checked against the former ones
# ---------------------------------------------------------------------------------------------------
def _frames_to_keep_with_numpy(scores: np.ndarray, keep_ratio: float) -> list[int]:
    """frames_to_keep as it was written with np.percentile (the reference for the pure-Python tau)."""
    finite = np.isfinite(scores)
    if not finite.any() or keep_ratio >= 1.0:
        return list(range(len(scores)))
    tau = np.percentile(scores[finite], (1.0 - keep_ratio) * 100.0)
    kept = [f for f in range(len(scores)) if not finite[f] or scores[f] > tau]
    return kept if any(finite[f] for f in kept) else list(range(len(scores)))


def test_tau_is_numpys_linear_percentile_to_the_last_bit():
    """tmm.percentile against np.percentile itself on random scores (with ties) at several keep ratios: equal bit
    for bit, so TMM keeps the frames it kept with numpy."""
    from sencache_bench.policies.semcache.tmm import percentile

    rng = np.random.default_rng(0)
    for n in range(1, 24):
        for _ in range(30):
            values = rng.random(n) * 10.0 ** rng.integers(-4, 2)
            if n > 2:
                values[rng.integers(1, n)] = values[0]  # a tie
            for r in (0.75, 0.5, 0.3, 0.9, 0.01, 1 / 3, 0.6, 0.99):
                q = (1.0 - r) * 100.0
                assert percentile(values.tolist(), q) == np.percentile(values, q), (n, r)
                scores = np.concatenate([[np.nan], values])
                assert frames_to_keep(scores, r) == _frames_to_keep_with_numpy(scores, r)


def test_eq8_increment_is_the_four_norm_formula_to_the_last_bit():
    """One read to the host for the norms, and the previous call's ||O - I||_1 taken from its own increment: the
    same float32 norms and float arithmetic as Eq. 8 written with four separate norms, as it was."""
    from sencache_bench.policies.semcache.measures import eq8_increment

    def l1(x):
        return float(x.float().abs().sum())

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        calls = [tuple(torch.randn(1, 4, 3, 5, 5, generator=g).to(dtype) for _ in range(2)) for _ in range(6)]
        gap = None
        for (o_p, i_p), (o_t, i_t) in zip(calls, calls[1:]):
            before = (l1(o_t - i_t) / max(l1(o_p - i_p), 1e-8)) * (l1(o_t - o_p) / max(l1(i_t - i_p), 1e-8))
            increment, new_gap = eq8_increment(o_t, i_t, o_p, i_p, gap_p=gap)
            assert increment == before and eq8_rate(o_t, i_t, o_p, i_p) == before
            assert new_gap == l1(o_t - i_t)
            gap = new_gap


def test_i2v_eq8_compares_the_noisy_channels_only(tmp_path):
    """tiny-wan-i2v: the transformer takes 16 noisy + 20 conditioning channels and returns 16. The trace's E equals
    Eq. 8 on the input's first 16 channels (captured outside the policy); the 20 conditioning channels are the same
    at every call, so they carry no input change, and E differs from Eq. 8 on any other 16 of the 36 channels."""
    spec = resolve({"model": {"name": "tiny-wan-i2v"}, "prompts": ["a green square bouncing"],
                    "policy": {"name": "semcache", "alpha": 0.0, "beta": 20.0, "tmm": False},
                    "sampling": {"steps": 8, "seeds": [0],
                                 "image": str(Path(__file__).resolve().parents[2] / "configs/images/p002.png")},
                    "metrics": ["psnr"], "output": {"dir": str(tmp_path / "out")}})
    session = Session(spec)
    seen = []
    handle = session.transformer.register_forward_hook(
        lambda m, args, kwargs, out: seen.append((kwargs["hidden_states"].float().clone(), out[0].float().clone())),
        with_kwargs=True)
    try:
        gen = session.generate("a green square bouncing", seed=0, policy=spec.policy)
    finally:
        handle.remove()
    assert seen[0][0].shape[1] == 36 and seen[0][1].shape[1] == 16
    assert all(torch.equal(i[:, 16:], seen[0][0][:, 16:]) for i, _ in seen)  # the conditioning never changes
    checked = 0
    for k0, branch in enumerate(("cond", "uncond")):
        calls, io = gen.calls[k0::2], seen[k0::2]
        error, other = 0.0, 0.0
        for k, c in enumerate(calls):
            if k >= 2:
                assert c.score == pytest.approx(error, rel=1e-5, abs=1e-9), (branch, k)
                if not c.computed and k >= 3 and not calls[k - 1].computed:
                    assert other != pytest.approx(error, rel=1e-3)
                    checked += 1
            if c.computed:
                error = other = 0.0
            else:
                (i_t, o_t), (i_p, o_p) = io[k], io[k - 1]
                error += eq8_rate(o_t, i_t[:, :16], o_p, i_p[:, :16])
                other += eq8_rate(o_t, i_t[:, 20:], o_p, i_p[:, 20:])  # the image latents' 16 channels instead
    assert checked > 0  # a reuse after a reuse: the accumulated E told apart from the other channels'
