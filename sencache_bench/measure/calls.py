"""Counting transformer calls, computed calls (NFE) and timing, for any cache, ours or diffusers'.

diffusers' caches report nothing about what they skipped, so the harness detects it itself:
marker hooks registered *first* (innermost) on the transformer and on every block fire only when
the real ``forward`` runs, and an outer hook registered *last* sees every call the pipeline makes
and its ``cache_context`` (CFG branch). A call is *computed* when every block of the stack ran (a cache that
runs only some blocks, e.g. First Block Cache or cache-dit's DBCache with its last Bn blocks, makes a partial
call); which blocks ran (and whether the forward ran at all) is what prices the call in FLOPs.

Time, per call: on CPU ``time.perf_counter`` around the call, as it returns. On CUDA nothing in the timed region
synchronises per call (that would remove the CPU/GPU overlap a real run has): each interval is a pair of CUDA
events recorded on the current stream, and :meth:`CallRecorder.resolve` synchronises once, after the timed
region, to read them all (docs/timing.md). The same clock times the work a policy does to decide
(``decide_s``: ``PolicyHook.decide``) and in its own hooks (``hook_s``), per call: the decision overhead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from ..policies.base import Decision, timestep_of
from ..results.margins import relative_margin

MARKER_HOOK = "sencache_bench_ran"
OUTER_HOOK = "sencache_bench_calls"


@dataclass
class CallRecord:
    branch: str
    step: int
    timestep: float
    forward_ran: bool = False
    blocks_ran: list[int] = field(default_factory=list)
    computed: bool = False
    score: float | None = None
    threshold: float | None = None
    seconds: float = 0.0
    tokens: list[int] | None = None  # [computed, all] video tokens when a policy ran the blocks on fewer tokens
    expert: str | None = None  # the pipeline component that ran the call, on a model with several (Wan 2.2)
    detail: dict | None = None  # the decision's other measured values (Decision.detail)
    decide_s: float | None = None  # time the policy spent deciding (None: no policy of ours decided this call)
    hook_s: float | None = None  # time in the policy's own hooks besides deciding (gathers, norms, bookkeeping)

    @property
    def token_fraction(self) -> float:
        """Share of the video tokens the block stack computed (1 unless a policy dropped tokens)."""
        return self.tokens[0] / self.tokens[1] if self.tokens else 1.0

    def to_json(self) -> dict:
        d = {"branch": self.branch, "step": self.step, "t": round(self.timestep, 4), "computed": self.computed,
             "blocks": len(self.blocks_ran), "forward": self.forward_ran}
        if self.score is not None:
            d["score"] = self.score
        if self.threshold is not None:
            d["threshold"] = self.threshold
        margin = relative_margin(self.score, self.threshold)
        if margin is not None:  # |score - threshold| / |threshold|; left out at threshold 0 (results/margins.py)
            d["margin"] = margin
        if self.tokens is not None:
            d["tokens"] = list(self.tokens)
        if self.expert is not None:
            d["expert"] = self.expert
        if self.detail:
            d["detail"] = dict(self.detail)
        d["s"] = round(self.seconds, 7)
        for key in ("decide_s", "hook_s"):
            if getattr(self, key) is not None:
                d[key] = round(getattr(self, key), 7)
        return d


class _Ran(ModelHook):
    """Innermost marker: runs only when the module's real forward runs."""

    def __init__(self, recorder: CallRecorder, block: int | None):
        super().__init__()
        self.recorder, self.block = recorder, block

    def pre_forward(self, module, *args, **kwargs):
        self.recorder._ran(self.block)
        return args, kwargs


class _Context(BaseState):
    def reset(self, *args, **kwargs):
        pass


class _Outer(ModelHook):
    """Outermost hook: one CallRecord per call, with its branch (cache_context) and time. The step is the call's
    index in its branch over the whole generation, counted by the recorder (so across experts)."""

    _is_stateful = True

    def __init__(self, recorder: CallRecorder, expert: str | None = None, blocks: int = 0):
        super().__init__()
        self.recorder, self.expert, self.blocks = recorder, expert, blocks
        self.state_manager = StateManager(_Context)  # only to read the active cache_context

    def new_forward(self, module, *args, **kwargs):
        rec = self.recorder
        try:
            branch = self.state_manager.context.name
        except ValueError:  # called outside cache_context (e.g. a direct call): its own branch
            branch = None
        step = rec.branch_steps.get(branch, 0) if branch is not None else 0
        call = CallRecord(branch=branch or "direct", step=step, timestep=timestep_of(kwargs), expert=self.expert)
        rec.current = call
        start = rec.mark()
        if rec.first_call_start is None:
            rec.first_call_start, rec._first_mark = time.perf_counter(), start
        output = self.fn_ref.original_forward(*args, **kwargs)
        end = rec.mark()
        rec.last_call_end, rec._last_mark = time.perf_counter(), end
        rec._interval(call, "seconds", start, end)
        call.computed = len(set(call.blocks_ran)) == self.blocks
        rec.calls.append(call)
        rec.current = None
        if branch is not None:
            rec.branch_steps[branch] = step + 1
        return output

    def reset_state(self, module):
        self.state_manager.reset()
        return module


