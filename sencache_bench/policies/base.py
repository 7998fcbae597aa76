"""The cache-policy framework: a policy decides COMPUTE or REUSE per transformer call.

Built on diffusers' hook machinery (``diffusers.hooks``): a policy becomes a stateful ``ModelHook``
on the transformer whose state is kept per ``cache_context`` (one per CFG branch: "cond",
"uncond" or "cond_uncond"), as diffusers' own caches do. Two reuse modes (shared ALGORITHMS.md,
"Common shape of every step-level policy"):

- ``output``: a reused call returns the cached transformer output; nothing runs (SenCache's text);
- ``residual``: embeddings and output head run with the current t, the block stack is replaced by
  ``hidden + (blocks_out - blocks_in)`` cached at the last computed call (TeaCache/MagCache style).

A policy only implements ``new_state`` and ``decide`` (and optionally ``after_compute``); counting
computed calls and the decision trace is the :mod:`sencache_bench.measure.calls` recorder's job, so
it works for diffusers' built-in caches too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks._helpers import TransformerBlockRegistry
from diffusers.hooks.hooks import BaseState, StateManager
from pydantic import BaseModel, ConfigDict, PrivateAttr

from ..errors import PolicyError

ReuseMode = Literal["output", "residual"]
POLICY_HOOK = "sencache_bench_policy"
BLOCK_HOOK = "sencache_bench_policy_block"


@dataclass(frozen=True)
class Knob:
    """A policy's budget knob for ``sencache-bench match``: the field that trades compute for fidelity.

    ``more_compute``: which way the value moves to compute more calls ("lower": a threshold such as
    SenCache's eps_main or TeaCache's thresh; "higher": a budget fraction). ``low``/``high``: the search
    range; ``integer``: the knob takes integers (static ``every``). ``monotone``: NFE moves one way with the
    value (bisection is valid); otherwise ``match`` scans the range and says so.
    """

    field: str
    more_compute: Literal["lower", "higher"]
    low: float
    high: float
    integer: bool = False
    monotone: bool = True


class PolicyConfig(BaseModel):
    """Base of every policy's typed config: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: the budget knob ``match`` searches (None: the policy has no knob and ``match`` refuses it)
    knob: ClassVar[Knob | None] = None
    _inputs: dict = PrivateAttr(default_factory=dict)

    def inputs(self) -> dict[str, dict]:
        """What the last prepare/attach resolved outside the spec's fields: a profile calibrated on the fly,
        a coefficients or ratios file (path and sha256), a published table. Records keep it, so a result
        names the exact inputs even when the spec left them to defaults."""
        return {k: dict(v) for k, v in self._inputs.items()}

    def _note_input(self, name: str, source: str | Path) -> None:
        """Remember one resolved input: a file (path and sha256) or a named published source."""
        from ..results.store import sha256_file

        path = Path(source)
        self._inputs[name] = ({"path": str(path), "sha256": sha256_file(path)} if path.is_file()
                              else {"source": str(source)})

    def make_policy(self) -> CachePolicy | None:
        raise NotImplementedError

    def priced_by_replay(self) -> bool:
        """True when the policy skips work inside the blocks, where the call trace cannot see it: the run's
        FLOPs then come from an untimed counted replay of the whole cached generation."""
        return False

    def attach(self, transformer: torch.nn.Module, blocks: list[torch.nn.Module], recorder=None) -> None:
        """Install the policy's hooks (diffusers' built-ins override this with ``enable_cache``)."""
        policy = self.make_policy()
        if policy is not None:
            apply_policy(transformer, blocks, policy, recorder, label=getattr(self, "name", None))

    def detach(self, transformer: torch.nn.Module) -> None:
        remove_policy(transformer)

    def setting(self) -> str:
        """A short, stable label of the parameters, used to group results in tables."""
        parts = [f"{k}={v}" for k, v in self.model_dump(exclude_none=True).items() if k != "name"]
        return ",".join(parts) if parts else "default"


