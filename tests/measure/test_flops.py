"""count_flops counts attention (CPU and meta) by the SDPA formula; CallCost prices partial calls."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from sencache_bench.measure.flops import _CPU_SDPA, CallCost, call_cost, count_flops

B, H, SQ, SK, D = 2, 3, 16, 8, 4
SDPA_FLOPS = 4 * B * H * SQ * SK * D  # QK^T and PV: 2 * (2 * B*H * Sq * Sk * D)


class Attend(torch.nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def _qkv(device: str):
    return (torch.randn(B, H, SQ, D, device=device), torch.randn(B, H, SK, D, device=device),
            torch.randn(B, H, SK, D, device=device))


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_attention_is_counted_by_the_sdpa_formula(device):
    q, k, v = _qkv(device)
    count = count_flops(lambda: Attend()(q, k, v))
    assert count.attention == count.total == SDPA_FLOPS
    assert count.no_attn == 0
    assert count.module("Attend") == (SDPA_FLOPS, SDPA_FLOPS)


def test_without_our_formula_the_cpu_kernel_counts_zero(monkeypatch):
    """torch's own counter does not know the CPU fused kernel: our registration is what counts it."""
    q, k, v = _qkv("cpu")
    monkeypatch.delitem(flop_registry, _CPU_SDPA)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        F.scaled_dot_product_attention(q, k, v)
    assert counter.get_total_flops() == 0


def test_on_meta_plain_flop_counter_files_attention_under_bmm():
    """The meta device lowers SDPA to matmuls: without our routing attention would land in no_attn."""
    q, k, v = _qkv("meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        F.scaled_dot_product_attention(q, k, v)
    ops = {str(op) for op in counter.get_flop_counts()["Global"]}
    assert ops == {"aten.bmm"} and counter.get_total_flops() == SDPA_FLOPS


def test_grouped_query_attention_counts_query_heads():
    q = torch.empty(1, 8, SQ, D, device="meta")
    kv = torch.empty(1, 2, SK, D, device="meta")
    count = count_flops(lambda: F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True))
    assert count.attention == 4 * 8 * SQ * SK * D


class Tiny(torch.nn.Module):
    """embed (4 -> 8), two blocks (8 -> 8), head (8 -> 2): Linear costs 2 * rows * in * out."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(4, 8)
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)])
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


ROWS = 3
OUTSIDE = 2 * ROWS * (4 * 8 + 8 * 2)
BLOCK = 2 * ROWS * 8 * 8


def test_call_cost_splits_a_call_into_outside_and_blocks():
    model, x = Tiny(), torch.randn(ROWS, 4)
    count = count_flops(lambda: [model(x) for _ in range(2)])
    assert count.total == 2 * (OUTSIDE + 2 * BLOCK)
    cost = call_cost(count, "Tiny", ["Tiny.blocks.0", "Tiny.blocks.1"], calls=2)
    assert cost.outside == (OUTSIDE, 0)
    assert cost.blocks == [(BLOCK, 0), (BLOCK, 0)]
    assert cost.full == (OUTSIDE + 2 * BLOCK, 0)


def test_price_of_skipped_reused_and_partial_calls():
    cost = CallCost(outside=(OUTSIDE, 0), blocks=[(BLOCK, 10), (BLOCK, 20)])
    assert cost.price(False, []) == (0, 0)  # the whole forward was skipped
    assert cost.price(True, []) == (OUTSIDE, 0)  # residual reuse: embeddings and head only
    assert cost.price(True, [1]) == (OUTSIDE + BLOCK, 20)
    assert CallCost.from_dict(cost.to_dict()) == cost
