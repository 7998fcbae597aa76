"""The cache-policy framework: a policy decides COMPUTE or REUSE per transformer call.

Built on diffusers' hook machinery (``diffusers.hooks``): a policy becomes a stateful ``ModelHook``
on the transformer whose state is kept per ``cache_context`` (one per CFG branch: "cond",
"uncond" or "cond_uncond"), as diffusers' own caches do. Two reuse modes (shared ALGORITHMS.md,
"Common shape of every step-level policy"):

- ``output``: a reused call returns the cached transformer output; nothing runs (SenCache's text);
- ``residual``: embeddings and output head run with the current t, the block stack is replaced by
  ``hidden + (blocks_out - blocks_in)`` cached at the last computed call (TeaCache/MagCache style);
- ``transform``: a reused call returns the current input plus the whole transformer's transformation
  vector ``y - x`` of the branch's last computed call; nothing runs (EasyCache, arXiv 2507.02860 Eq. 8).

A policy may take its decision on one branch and apply it to the others at the same step
(``CachePolicy.decide_on``, see :meth:`PolicyHook.leader_decision`).

Two additions for policies that look inside the stack (DiCache, DPCache; ``docs/writing-a-policy.md``):

- a *probe*: ``probe_blocks = n`` runs the first n blocks at every call and decides after them, with the
  stack's input and the probe's output in ``CallInfo.probe_input`` / ``probe_output``; a reused call then
  skips the remaining blocks (the probe's FLOPs show in the call trace: its blocks ran);
- reuse by *extrapolation*: ``extrapolate = "residual"`` (or ``"feature"``) keeps the stack residuals (or
  the stack outputs) of the last two computed calls, and a reuse ``Decision(coefficient=c)`` replaces the
  stack by ``prev + c * (last - prev)`` (:func:`extrapolate`; added to the call's stack input for
  ``"residual"``, returned as the stack output for ``"feature"``).

A policy only implements ``new_state`` and ``decide`` (and optionally ``after_compute``); counting
computed calls and the decision trace is the :mod:`sencache_bench.measure.calls` recorder's job, so
it works for diffusers' built-in caches too.

The pieces live in their own modules, re-exported here: :mod:`.config` (the typed config and its knob),
:mod:`.decision` (what a rule sees and answers), :mod:`.blocks` (the block-stack hooks).
"""

from __future__ import annotations

import inspect
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from ..errors import BenchError, PolicyError
from .blocks import BLOCK_HOOK, BlockHook, SpanEndHook
from .config import Knob, PolicyConfig
from .decision import CachePolicy, CallInfo, Decision, Extrapolate, ReuseMode, call_position, extrapolate

__all__ = ["BLOCK_HOOK", "POLICY_HOOK", "BlockHook", "BranchState", "CachePolicy", "CallInfo", "Decision",
           "Extrapolate", "Knob", "PolicyConfig", "PolicyHook", "ReuseMode", "SpanEndHook", "apply_policy",
           "call_position", "extrapolate", "first_tensor", "remove_policy", "timestep_of", "with_sample"]

POLICY_HOOK = "sencache_bench_policy"
#: set while one video runs across ranks (:func:`sencache_bench.parallel.synchronised`): ``(policy, call, decision)
#: -> decision`` makes every rank of the video take the same decision (a vote) and checks that they do
decision_sync = None


@dataclass
class BranchState(BaseState):
    """Per-cache_context state shared by the transformer hook and the block hooks."""

    policy_state: Any = None
    calls: int = 0
    skip_blocks: bool = False
    cached_output: Any = None
    stack_inputs: tuple = ()
    residuals: tuple = ()
    transform: Any = None  # y - x of the last computed call (``transform`` reuse)
    call: CallInfo | None = None
    decision: Decision | None = None
    kept: list = field(default_factory=list)  # extrapolation: the last two computed calls' values, oldest first
    extra: dict = field(default_factory=dict)

    def reset(self, *args, **kwargs) -> None:
        self.__init__()


def first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return output[0]
    return output.sample


def with_sample(output: Any, sample: torch.Tensor) -> Any:
    """``output`` (a tensor, a tuple, or a diffusers output with ``.sample``) with its first tensor replaced."""
    if isinstance(output, torch.Tensor):
        return sample
    if isinstance(output, (tuple, list)):
        return type(output)([sample, *output[1:]])
    return replace(output, sample=sample)