@dataclass
class CallInfo:
    """What a policy may look at when it decides: one transformer call of one branch."""

    branch: str
    index: int  # calls so far in this branch = denoising step index
    timestep: float  # model units (0..1000)
    latent: torch.Tensor  # x_t of one sample (CFG-batched calls repeat it)
    num_steps: int | None = None
    block_args: tuple = ()  # the head block's inputs, for policies that decide in the block
    block_kwargs: dict = field(default_factory=dict)


@dataclass
class Decision:
    compute: bool
    score: float | None = None
    threshold: float | None = None


class CachePolicy(ABC):
    """A decision rule. Subclasses hold their config and keep per-branch state in ``new_state()``."""

    name: ClassVar[str]
    reuse: ReuseMode = "residual"
    decide_in_block: bool = False  # decide at the head block (sees its inputs) instead of before the forward

    def new_state(self) -> Any:
        return None

    @abstractmethod
    def decide(self, state: Any, call: CallInfo) -> Decision: ...

    def after_compute(self, state: Any, call: CallInfo, output: torch.Tensor) -> None:
        """Called after a computed call with the transformer's output sample."""


@dataclass
class BranchState(BaseState):
    """Per-cache_context state shared by the transformer hook and the block hooks."""

    policy_state: Any = None
    calls: int = 0
    skip_blocks: bool = False
    cached_output: Any = None
    stack_inputs: tuple = ()
    residuals: tuple = ()
    call: CallInfo | None = None
    decision: Decision | None = None
    extra: dict = field(default_factory=dict)

    def reset(self, *args, **kwargs) -> None:
        self.__init__()


def first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return output[0]
    return output.sample


def timestep_of(kwargs: dict) -> float:
    """The call's timestep in model units; every supported pipeline passes it by keyword."""
    timestep = kwargs["timestep"]
    return float(timestep.flatten()[0]) if torch.is_tensor(timestep) else float(timestep)


class PolicyHook(ModelHook):
    """Transformer-level hook: asks the policy, then runs, skips, or lets the block hooks reuse.

    A policy with ``decide_in_block = True`` (residual reuse only) decides in the head block's
    hook instead, where the block's inputs (modulated hidden states, temb) are available: TeaCache's
    indicator needs them.
    """

    _is_stateful = True

    def __init__(self, policy: CachePolicy, recorder=None, label: str | None = None):
        super().__init__()
        self.policy = policy
        self.recorder = recorder
        self.label = label or getattr(policy, "name", None) or type(policy).__name__
        self.state_manager = StateManager(BranchState)

    def _cached(self, state: BranchState) -> bool:
        """Whether this branch holds something to reuse: the last output, or the block stack's residual."""
        return state.cached_output is not None if self.policy.reuse == "output" else bool(state.residuals)

    def mark(self):
        """A start mark for the decision overhead when the recorder times it (measure/calls.py), else None;
        close it with ``self.recorder.note_span(mark, "decide_s" | "hook_s")``."""
        mark = getattr(self.recorder, "mark", None)
        return mark() if mark is not None else None

    def decide(self, state: BranchState, call: CallInfo) -> Decision:
        mark = self.mark()
        decision = self.policy.decide(state.policy_state, call)
        if mark is not None:
            self.recorder.note_span(mark, "decide_s")
        if not decision.compute and not self._cached(state):
            # otherwise output reuse returns None and residual reuse adds nothing: a TypeError far from the cause
            raise PolicyError(f"policy {self.label!r} reused call {call.index} of branch {call.branch!r} before any "
                              f"call was computed: a policy must compute the first call of each branch")
        state.decision = decision
        state.skip_blocks = not decision.compute
        if self.recorder is not None:
            self.recorder.note_decision(decision)
        return decision

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state: BranchState = self.state_manager.get_state()
        context = self.state_manager.context
        if state.calls == 0:
            state.policy_state = self.policy.new_state()
        call = CallInfo(branch=context.name, index=state.calls, timestep=timestep_of(kwargs),
                        latent=kwargs["hidden_states"][-1:].detach(), num_steps=context.num_inference_steps)
        state.call, state.decision = call, None
        if not self.policy.decide_in_block:
            decision = self.decide(state, call)
            if not decision.compute and self.policy.reuse == "output":
                state.calls += 1
                return state.cached_output
        output = self.fn_ref.original_forward(*args, **kwargs)
        state.skip_blocks = False
        state.calls += 1
        if state.decision is not None and state.decision.compute:
            if self.policy.reuse == "output":
                state.cached_output = output
            mark = self.mark()
            self.policy.after_compute(state.policy_state, call, first_tensor(output))
            if mark is not None:
                self.recorder.note_span(mark, "hook_s")
        return output

    def reset_state(self, module):
        self.state_manager.reset()
        return module


