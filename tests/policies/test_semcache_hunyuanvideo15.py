"""SemCache on HunyuanVideo 1.5 (tiny-hunyuanvideo15): the joint-attention mapping, TMM's token dropping against a
masked full-sequence reference (as tests/policies/test_semcache.py checks the other families), motion scores on the
noisy latents only, and never-reuse bit for bit. Before, the family had no SemCache adapter (refused)."""

from __future__ import annotations

import numpy as np
import torch

from sencache_bench.models.hunyuanvideo15 import semcache_frames
from sencache_bench.policies.semcache import apply_semcache, forced_keep_frames, remove_semcache
from sencache_bench.runner import Session
from sencache_bench.spec import resolve
from tests.policies.test_semcache import TINY, _call_inputs, _frames, _mask_keys

MODEL = {"name": "tiny-hunyuanvideo15"}
POLICY = {"name": "semcache", "alpha": 0.4, "beta": 0.6}  # no published pair for HunyuanVideo 1.5


def _session(tiny_spec, policy=POLICY, sampling=TINY) -> Session:
    return Session(resolve(tiny_spec(model=MODEL, sampling=sampling, policy=policy)))


def test_frames_are_the_noisy_latents_per_post_patch_frame(tiny_spec):
    session = _session(tiny_spec)
    tr, kwargs = session.transformer, _call_inputs(session)
    hidden = kwargs["hidden_states"]  # (1, 2C + 1, F, H, W): [latents, condition, mask]
    c = tr.config.out_channels
    assert hidden.shape[1] == 2 * c + 1 and (tr.config.patch_size, tr.config.patch_size_t) == (1, 1)
    frames, per_frame = semcache_frames(tr, kwargs)
    by_hand = hidden[:, :c].permute(0, 2, 1, 3, 4).flatten(2)  # patch 1: a frame is its C x H x W latents
    assert torch.equal(frames, by_hand) and per_frame == hidden.shape[3] * hidden.shape[4]


def test_tmm_kept_tokens_match_the_full_path(tiny_spec):
    session = _session(tiny_spec, sampling={**TINY, "frames": 9})  # the tiny VAE's temporal factor is 2: 5 frames
    tr, kwargs = session.transformer, _call_inputs(session)
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
    # the joint key sequence: the video tokens, then the image, ByT5 and Qwen tokens
    n_video = n_frames * per_frame
    text = sum(kwargs[k].shape[1] for k in ("encoder_hidden_states", "encoder_hidden_states_2", "image_embeds"))
    with _mask_keys(n_video + text, 0, dropped), torch.no_grad():
        reference = tr(**kwargs)[0]
    out = run(kept)
    got, want = _frames(session, kwargs, out)[0], _frames(session, kwargs, reference)[0]
    torch.testing.assert_close(got[:, kept], want[:, kept], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got[:, [1, 4]], want[:, [1, 4]], atol=1e-3)
    assert not torch.allclose(got[:, kept], _frames(session, kwargs, plain)[0][:, kept], atol=1e-4)


def test_zero_threshold_without_tmm_never_reuses(tiny_spec):
    session = _session(tiny_spec, {"name": "semcache", "alpha": 0.0, "beta": 0.0, "tmm": False},
                       {"steps": 6, "frames": 17})
    gen = session.generate("a red ball", seed=0, policy=session.spec.policy)
    assert all(c.computed and c.tokens is None for c in gen.calls)
    assert np.array_equal(session.generate("a red ball", seed=0).frames, gen.frames)
