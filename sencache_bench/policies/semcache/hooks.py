"""SemCache's hooks: the transformer hook (the call's kwargs and, for Eq. 8, its input and output), the block
hooks (residual reuse plus TMM's gather / per-block selection / scatter) and the text-attention hooks (PSA's
Z_in, Z_out)."""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from diffusers.hooks import HookRegistry, ModelHook

from ..base import BLOCK_HOOK, POLICY_HOOK, BlockHook, BranchState, PolicyHook, first_tensor, remove_policy
from .measures import select_layers
from .policy import SemCachePolicy, SemCacheState
from .tmm import TokenSelection

ATTENTION_HOOK = "sencache_bench_semcache_attention"


class SemPolicyHook(PolicyHook):
    """The framework's transformer hook, keeping the call's keyword arguments for the frame layout, and handing
    the policy the call's model input and output (Eq. 8, ``error: paper``)."""

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state = self.state_manager.get_state()
        state.extra["kwargs"] = kwargs
        output = super().new_forward(module, *args, **kwargs)
        if isinstance(state.policy_state, SemCacheState):
            mark = self.mark()  # the policy's own work, outside decide: the record's hook_s
            self.policy.after_call(state.policy_state, state.decision, kwargs["hidden_states"], first_tensor(output))
            self.note(mark)
        return output

    def note(self, mark) -> None:
        if mark is not None:
            self.recorder.note_span(mark, "hook_s")


class SemBlockHook(BlockHook):
    """Residual reuse (as :class:`BlockHook`) plus TMM: gather the kept tokens at the head, give every block
    the kept positions' per-token inputs, scatter at the tail; report the stack's input and output."""

    def __init__(self, policy_hook: SemPolicyHook, is_head: bool, is_tail: bool, select: Callable | None):
        super().__init__(policy_hook, is_head, is_tail)
        self.policy: SemCachePolicy = policy_hook.policy
        self.select = select
        self.signature = None
        self.names: list[str] | None = None  # forward's parameter names when all can be passed by keyword

    def initialize_hook(self, module):
        super().initialize_hook(module)
        self.signature = inspect.signature(type(module).forward)
        params = list(self.signature.parameters.values())[1:]
        if all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params):
            self.names = [p.name for p in params]
        return module

    def _kept_arguments(self, module, args, kwargs, selection: TokenSelection) -> tuple[tuple, dict]:
        if self.names is not None and len(args) <= len(self.names):  # every argument by name: no bind (per block
            bound, arguments = None, {**dict(zip(self.names, args)), **kwargs}  # and call, it cost ~10 us each)
        else:
            bound = self.signature.bind(module, *args, **kwargs)
            arguments = bound.arguments
        if self.is_head:
            name = self.meta.hidden_states_argument_name
            arguments[name] = arguments[name].index_select(1, selection.keep.to(arguments[name].device))
        self.select(arguments, selection)
        return ((), arguments) if bound is None else (bound.args[1:], bound.kwargs)

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state: BranchState = self.state_manager.get_state()
        ps: SemCacheState = state.policy_state
        inputs = self._inputs(args, kwargs)
        if self.is_head and state.decision is None:
            ps.current_input, ps.kwargs = inputs[0], state.extra.get("kwargs", {})
            state.call.block_args, state.call.block_kwargs = args, kwargs
            self.policy_hook.decide(state, state.call)
            recorder = self.policy_hook.recorder
            if ps.selection is not None and recorder is not None and hasattr(recorder, "note_tokens"):
                recorder.note_tokens(ps.selection.kept, ps.selection.n_video)
        if state.skip_blocks:
            if self.is_head:
                inputs = tuple(x + r for x, r in zip(inputs, state.residuals))
            return self._pack(inputs)
        selection = ps.selection
        if self.is_head:
            state.stack_inputs = inputs
        if selection is not None:
            mark = self.policy_hook.mark()
            args, kwargs = self._kept_arguments(module, args, kwargs, selection)
            self.policy_hook.note(mark)
        output = self.fn_ref.original_forward(*args, **kwargs)
        if self.is_tail:
            mark = self.policy_hook.mark()
            outs = list(self._unpack(output))
            full_in = state.stack_inputs
            previous = state.residuals[0] if state.residuals else None
            if selection is not None:
                outs[0], video_residual = selection.scatter(outs[0], full_in[0], previous)
            else:
                video_residual = outs[0] - full_in[0]
            residuals = [video_residual] + [o - i for o, i in zip(outs[1:], full_in[1:])]
            self.policy.after_stack(ps, state.call, full_in[0], outs[0], previous)
            state.residuals, state.stack_inputs = tuple(residuals), ()
            output = self._pack(tuple(outs))
            self.policy_hook.note(mark)
        return output


class TextAttentionHook(ModelHook):
    """On a text-mixing attention layer: keep (Z_in, Z_out) of computed calls from the branch's second call on."""

    _is_stateful = True

    def __init__(self, policy_hook: SemPolicyHook):
        super().__init__()
        self.policy_hook = policy_hook
        self.state_manager = policy_hook.state_manager

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        output = self.fn_ref.original_forward(*args, **kwargs)
        state: BranchState = self.state_manager.get_state()
        decision, ps = state.decision, state.policy_state
        if decision is not None and decision.compute and state.call is not None and state.call.index >= 1 \
                and isinstance(ps, SemCacheState):
            mark = self.policy_hook.mark()
            z_in = args[0] if args else kwargs["hidden_states"]
            z_out = output[0] if isinstance(output, (tuple, list)) else output
            SemCachePolicy.add_layer(ps, z_in, z_out)
            self.policy_hook.note(mark)
        return output

    def reset_state(self, module):
        return module


def apply_semcache(transformer: torch.nn.Module, blocks: list[torch.nn.Module], policy: SemCachePolicy,
                   recorder=None, layers: int = 15) -> SemPolicyHook:
    """Attach the policy: transformer hook, block hooks (residual reuse + TMM), hooks on ``layers`` text-mixing
    attention layers (none when the policy forces its kept tokens)."""
    hook = SemPolicyHook(policy, recorder)
    select = policy.adapter.get("select")
    for i, block in enumerate(blocks):
        block_hook = SemBlockHook(hook, is_head=i == 0, is_tail=i == len(blocks) - 1, select=select)
        HookRegistry.check_if_exists_or_initialize(block).register_hook(block_hook, BLOCK_HOOK)
    if policy.force_keep is None:
        attention = policy.adapter["text_attention"](transformer)
        for i in select_layers(len(attention), layers):
            HookRegistry.check_if_exists_or_initialize(attention[i]).register_hook(TextAttentionHook(hook),
                                                                                   ATTENTION_HOOK)
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.register_hook(hook, POLICY_HOOK)
    registry.invalidate_child_registries_cache()
    return hook


def remove_semcache(transformer: torch.nn.Module) -> None:
    remove_policy(transformer)
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.remove_hook(ATTENTION_HOOK, recurse=True)
    registry.invalidate_child_registries_cache()