class BlockHook(ModelHook):
    """Residual reuse over the block stack: the head block adds the cached residual, the others pass through."""

    _is_stateful = True

    def __init__(self, policy_hook: PolicyHook, is_head: bool, is_tail: bool):
        super().__init__()
        self.policy_hook = policy_hook
        self.state_manager = policy_hook.state_manager
        self.is_head, self.is_tail = is_head, is_tail
        self.meta = None

    def initialize_hook(self, module):
        self.meta = TransformerBlockRegistry.get(type(module))
        return module

    def _inputs(self, args, kwargs) -> tuple:
        meta = self.meta
        hidden = meta._get_parameter_from_args_kwargs(meta.hidden_states_argument_name, args, kwargs)
        if meta.return_encoder_hidden_states_index is None:
            return (hidden,)
        enc = meta._get_parameter_from_args_kwargs(meta.encoder_hidden_states_argument_name, args, kwargs)
        return hidden, enc

    def _pack(self, values: tuple):
        """Shape (hidden[, encoder]) like the block's own return value."""
        meta = self.meta
        if meta.return_encoder_hidden_states_index is None:
            return values[0]
        out = [None, None]
        out[meta.return_hidden_states_index], out[meta.return_encoder_hidden_states_index] = values
        return tuple(out)

    def _unpack(self, output) -> tuple:
        meta = self.meta
        if meta.return_encoder_hidden_states_index is None:
            return (output,)
        return output[meta.return_hidden_states_index], output[meta.return_encoder_hidden_states_index]

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state: BranchState = self.state_manager.get_state()
        if self.is_head and state.decision is None:
            state.call.block_args, state.call.block_kwargs = args, kwargs
            self.policy_hook.decide(state, state.call)
        inputs = self._inputs(args, kwargs) if self.is_head or state.skip_blocks else ()  # a computed middle
        if state.skip_blocks:  # block needs none: the argument lookup is paid per block and call (issue 27)
            if self.is_head:
                inputs = tuple(x + r for x, r in zip(inputs, state.residuals))
            return self._pack(inputs)
        if self.is_head:
            state.stack_inputs = inputs
        output = self.fn_ref.original_forward(*args, **kwargs)
        if self.is_tail:
            outs = self._unpack(output)
            state.residuals = tuple(o - i for o, i in zip(outs, state.stack_inputs))
            state.stack_inputs = ()
        return output

    def reset_state(self, module):
        return module


def apply_policy(transformer: torch.nn.Module, blocks: list[torch.nn.Module], policy: CachePolicy,
                 recorder=None, label: str | None = None) -> PolicyHook:
    """Attach ``policy`` to ``transformer`` (and, for residual reuse, to its block stack). ``label``: the name
    errors give the policy (its spec name; default the rule's ``name``)."""
    hook = PolicyHook(policy, recorder, label)
    if policy.reuse == "residual":
        for i, block in enumerate(blocks):
            block_hook = BlockHook(hook, is_head=i == 0, is_tail=i == len(blocks) - 1)
            HookRegistry.check_if_exists_or_initialize(block).register_hook(block_hook, BLOCK_HOOK)
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(hook, POLICY_HOOK)
    HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()
    return hook


def remove_policy(transformer: torch.nn.Module) -> None:
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.remove_hook(POLICY_HOOK, recurse=False)
    registry.remove_hook(BLOCK_HOOK, recurse=True)
    registry.invalidate_child_registries_cache()
