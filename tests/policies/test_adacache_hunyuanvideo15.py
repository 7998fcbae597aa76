"""AdaCache on HunyuanVideo 1.5's dual-stream blocks (tiny-hunyuanvideo15): each stream splits where its own
joint-attention residual has been added (norm2 takes the video tokens, norm2_context the text's). The schedule
follows the c values worked out from the measured block's video residual recorded by plain torch hooks; a reused call
moves both streams of every block by what the last computed call moved them; the conformance kit passes. Before, the
family was refused ("the two residual streams are not split")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sencache_bench.testing import Kit, assert_conforms
from tests.policies.test_adacache import assert_priced_like_a_direct_count

BOOK = {0.5: 3, 1.0: 2, 100.0: 1}
STEPS = 8


@pytest.fixture(scope="module")
def kit():
    k = Kit("adacache", model="tiny-hunyuanvideo15", steps=STEPS, params={"codebook": BOOK})
    yield k
    k.close()


class _Streams:
    """Per block, by plain hooks: both streams entering it, entering norm2 / norm2_context, and leaving it."""

    def __init__(self, blocks):
        self.calls = [[] for _ in blocks]  # per block: [(inputs, mids, outputs)] in call order, mids None if reused
        self.handles = []
        for i, block in enumerate(blocks):
            self.handles += [
                block.register_forward_pre_hook(lambda m, a, kw, i=i: self.calls[i].append(
                    [(kw.get("hidden_states", a[0] if a else None), kw.get("encoder_hidden_states",
                                                                           a[1] if len(a) > 1 else None)),
                     [None, None], None]), with_kwargs=True),
                block.norm2.register_forward_pre_hook(lambda m, a, i=i: self.calls[i][-1][1].__setitem__(0, a[0])),
                block.norm2_context.register_forward_pre_hook(
                    lambda m, a, i=i: self.calls[i][-1][1].__setitem__(1, a[0])),
                block.register_forward_hook(lambda m, a, out, i=i: self.calls[i][-1].__setitem__(2, out))]

    def close(self):
        for h in self.handles:
            h.remove()


def test_dual_stream_reuse_follows_the_hand_schedule(kit):
    prompt = next(iter(kit.reference))
    blocks = kit.session.blocks
    measured = 13 * len(blocks) // 28  # the adapter's block: 0 of 2
    probe = _Streams(blocks)
    try:
        config = kit.config()
        gen = kit.generate(prompt, config)
    finally:
        probe.close()
    cond = [c for c in gen.calls if c.branch == "cond"]
    computed = [c.step + 1 for c in cond if c.computed]
    # the cond branch is every other call (cond, uncond per step)
    calls = [[entry for j, entry in enumerate(per_block) if j % 2 == 0] for per_block in probe.calls]
    ran = [entry for entry in calls[measured] if entry[1][0] is not None]
    assert len(ran) == len(computed)
    # the schedule by hand from the measured block's video attention residual r = (norm2 input - block input)
    book = sorted(BOOK.items())
    k, last, prev, expected, residuals = 1, None, None, [], iter(e[1][0] - e[0][0] for e in ran)
    for s in range(1, STEPS + 1):
        if s in (1, STEPS - 1, STEPS) or s >= last + k:
            expected.append(s)
            r = next(residuals).float()
            if prev is not None:
                c = float((prev - r).abs().sum() / prev.abs().sum()) / k
                k = next((v for t, v in book if c < t), book[-1][1])
            prev, last = r, s
    assert computed == expected and len(computed) < STEPS
    assert not np.array_equal(gen.frames, kit.reference[prompt].frames)
    # a reused call: no norm2 ran, and each block moves each stream by what it moved it at the last computed call
    for per_block in calls:
        moved = None
        for s, (inputs, mids, outputs) in enumerate(per_block, start=1):
            if s in computed:
                assert mids[0] is not None and mids[1] is not None
                moved = [o - x for o, x in zip(outputs, inputs)]
            else:
                assert mids == [None, None]
                for o, x, d in zip(outputs, inputs, moved):
                    torch.testing.assert_close(o - x, d, rtol=1e-4, atol=1e-5)


def test_flops_priced_from_the_trace_match_a_direct_count(kit):
    assert_priced_like_a_direct_count(kit)


def test_conformance_kit(tmp_path):
    report = assert_conforms("adacache", model="tiny-hunyuanvideo15", steps=STEPS, workdir=tmp_path,
                             params={"codebook": BOOK, "moreg": True})
    assert all(c.passed is not False for c in report.checks), [c for c in report.checks if c.passed is False]
