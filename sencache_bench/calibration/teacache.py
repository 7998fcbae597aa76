"""``calibrate --policy teacache``: fit TeaCache's rescale polynomial for a model that has none.

As the source does (ali-vilab/TeaCache): over uncached generations, per CFG branch and per step i >= 1,

    x_i = mean|in_i - in_{i-1}| / mean|in_{i-1}|        (the model's indicator, the family's adapter)
    y_i = mean|out_i - out_{i-1}| / mean|out_{i-1}|     (the transformer's output)

and ``coefficients = numpy.polyfit(x, y, 4)`` (highest power first, numpy ``poly1d`` order), so that
``poly(rel)`` estimates the output change the policy accumulates against its threshold. The JSON file
(``kind: teacache_coefficients``) holds the coefficients, the model, family, indicator, step count and
every (x, y) point; a spec's ``policy.coefficients`` points to it. A model with several experts gets one
fit per expert, each on its own calls' pairs (:mod:`.experts`).

:class:`CallProbe` (temporary hooks on the runner's loaded pipeline: branch, step, timestep, the head
block's inputs by name, the block-stack residual and the output of every uncached call) is shared with
the MagCache calibrator.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks._helpers import TransformerBlockRegistry
from diffusers.hooks.hooks import BaseState, StateManager

from ..errors import BenchError
from ..policies.base import first_tensor, timestep_of
from ..policies.teacache import COEFFICIENTS_KIND
from .experts import expert_names, per_expert_file

Log = Callable[[str], None]
PROBE_HOOK = "sencache_bench_calibration_probe"
DEGREE = 4


class _NoState(BaseState):
    def reset(self, *args, **kwargs) -> None:
        pass


class _TransformerProbe(ModelHook):
    """Knows the call's cache_context (branch), counts calls per branch, sees the output."""

    _is_stateful = True

    def __init__(self, probe: CallProbe):
        super().__init__()
        self.probe = probe
        self.state_manager = StateManager(_NoState)

    def new_forward(self, module, *args, **kwargs):
        try:
            branch = self.state_manager.context.name
        except ValueError:
            branch = "direct"
        probe = self.probe
        step = probe.steps.get(branch, 0)
        probe.current = {"branch": branch, "step": step, "timestep": timestep_of(kwargs), "expert": probe.expert}
        output = self.fn_ref.original_forward(*args, **kwargs)
        probe.current["output"] = first_tensor(output).detach()
        probe.steps[branch] = step + 1
        probe.on_call(probe.current)
        probe.current = None
        return output

    def reset_state(self, module):
        return module


class _BlockProbe(ModelHook):
    """Head block: its inputs (bound by name) and hidden input; tail block: the hidden residual."""

    def __init__(self, probe: CallProbe, is_head: bool, is_tail: bool):
        super().__init__()
        self.probe, self.is_head, self.is_tail = probe, is_head, is_tail
        self.meta = None
        self.signature = None

    def initialize_hook(self, module):
        self.meta = TransformerBlockRegistry.get(type(module))
        self.signature = inspect.signature(type(module).forward)
        return module

    def new_forward(self, module, *args, **kwargs):
        current = self.probe.current
        if current is not None and self.is_head:
            current["inputs"] = dict(self.signature.bind(module, *args, **kwargs).arguments)
            current["stack_in"] = self.meta._get_parameter_from_args_kwargs(
                self.meta.hidden_states_argument_name, args, kwargs)
        output = self.fn_ref.original_forward(*args, **kwargs)
        if current is not None and self.is_tail and "stack_in" in current:
            out = output if self.meta.return_encoder_hidden_states_index is None \
                else output[self.meta.return_hidden_states_index]
            current["residual"] = (out - current.pop("stack_in")).detach()
        return output


class CallProbe:
    """Temporary hooks on a loaded pipeline's transformer; ``on_call(record)`` runs after every call.

    A record has ``branch``, ``step``, ``timestep``, ``expert`` (None on a single-transformer model),
    ``inputs`` (the head block's arguments by name), ``residual`` (block-stack hidden output minus input)
    and ``output`` (the transformer's sample). The probes of a model's experts share ``steps``: the step is
    counted over the whole generation, as the policies count it.
    """

    def __init__(self, transformer: torch.nn.Module, blocks: list[torch.nn.Module], on_call: Callable[[dict], Any],
                 expert: str | None = None, steps: dict[str, int] | None = None):
        self.transformer, self.blocks, self.on_call, self.expert = transformer, blocks, on_call, expert
        self.current: dict | None = None
        self.steps: dict[str, int] = {} if steps is None else steps

    def __enter__(self) -> CallProbe:
        for i, block in enumerate(self.blocks):
            HookRegistry.check_if_exists_or_initialize(block).register_hook(
                _BlockProbe(self, is_head=i == 0, is_tail=i == len(self.blocks) - 1), PROBE_HOOK)
        registry = HookRegistry.check_if_exists_or_initialize(self.transformer)
        registry.register_hook(_TransformerProbe(self), PROBE_HOOK)
        registry.invalidate_child_registries_cache()
        return self

    def __exit__(self, *exc) -> None:
        registry = HookRegistry.check_if_exists_or_initialize(self.transformer)
        registry.remove_hook(PROBE_HOOK, recurse=True)
        registry.invalidate_child_registries_cache()

    def new_generation(self) -> None:
        self.steps.clear()


