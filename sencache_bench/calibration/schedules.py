"""What the schedule calibrators (``sencache-global``, ``lemica``) share: the trajectory probe that records and
replays an uncached run, the one-segment policy whose global error they measure, and reading their files back.

:class:`Trajectory` (a temporary hook on every expert's transformer that records each call's latent and output
per branch, and can replay stored outputs up to a step) restarts an uncached trajectory at any step at no model
cost; :class:`SegmentPolicy` caches one segment ``i -> j`` of it (LeMiCa's edge, and SenCache-global's
single-reuse error), on every expert. Their own module, so neither calibrator imports the other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from ..errors import BenchError
from ..policies.base import CachePolicy, CallInfo, Decision, apply_policy, first_tensor, remove_policy
from .profile import TIMESTEP_TOLERANCE

TRAJECTORY_HOOK = "sencache_bench_trajectory"


# -- the probe ------------------------------------------------------------------------------------
class _Counter(BaseState):
    def __init__(self):
        self.calls = 0

    def reset(self, *args, **kwargs) -> None:
        self.calls = 0


class Trajectory:
    """Per branch (``cache_context``) and step: the call's latent, output and expert; replays outputs if told.

    With ``replay = {branch: [output of step 0, 1, ...]}`` and ``until = i``, calls of steps ``< i`` return
    the stored output without running the transformer: an uncached trajectory restarted at step ``i``
    at no cost (the scheduler still steps, so its state is the uncached run's). :meth:`attach` hooks every
    expert of the session (Wan 2.2: both transformers) and records them in one trajectory: the step is the
    pipeline's ``step_index`` (shared across experts) where it passes one, else the call count of the branch.
    Register it before a policy's hooks (innermost), so that the policy still sees every call.
    """

    def __init__(self, record_outputs: bool = False):
        self.record_outputs = record_outputs
        self.latents: dict[str, list[torch.Tensor]] = {}
        self.outputs: dict[str, list[Any]] = {}
        self.timesteps: dict[str, list[float]] = {}
        self.experts: dict[str, list[str | None]] = {}  # the expert that ran each recorded step (None: one)
        self.replay: dict[str, list[Any]] | None = None
        self.until = 0
        self.computed = 0  # calls whose real forward ran
        self._hooks: list[_ProbeHook] = []

    def call(self, hook: _ProbeHook, *args, **kwargs):
        try:
            context = hook.state_manager.context
            branch = context.name
        except (ValueError, AttributeError):
            context, branch = None, "direct"
        state = hook.state_manager.get_state()
        step = getattr(context, "step_index", None)
        step = state.calls if step is None else step
        state.calls += 1
        if self.replay is not None and step < self.until:
            return self.replay[branch][step]
        hidden = kwargs["hidden_states"]
        self.latents.setdefault(branch, []).append(hidden[-1:].detach().float().clone())
        t = kwargs["timestep"]
        self.timesteps.setdefault(branch, []).append(float(t.flatten()[0]) if torch.is_tensor(t) else float(t))
        self.experts.setdefault(branch, []).append(hook.expert)
        output = hook.fn_ref.original_forward(*args, **kwargs)
        self.computed += 1
        if self.record_outputs:
            self.outputs.setdefault(branch, []).append(_detached(output))
        return output

    def new_generation(self) -> None:
        for hook in self._hooks:
            hook.state_manager.reset()
        self.latents, self.outputs, self.timesteps, self.experts = {}, {}, {}, {}

    def attach(self, session) -> Trajectory:
        """Hook every expert of ``session`` (its recorder's experts; one transformer: expert None)."""
        experts = session.recorder.experts
        for name, transformer, _ in experts:
            hook = _ProbeHook(self, str(name) if len(experts) > 1 else None)
            registry = HookRegistry.check_if_exists_or_initialize(transformer)
            registry.register_hook(hook, TRAJECTORY_HOOK)
            registry.invalidate_child_registries_cache()
            self._hooks.append(hook)
        return self

    def detach(self, session) -> None:
        for _, transformer, _ in session.recorder.experts:
            registry = HookRegistry.check_if_exists_or_initialize(transformer)
            registry.remove_hook(TRAJECTORY_HOOK, recurse=False)
            registry.invalidate_child_registries_cache()
        self._hooks = []

    def sections(self) -> dict[str | None, list[int]]:
        """Each expert's steps in the last recorded generation (one transformer: ``{None: all steps}``).

        From the first branch's record, which must cover the generation (no replay)."""
        ran = next(iter(self.experts.values()))
        out: dict[str | None, list[int]] = {}
        for step, expert in enumerate(ran):
            out.setdefault(expert, []).append(step)
        return out


class _ProbeHook(ModelHook):
    """The :class:`Trajectory`'s hook on one transformer: its own call counter per branch, the shared record."""

    _is_stateful = True

    def __init__(self, probe: Trajectory, expert: str | None):
        super().__init__()
        self.probe, self.expert = probe, expert
        self.state_manager = StateManager(_Counter)

    def new_forward(self, module, *args, **kwargs):
        return self.probe.call(self, *args, **kwargs)

    def reset_state(self, module):
        self.state_manager.reset()
        return module


def apply_everywhere(session, policy: CachePolicy) -> None:
    """``policy`` on every expert of ``session`` (one rule object: its counters see the whole generation)."""
    for _, transformer, blocks in session.recorder.experts:
        apply_policy(transformer, blocks, policy)


def remove_everywhere(session) -> None:
    for _, transformer, _ in session.recorder.experts:
        remove_policy(transformer)


def _detached(output):
    if isinstance(output, torch.Tensor):
        return output.detach().clone()
    if isinstance(output, tuple):
        return tuple(_detached(o) for o in output)
    if isinstance(output, list):
        return [_detached(o) for o in output]
    return output  # a dataclass output: returned as is (the pipelines here call with return_dict=False)


def generate_latent(runner, prompt: str, seed: int) -> torch.Tensor:
    """One generation of the runner's pipeline, final latents of the first sample (no VAE decode)."""
    pipe = runner.session.pipe
    with torch.no_grad():
        out = pipe(prompt=prompt, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent",
                   **runner.spec.generation_kwargs())
    frames = out.frames if hasattr(out, "frames") else out[0]
    return first_tensor(frames)[:1].float()


class SegmentPolicy(CachePolicy):
    """Computes every step but ``i+1..j-1`` (the one cached segment of edge ``i -> j``); counts real calls."""

    name = "lemica-segment"

    def __init__(self, i: int, j: int, reuse: str = "residual"):
        self.i, self.j, self.reuse = i, j, reuse
        self.computed = 0

    def decide(self, state, call: CallInfo) -> Decision:
        compute = not (self.i < call.index < self.j)
        if compute and call.index >= self.i:  # steps before i are replayed, not run
            self.computed += 1
        return Decision(compute=compute)



# -- reading calibration files back ----------------------------------------------------------------
def read_calibration(path: Path, kind: str, what: str, fix: str) -> dict:
    """A stored calibration file of ``kind``, or one clear BenchError naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{what} {path} not found: {fix}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BenchError(f"{what} {path} is unreadable ({err.__class__.__name__}): {fix}") from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise BenchError(f"{path} is not a {what} (no kind: {kind}): {fix}")
    return data


def check_made_for(data: dict, path: Path, *, model: str, schedule: dict, what: str, fix: str) -> None:
    """Refuse a file measured on another model, scheduler, shift, step count or timesteps."""
    if data.get("model") != model:
        raise BenchError(f"{path}: this {what} was measured on {data.get('model')}, not {model}: {fix}")
    theirs = data.get("schedule") or {}
    for key in ("scheduler", "shift"):
        if theirs.get(key) != schedule.get(key):
            raise BenchError(f"{path}: this {what} was measured with {key} {theirs.get(key)}, this run uses "
                             f"{schedule.get(key)}: {fix}")
    a, b = list(theirs.get("timesteps") or []), list(schedule["timesteps"])
    if len(a) != len(b):
        raise BenchError(f"{path}: this {what} was measured on {len(a)} steps, this run has {len(b)}: {fix}")
    worst = max((abs(x - y) for x, y in zip(a, b)), default=0.0)
    if worst > TIMESTEP_TOLERANCE:
        raise BenchError(f"{path}: this {what} was measured on other timesteps (they differ by up to {worst:.3g}): "
                         f"{fix}")


def section_steps(data: dict, n: int, path: Path, what: str, fix: str) -> list[int]:
    """An expert section's ``steps`` (consecutive steps of the ``n``; a single-transformer file: all of them)."""
    try:
        steps = [int(v) for v in data.get("steps", range(n))]
    except (TypeError, ValueError) as err:
        raise BenchError(f"{path}: malformed {what} ({err}): {fix}") from None
    if not steps or steps != list(range(steps[0], steps[0] + len(steps))) or not 0 <= steps[0] <= steps[-1] < n:
        raise BenchError(f"{path}: steps must be consecutive steps of the {n}: {fix}")
    return steps
