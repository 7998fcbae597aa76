"""The hooks on the block stack for residual reuse: :class:`BlockHook` on each block (the head adds the cached
residual or an extrapolation, the tail keeps the new one) and :class:`SpanEndHook` where the residual spans past
the blocks. They share the transformer-level :class:`~.base.PolicyHook`'s per-branch state."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from diffusers.hooks import ModelHook
from diffusers.hooks._helpers import TransformerBlockRegistry

if TYPE_CHECKING:
    from .base import BranchState, PolicyHook

BLOCK_HOOK = "sencache_bench_policy_block"


class BlockHook(ModelHook):
    """Residual reuse over the block stack: the head block adds the cached residual, the others pass through."""

    _is_stateful = True

    def __init__(self, policy_hook: PolicyHook, is_head: bool, is_tail: bool, index: int = 0):
        super().__init__()
        self.policy_hook = policy_hook
        self.state_manager = policy_hook.state_manager
        self.is_head, self.is_tail = is_head, is_tail
        self.probe = policy_hook.policy.probe_blocks
        self.is_decider = index == self.probe  # the head, or the first block after the probe
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
        inputs = self._inputs(args, kwargs)
        if self.is_head and self.probe:
            state.stack_inputs = inputs
        if self.is_decider and state.decision is None:
            state.call.block_args, state.call.block_kwargs = args, kwargs
            if self.probe:
                state.call.probe_input, state.call.probe_output = state.stack_inputs, inputs
            self.policy_hook.decide(state, state.call)
        spans_more = self.policy_hook.policy.residual_end is not None  # SpanEndHook adds the residual
        if state.skip_blocks:
            if self.is_decider and spans_more:  # SpanEndHook adds the residual at the span's end
                state.stack_inputs = inputs
            elif self.is_decider:
                base = state.stack_inputs if self.probe else inputs
                state.stack_inputs = ()
                state.call.probe_input = state.call.probe_output = ()
                return self._pack(self.policy_hook.reused_stack(state, base))
            return self._pack(inputs)
        if self.is_head:
            state.stack_inputs = inputs
        output = self.fn_ref.original_forward(*args, **kwargs)
        if self.is_tail and not spans_more:
            outs = self._unpack(output)
            state.residuals = tuple(o - i for o, i in zip(outs, state.stack_inputs))
            if self.policy_hook.policy.extrapolate is not None:
                kept = outs if self.policy_hook.policy.extrapolate == "feature" else state.residuals
                state.kept = [*state.kept[-1:], kept]
            state.stack_inputs = ()
            state.call.probe_input = state.call.probe_output = ()
        return output

    def reset_state(self, module):
        return module


class SpanEndHook(ModelHook):
    """Residual reuse past the block stack: the residual runs from the head block's input to this module's input
    (e.g. LTX-Video's ``proj_out``: TeaCache / SenCache cache ``norm_out`` and the output modulation with it)."""

    _is_stateful = True

    def __init__(self, policy_hook: PolicyHook):
        super().__init__()
        self.state_manager = policy_hook.state_manager

    def new_forward(self, module: torch.nn.Module, hidden: torch.Tensor, *args, **kwargs):
        state: BranchState = self.state_manager.get_state()
        if state.stack_inputs:
            start = state.stack_inputs[0]
            if state.skip_blocks:
                hidden = start + state.residuals[0]
            elif state.decision is not None and state.decision.compute:
                state.residuals = (hidden - start,)
            state.stack_inputs = ()
        return self.fn_ref.original_forward(hidden, *args, **kwargs)

    def reset_state(self, module):
        return module