def calibration_items(runner, samples: int, prompts: str = "calibration") -> list[tuple[str, int]]:
    """(prompt text, seed) per sample: the calibration prompt set (not the evaluation prompts) or the spec's."""
    if samples < 1:
        raise BenchError(f"--samples must be at least 1 (found {samples})")
    if prompts == "spec":
        texts = [p.text for p in runner.spec.prompts]
    elif prompts == "calibration":
        from .sencache import calibration_prompts

        texts = list(calibration_prompts(runner.spec))
    else:
        raise BenchError(f"calibration option prompts: expected 'calibration' or 'spec' (found {prompts!r})")
    return [(texts[i % len(texts)], i) for i in range(samples)]


def run_uncached(runner, items: list[tuple[str, int]], on_call: Callable[[dict], Any], log: Log, what: str,
                 before_each: Callable[[], Any] | None = None) -> None:
    """One uncached generation per item with a probe on every expert (removed after, whatever happens)."""
    session = runner.session
    experts = session.recorder.experts
    steps: dict[str, int] = {}
    with contextlib.ExitStack() as stack, torch.no_grad():
        probes = [stack.enter_context(CallProbe(transformer, blocks, on_call, expert=name if len(experts) > 1 else None,
                                                steps=steps)) for name, transformer, blocks in experts]
        for i, (text, seed) in enumerate(items):
            log(f"{what}: uncached generation {i + 1}/{len(items)} (seed {seed}): {text[:60]}")
            if before_each is not None:
                before_each()
            probes[0].new_generation()
            session._call(text, seed)


def header(runner, policy: str, kind: str, samples: int, items) -> dict:
    from ..runner import library_versions

    spec = runner.spec
    s = spec.sampling
    return {"kind": kind, "policy": policy, "model": spec.model_name, "family": spec.family.name,
            "steps": s.steps, "samples": samples,
            "sampling": {"height": s.height, "width": s.width, "frames": s.frames, "guidance_scale": s.guidance_scale,
                         "shift": s.shift},
            "prompts": [t for t, _ in items], "seeds": [seed for _, seed in items],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": library_versions()}


def write(out: Path, data: dict) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    return out


def _rel_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    current, previous = current.float(), previous.float()
    return float((current - previous).abs().mean() / previous.abs().mean())


def calibrate(runner, samples: int, out: Path, log: Log = print, indicator: str | None = None,
              prompts: str = "calibration") -> Path:
    """Fit the degree-4 rescale polynomial on ``samples`` uncached generations; write the JSON at ``out``."""
    spec = runner.spec
    adapter = spec.family.adapters.get("teacache")
    if not adapter:
        raise BenchError(f"TeaCache has no indicator for the {spec.family.name} family")
    indicators = adapter["indicators"]
    indicator = indicator or next(iter(indicators))
    if indicator not in indicators:
        raise BenchError(f"calibration option indicator: {indicator!r} is not one of {', '.join(indicators)}")
    fn = indicators[indicator]["fn"]
    session = runner.session
    transformers = {name: t for name, t, _ in session.recorder.experts}
    previous: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
    points: list[tuple[float, float, str, int, str | None]] = []

    def on_call(record: dict) -> None:
        from ..policies.base import CallInfo

        call = CallInfo(branch=record["branch"], index=record["step"], timestep=record["timestep"],
                        latent=record["output"], num_steps=spec.sampling.steps)
        expert = record["expert"]
        ind = fn(transformers[expert] if expert else session.transformer, record["inputs"], call).detach()
        out_ = record["output"]
        key = (expert, record["branch"])  # pairs within one expert's calls only: never across the switch
        if record["step"] > 0 and key in previous:
            p_ind, p_out = previous[key]
            points.append((_rel_l1(ind, p_ind), _rel_l1(out_, p_out), record["branch"], record["step"], expert))
        previous[key] = (ind, out_)

    items = calibration_items(runner, samples, prompts)
    run_uncached(runner, items, on_call, log, "teacache calibration", before_each=previous.clear)
    data = header(runner, "teacache", COEFFICIENTS_KIND, samples, items)
    data.update({"indicator": indicator, "degree": DEGREE})
    experts = expert_names(runner)
    fits = {e: _fit([p for p in points if p[4] == e], e) for e in experts}
    path = write(out, per_expert_file(data, fits) if experts != [None] else {**data, **fits[None]})
    for e, fit in fits.items():
        log(f"teacache calibration{f' ({e})' if e else ''}: {len(fit['points']['x'])} points, coefficients "
            f"{np.array2string(np.array(fit['coefficients']), precision=6)} (rmse {fit['rmse']:.4g}) -> {path}")
    return path


def _fit(points: list[tuple], expert: str | None) -> dict:
    """numpy.polyfit(x, y, 4) over one transformer's (indicator, output) pairs."""
    if len(points) < DEGREE + 1:
        raise BenchError(f"teacache calibration{f' of {expert}' if expert else ''}: {len(points)} (indicator, output) "
                         f"pairs are too few for a degree-{DEGREE} fit; use more samples or steps")
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    coefficients = np.polyfit(x, y, DEGREE)
    rmse = float(np.sqrt(np.mean((np.poly1d(coefficients)(x) - y) ** 2)))
    return {"coefficients": [float(c) for c in coefficients], "rmse": rmse,
            "points": {"x": x.tolist(), "y": y.tolist(), "branch": [p[2] for p in points],
                       "step": [p[3] for p in points]}}
