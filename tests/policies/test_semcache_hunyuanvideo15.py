"""SemCache on HunyuanVideo 1.5 (tiny-hunyuanvideo15): TMM's frames are the noisy latents per post-patch frame, and
with a zero threshold and no TMM it never reuses, bit for bit. TMM's kept tokens against a masked full-sequence
reference: tests/policies/test_semcache.py, with the other families. Before, the family had no SemCache adapter."""

from __future__ import annotations

import numpy as np
import torch

from sencache_bench.models.hunyuanvideo15 import semcache_frames
from sencache_bench.runner import Session
from sencache_bench.spec import resolve
from tests.policies.test_semcache import TINY, _call_inputs

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


def test_zero_threshold_without_tmm_never_reuses(tiny_spec):
    session = _session(tiny_spec, {"name": "semcache", "alpha": 0.0, "beta": 0.0, "tmm": False},
                       {"steps": 6, "frames": 17})
    gen = session.generate("a red ball", seed=0, policy=session.spec.policy)
    assert all(c.computed and c.tokens is None for c in gen.calls)
    assert np.array_equal(session.generate("a red ball", seed=0).frames, gen.frames)