def timestep_of(kwargs: dict) -> float:
    """The call's timestep in model units; every supported pipeline passes it by keyword. Per-token timesteps
    (Wan 2.2 TI2V image-to-video: the conditioning frame's tokens take t = 0) give the noisy tokens' one, the max."""
    timestep = kwargs["timestep"]
    return float(timestep.max()) if torch.is_tensor(timestep) else float(timestep)


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
        # the sampler's latents inside the transformer's input (the family adapter's ``latents``: image-to-video
        # inputs append condition channels after them); the whole input where the family gives none
        self.latents = getattr(recorder, "latents", None) or (lambda transformer, hidden_states: hidden_states)

    def _cached(self, state: BranchState) -> bool:
        """Whether this branch holds something to reuse: the last output, the transformation vector, or the block
        stack's residual."""
        if self.policy.reuse == "transform":
            return state.transform is not None
        return state.cached_output is not None if self.policy.reuse == "output" else bool(state.residuals)

    def _own(self, method: str, call: CallInfo, *args):
        """Call the policy's ``method``: an exception from the policy's code becomes one PolicyError line naming
        the policy, the call and the file:line where it raised, not a pipeline-deep traceback (kept as the cause,
        shown with SENCACHE_BENCH_DEBUG=1)."""
        try:
            return getattr(self.policy, method)(*args)
        except BenchError:  # already one line for the user (a missing calibration file, a contract breach)
            raise
        except Exception as err:  # noqa: BLE001 - a policy is foreign code: its failure is reported, not re-thrown
            first = (str(err).splitlines() or [""])[0]
            raise PolicyError(f"policy {self.label!r} raised {type(err).__name__} in {method}() at step {call.index} "
                              f"of branch {call.branch!r} ({_raised_at(err, type(self.policy))})"
                              + (f": {first}" if first else "")) from err

    def leader_decision(self, call: CallInfo) -> Decision | None:
        """The decision of ``policy.decide_on``'s call at this step, for a call of another branch; None when the
        call decides itself: it is the leader, the policy shares nothing, or the run has no leader branch (batched
        CFG runs one ``cond_uncond`` call per step: one decision on the batch). A follower whose call comes before
        the leader's at a step (an uncond-first pipeline) is refused: the decision it should follow is not taken."""
        leader = self.policy.decide_on
        if leader is None or call.branch == leader:
            return None
        lead = self.state_manager._state_cache.get(leader)
        if lead is None:
            return None
        index, decision = lead.extra.get("decided", (None, None))
        if index != call.index:
            raise PolicyError(f"policy {self.label!r} decides on branch {leader!r} and applies it to {call.branch!r}, "
                              f"but call {call.index} of {call.branch!r} came before {leader!r}'s call of that step: "
                              f"this pipeline's call order cannot share the decision")
        return decision

    def mark(self):
        """A start mark for the decision overhead when the recorder times it (measure/calls.py), else None;
        close it with ``self.recorder.note_span(mark, "decide_s" | "hook_s")``."""
        mark = getattr(self.recorder, "mark", None)
        return mark() if mark is not None else None

    def decide(self, state: BranchState, call: CallInfo) -> Decision:
        lead = self.leader_decision(call)
        if lead is not None and not lead.compute and not self._cached(state):
            lead = Decision(True, lead.score, lead.threshold)  # nothing cached on this branch yet: it computes
        mark = self.mark()
        decision = lead if lead is not None else self._own("decide", call, state.policy_state, call)
        if decision_sync is not None:  # context parallelism: one decision for every rank of the video
            decision = decision_sync(self.policy, call, decision)
        if mark is not None:
            self.recorder.note_span(mark, "decide_s")
        if not decision.compute and not self._cached(state) and state.calls == 0 and call.index > 0:
            # the first call of this branch on this transformer, after an expert switch (Wan 2.2): nothing the
            # other expert cached is reused, so it computes whatever the rule said, and the rule's state is
            # left as that compute leaves it (an accumulator reset), as a fresh rule on this expert alone
            decision = Decision(compute=True, score=decision.score, threshold=decision.threshold)
            state.policy_state = self._own("restart", call, state.policy_state, call)
        if call.branch == self.policy.decide_on:
            state.extra["decided"] = (call.index, decision)
        if not decision.compute and not self._cached(state):
            # otherwise output reuse returns None and residual reuse adds nothing: a TypeError far from the cause
            raise PolicyError(f"policy {self.label!r} reused call {call.index} of branch {call.branch!r} before any "
                              f"call was computed: a policy must compute the first call of each branch")
        if not decision.compute and decision.coefficient is not None and len(state.kept) < 2:
            raise PolicyError(f"policy {self.label!r} extrapolated call {call.index} of branch {call.branch!r} from "
                              f"{len(state.kept)} computed call(s): extrapolation needs two (declare "
                              f"extrapolate and give a coefficient only after two computes)")
        state.decision = decision
        state.skip_blocks = not decision.compute
        if self.recorder is not None:
            self.recorder.note_decision(decision)
        return decision

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state: BranchState = self.state_manager.get_state()
        context = self.state_manager.context
        step = getattr(context, "step_index", None)  # the pipeline's step (across experts) when it passes one
        call = CallInfo(branch=context.name, index=state.calls if step is None else step, timestep=timestep_of(kwargs),
                        latent=self.latents(module, kwargs["hidden_states"])[-1:].detach(),
                        num_steps=context.num_inference_steps)
        if state.calls == 0:
            state.policy_state = self._own("new_state", call)
        state.call, state.decision = call, None
        if not (self.policy.decide_in_block or self.policy.probe_blocks):
            decision = self.decide(state, call)
            if not decision.compute and self.policy.reuse == "output":
                state.calls += 1
                return state.cached_output
            if not decision.compute and self.policy.reuse == "transform":
                state.calls += 1
                x = self.latents(module, kwargs["hidden_states"])
                return with_sample(state.cached_output, (x + state.transform).to(first_tensor(state.cached_output)))
        output = self.fn_ref.original_forward(*args, **kwargs)
        state.skip_blocks = False
        state.calls += 1
        if state.decision is not None and state.decision.compute:
            if self.policy.reuse in ("output", "transform"):
                state.cached_output = output
            if self.policy.reuse == "transform":
                state.transform = self._transformation(call, self.latents(module, kwargs["hidden_states"]),
                                                       first_tensor(output))
            mark = self.mark()
            self._own("after_compute", call, state.policy_state, call, first_tensor(output))
            if mark is not None:
                self.recorder.note_span(mark, "hook_s")
        return output

    def _transformation(self, call: CallInfo, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y - x of a computed call (``transform`` reuse); refused where the output is not shaped like the input."""
        if y.shape != x.shape:
            raise PolicyError(f"policy {self.label!r} reuses the transformation y - x, but on branch {call.branch!r} "
                              f"the transformer's output {tuple(y.shape)} is not shaped like its input "
                              f"{tuple(x.shape)} (a learned-sigma head or extra condition channels): this model "
                              f"cannot take the policy")
        return (y - x).detach()

    def reset_state(self, module):
        self.state_manager.reset()
        return module

    def reused_stack(self, state: BranchState, stack_inputs: tuple) -> tuple:
        """What a reused call's block stack returns: the input plus the cached residual, or an extrapolation."""
        mode, c = self.policy.extrapolate, state.decision.coefficient
        if mode is None:
            return tuple(x + r for x, r in zip(stack_inputs, state.residuals))
        value = state.kept[-1] if c is None else tuple(extrapolate(p, q, c) for p, q in zip(*state.kept[-2:]))
        return value if mode == "feature" else tuple(x + r for x, r in zip(stack_inputs, value))


def _raised_at(err: BaseException, policy_cls: type) -> str:
    """``file:line`` of the deepest frame of ``err``'s traceback in the policy's own file (where its code raised,
    or called what raised), else of the deepest frame; relative to the working directory when inside it."""
    frames = traceback.extract_tb(err.__traceback__)
    try:
        own = Path(inspect.getsourcefile(policy_cls)).resolve()
    except TypeError:  # a class without a source file (defined in a notebook cell or ``python -c``)
        own = None
    mine = [f for f in frames if Path(f.filename).resolve() == own]
    frame = (mine or frames)[-1]
    path = Path(frame.filename)
    try:
        path = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    return f"{path}:{frame.lineno}"


def apply_policy(transformer: torch.nn.Module, blocks: list[torch.nn.Module], policy: CachePolicy,
                 recorder=None, label: str | None = None) -> PolicyHook:
    """Attach ``policy`` to ``transformer`` (and, for residual reuse, to its block stack). ``label``: the name
    errors give the policy (its spec name; default the rule's ``name``)."""
    if policy.decide_in_block and policy.reuse != "residual":
        raise PolicyError(f"policy {label or policy.name!r}: decide_in_block needs reuse 'residual' (the head block "
                          f"runs only then), not {policy.reuse!r}")
    hook = PolicyHook(policy, recorder, label)
    if (policy.probe_blocks or policy.extrapolate) and policy.reuse != "residual":
        raise PolicyError(f"policy {hook.label!r}: a probe and extrapolation reuse the block stack: set reuse "
                          f"'residual' (it is {policy.reuse!r})")
    if policy.residual_end is not None and (policy.probe_blocks or policy.extrapolate or policy.reuse != "residual"):
        raise PolicyError(f"policy {hook.label!r}: residual_end spans the stack's residual past the blocks; it takes "
                          f"plain residual reuse (no probe, no extrapolation)")
    if policy.probe_blocks and not 0 < policy.probe_blocks < len(blocks):
        raise PolicyError(f"policy {hook.label!r}: a probe of {policy.probe_blocks} block(s) needs a stack of more "
                          f"blocks; this transformer has {len(blocks)}")
    if policy.reuse == "residual":
        for i, block in enumerate(blocks):
            block_hook = BlockHook(hook, is_head=i == 0, is_tail=i == len(blocks) - 1, index=i)
            HookRegistry.check_if_exists_or_initialize(block).register_hook(block_hook, BLOCK_HOOK)
        if policy.residual_end is not None:
            end = transformer.get_submodule(policy.residual_end)
            HookRegistry.check_if_exists_or_initialize(end).register_hook(SpanEndHook(hook), BLOCK_HOOK)
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(hook, POLICY_HOOK)
    HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()
    return hook


def remove_policy(transformer: torch.nn.Module) -> None:
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.remove_hook(POLICY_HOOK, recurse=False)
    registry.remove_hook(BLOCK_HOOK, recurse=True)
    registry.invalidate_child_registries_cache()
