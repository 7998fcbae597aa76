"""FLOP counting with torch's FlopCounterMode: one code path for `run` and `flops`.

Two conventions are always kept apart (see shared EVALUATION.md, "FLOPs"):
- ``total``: every matmul/conv, attention's QK^T and PV included;
- ``no_attn``: the same count without the attention matmuls, which is what the SenCache and
  SemCache papers report (their counters miss fused attention), e.g. 8.32 P for Wan 2.1 1.3B.

On CPU, torch dispatches SDPA to ``aten._scaled_dot_product_flash_attention_for_cpu``, which
FlopCounterMode does not know and counts as 0; we register the standard SDPA formula for it.
On the meta device (full-size models without weights) torch lowers SDPA to its math backend, plain
``bmm`` that would land in ``no_attn``; :func:`count_flops` routes meta SDPA to that same fused CPU op
(it has a meta kernel), so attention is counted as attention on every device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

_aten = torch.ops.aten
_CPU_SDPA = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _register_cpu_sdpa_formula() -> None:
    if _CPU_SDPA is None:
        return
    from torch.utils.flop_counter import flop_registry

    if _CPU_SDPA in flop_registry or _CPU_SDPA.default in flop_registry:  # a newer torch knows it
        return

    @register_flop_formula(_CPU_SDPA)
    def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)


_register_cpu_sdpa_formula()

#: aten ops whose FLOPs are attention's QK^T and PV products (the papers leave these out).
ATTENTION_OPS = tuple(
    str(op)
    for op in (
        _aten._scaled_dot_product_efficient_attention,
        _aten._scaled_dot_product_flash_attention,
        _aten._scaled_dot_product_cudnn_attention,
        _CPU_SDPA,
        getattr(_aten, "_flash_attention_forward", None),
        getattr(_aten, "_efficient_attention_forward", None),
    )
    if op is not None
)


@dataclass
class FlopCount:
    """FLOPs of one counted region, split by module path (as FlopCounterMode names them)."""

    total: int
    attention: int
    by_module: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (total, attention)

    @property
    def no_attn(self) -> int:
        return self.total - self.attention

    def module(self, path: str) -> tuple[int, int]:
        return self.by_module.get(path, (0, 0))


def _split(counts: dict) -> tuple[int, int]:
    total = sum(int(v) for v in counts.values())
    attn = sum(int(v) for k, v in counts.items() if str(k) in ATTENTION_OPS or str(k).split(".default")[0] in ATTENTION_OPS)
    return total, attn


class _FusedSdpaOnMeta(TorchFunctionMode):
    """Send 4-D meta SDPA calls to the fused CPU op, so they count as attention, not as ``bmm``."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention and _CPU_SDPA is not None:
            return _fused_sdpa(*args, **kwargs) if _is_meta_4d(*args, **kwargs) else func(*args, **kwargs)
        return func(*args, **kwargs)


def _is_meta_4d(query, *args, **kwargs) -> bool:
    return query.device.type == "meta" and query.dim() == 4


def _fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    # Same output shape as SDPA; grouped-query K/V heads are fine (the meta kernel and formula take them).
    return _CPU_SDPA(query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]


def count_flops(fn: Callable[[], object]) -> FlopCount:
    """Run ``fn`` once under FlopCounterMode (no grad) and return its FLOPs by module."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter, _FusedSdpaOnMeta():
        fn()
    counts = counter.get_flop_counts()
    total, attn = _split(counts.get("Global", {}))
    by_module = {name: _split(c) for name, c in counts.items() if name != "Global"}
    return FlopCount(total=total, attention=attn, by_module=by_module)


def find_module_path(count: FlopCount, suffix: str) -> str | None:
    """The counter's path of a module attribute (``"<RootClass>.<suffix>"``), if it ran."""
    for path in count.by_module:
        if path.endswith("." + suffix) and path.count(".") == suffix.count(".") + 1:
            return path
    return None


@dataclass
class CallCost:
    """FLOPs of one transformer call, split so a partially computed call can be priced.

    ``outside`` is everything but the block stack (embeddings, output head), ``blocks`` the
    per-block FLOPs. A call that skipped the whole forward costs 0; a residual-reuse call costs
    ``outside``; a computed call ``outside + sum(blocks)``. ``reduced`` holds the per-block FLOPs
    counted for a block stack that computed fewer video tokens (keyed by that count; attention is not
    linear in tokens, so each count is counted, not scaled): a call with ``tokens = (kept, all)``,
    ``kept < all``, is priced with them.
    """

    outside: tuple[int, int]
    blocks: list[tuple[int, int]]
    reduced: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    def price(self, forward_ran: bool, blocks_ran: Iterable[int], tokens=None) -> tuple[int, int]:
        if not forward_ran:
            return (0, 0)
        blocks = self.blocks
        if tokens and tokens[0] < tokens[1]:
            if int(tokens[0]) not in self.reduced:
                raise ValueError(f"no FLOP count of the block stack on {tokens[0]} of {tokens[1]} tokens: the "
                                 f"policy that dropped them must count it (CallCost.reduced)")
            blocks = self.reduced[int(tokens[0])]
        tot, att = self.outside
        for i in blocks_ran:
            tot += blocks[i][0]
            att += blocks[i][1]
        return tot, att

    @property
    def full(self) -> tuple[int, int]:
        return self.price(True, range(len(self.blocks)))

    def to_dict(self) -> dict:
        d = {"outside": list(self.outside), "blocks": [list(b) for b in self.blocks]}
        if self.reduced:
            d["reduced"] = {str(k): [list(b) for b in v] for k, v in sorted(self.reduced.items())}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CallCost:
        reduced = {int(k): [tuple(b) for b in v] for k, v in d.get("reduced", {}).items()}
        return cls(outside=tuple(d["outside"]), blocks=[tuple(b) for b in d["blocks"]], reduced=reduced)


def call_cost(count: FlopCount, transformer_path: str, block_paths: list[str], calls: int) -> CallCost:
    """Per-call cost of a transformer from a count that covered ``calls`` identical calls."""
    t_tot, t_att = count.module(transformer_path)
    blocks = [tuple(v // calls for v in count.module(p)) for p in block_paths]
    outside = (t_tot // calls - sum(b[0] for b in blocks), t_att // calls - sum(b[1] for b in blocks))
    return CallCost(outside=outside, blocks=blocks)