class CallRecorder:
    """Attach with :meth:`attach_markers` before any cache, :meth:`attach_outer` after it.

    A pipeline with several transformers (Wan 2.2's two experts) records all of them in one trace:
    :meth:`add_expert` before attaching; each call then names its expert."""

    def __init__(self, transformer: torch.nn.Module, blocks: list[torch.nn.Module]):
        self.transformer = transformer
        self.blocks = blocks
        self.last_block = len(blocks) - 1
        self.cuda = next(transformer.parameters()).device.type == "cuda"
        self.calls: list[CallRecord] = []
        self.current: CallRecord | None = None
        self.first_call_start: float | None = None
        self.last_call_end: float | None = None
        self.branch_steps: dict[str, int] = {}  # calls so far per cache_context branch, all experts together
        self.experts: list[tuple[str | None, torch.nn.Module, list[torch.nn.Module]]] = [(None, transformer, blocks)]
        self._first_mark = self._last_mark = None  # the first call's start and the last call's end (a mark)
        self._pending: list[tuple[CallRecord, str, torch.cuda.Event, torch.cuda.Event]] = []  # CUDA: unread
        #: ``latents(transformer, hidden_states)``: the sampler's latents in a call's input (the family adapter's
        #: ``latents``; policies read them, e.g. SenCache's drift and EasyCache's y - x); None: the whole input
        self.latents = None

    def add_expert(self, name: str, transformer: torch.nn.Module, blocks: list[torch.nn.Module],
                   first: str = "transformer") -> None:
        """Record ``transformer`` too, as expert ``name``; the first transformer is then named ``first``."""
        self.experts[0] = (self.experts[0][0] or first, self.transformer, self.blocks)
        self.experts.append((name, transformer, blocks))

    def attach_markers(self) -> None:
        for _, transformer, blocks in self.experts:
            HookRegistry.check_if_exists_or_initialize(transformer).register_hook(_Ran(self, None), MARKER_HOOK)
            for i, block in enumerate(blocks):
                HookRegistry.check_if_exists_or_initialize(block).register_hook(_Ran(self, i), MARKER_HOOK)

    def attach_outer(self) -> None:
        for expert, transformer, blocks in self.experts:
            registry = HookRegistry.check_if_exists_or_initialize(transformer)
            registry.register_hook(_Outer(self, expert, len(blocks)), OUTER_HOOK)
            registry.invalidate_child_registries_cache()

    def detach_outer(self) -> None:
        for _, transformer, _ in self.experts:
            registry = HookRegistry.check_if_exists_or_initialize(transformer)
            registry.remove_hook(OUTER_HOOK, recurse=False)
            registry.invalidate_child_registries_cache()

    def start(self) -> None:
        """Forget earlier calls (one recording per generation)."""
        self.calls, self.current = [], None
        self.first_call_start = self.last_call_end = None
        self.branch_steps = {}
        self._first_mark = self._last_mark = None
        self._pending = []  # a fresh _Outer per attach_outer: no state of its own to reset

    def note_decision(self, decision: Decision) -> None:
        if self.current is not None:
            self.current.score, self.current.threshold = decision.score, decision.threshold
            self.current.detail = decision.detail

    def note_tokens(self, computed: int, total: int) -> None:
        """A policy ran the block stack on ``computed`` of the call's ``total`` video tokens."""
        if self.current is not None:
            self.current.tokens = [int(computed), int(total)]

    def _ran(self, block: int | None) -> None:
        if self.current is None:
            return
        if block is None:
            self.current.forward_ran = True
        else:
            self.current.blocks_ran.append(block)

    # -- the clock ---------------------------------------------------------------------------------
    def mark(self):
        """A point in time: ``perf_counter`` on CPU; on CUDA an event recorded on the current stream (no sync)."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _interval(self, call: CallRecord, key: str, start, end) -> None:
        """Add ``end - start`` to ``call.<key>`` (on CUDA once :meth:`resolve` has read the events)."""
        if self.cuda:
            self._pending.append((call, key, start, end))
        else:
            setattr(call, key, (getattr(call, key) or 0.0) + (end - start))

    def note_span(self, start, key: str) -> None:
        """The current call spent ``now - start`` (``start`` from :meth:`mark`) in ``key``: ``decide_s`` or
        ``hook_s``. Outside a recorded call (a direct call, a counted replay) it is dropped."""
        if self.current is not None:
            self._interval(self.current, key, start, self.mark())

    def resolve(self, origin=None, origin_s: float | None = None) -> None:
        """CUDA: synchronise once and turn the recorded events into seconds (a no-op on CPU, where every interval
        is already in seconds). With ``origin`` (an event recorded at wall time ``origin_s``, after a
        synchronisation) the first call's start and the last call's end are placed on the wall clock from the
        events too, so the phase split is the GPU's, not the time the CPU enqueued the work."""
        if not self.cuda:
            return
        torch.cuda.synchronize()
        for call, key, start, end in self._pending:
            setattr(call, key, (getattr(call, key) or 0.0) + start.elapsed_time(end) / 1000)
        self._pending = []
        if origin is not None and origin_s is not None and self._first_mark is not None:
            self.first_call_start = origin_s + origin.elapsed_time(self._first_mark) / 1000
            self.last_call_end = origin_s + origin.elapsed_time(self._last_mark) / 1000

    def nfe(self) -> dict[str, int]:
        """Computed calls per branch."""
        out: dict[str, int] = {}
        for c in self.calls:
            out[c.branch] = out.get(c.branch, 0) + int(c.computed)
        return out

    def calls_per_branch(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.calls:
            out[c.branch] = out.get(c.branch, 0) + 1
        return out
