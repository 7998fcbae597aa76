"""``calibrate --policy teacache``: fit TeaCache's rescale polynomial for a model that has none.

As the source does (ali-vilab/TeaCache): over uncached generations, per CFG branch and per step i >= 1,

    x_i = mean|in_i - in_{i-1}| / mean|in_{i-1}|        (the model's indicator, the family's adapter)
    y_i = mean|out_i - out_{i-1}| / mean|out_{i-1}|     (the transformer's output)

and ``coefficients = numpy.polyfit(x, y, 4)`` (highest power first, numpy ``poly1d`` order), so that
``poly(rel)`` estimates the output change the policy accumulates against its threshold. The JSON file
(``kind: teacache_coefficients``) holds the coefficients, the model, family, indicator, step count and
every (x, y) point; a spec's ``policy.coefficients`` points to it.

:class:`CallProbe` (temporary hooks on the runner's loaded pipeline: branch, step, timestep, the head
block's inputs by name, the block-stack residual and the output of every uncached call) is shared with
the MagCache calibrator.
"""

from __future__ import annotations

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
        probe.current = {"branch": branch, "step": step, "timestep": timestep_of(kwargs)}
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

    A record has ``branch``, ``step``, ``timestep``, ``inputs`` (the head block's arguments by name),
    ``residual`` (block-stack hidden output minus input) and ``output`` (the transformer's sample).
    """

    def __init__(self, transformer: torch.nn.Module, blocks: list[torch.nn.Module], on_call: Callable[[dict], Any]):
        self.transformer, self.blocks, self.on_call = transformer, blocks, on_call
        self.current: dict | None = None
        self.steps: dict[str, int] = {}

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
        self.steps = {}


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
    """One uncached generation per item with the probe attached (and removed after, whatever happens)."""
    session = runner.session
    with torch.no_grad(), CallProbe(session.transformer, session.blocks, on_call) as probe:
        for i, (text, seed) in enumerate(items):
            log(f"{what}: uncached generation {i + 1}/{len(items)} (seed {seed}): {text[:60]}")
            if before_each is not None:
                before_each()
            probe.new_generation()
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
    transformer = session.transformer
    previous: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    points: list[tuple[float, float, str, int]] = []

    def on_call(record: dict) -> None:
        from ..policies.base import CallInfo

        call = CallInfo(branch=record["branch"], index=record["step"], timestep=record["timestep"],
                        latent=record["output"], num_steps=spec.sampling.steps)
        ind = fn(transformer, record["inputs"], call).detach()
        out_ = record["output"]
        branch = record["branch"]
        if record["step"] > 0 and branch in previous:
            p_ind, p_out = previous[branch]
            points.append((_rel_l1(ind, p_ind), _rel_l1(out_, p_out), branch, record["step"]))
        previous[branch] = (ind, out_)

    items = calibration_items(runner, samples, prompts)
    run_uncached(runner, items, on_call, log, "teacache calibration", before_each=previous.clear)
    if len(points) < DEGREE + 1:
        raise BenchError(f"teacache calibration: {len(points)} (indicator, output) pairs are too few for a degree-"
                         f"{DEGREE} fit; use more samples or steps")
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    coefficients = np.polyfit(x, y, DEGREE)
    fitted = np.poly1d(coefficients)(x)
    rmse = float(np.sqrt(np.mean((fitted - y) ** 2)))
    data = header(runner, "teacache", COEFFICIENTS_KIND, samples, items)
    data.update({"indicator": indicator, "degree": DEGREE, "coefficients": [float(c) for c in coefficients],
                 "rmse": rmse, "points": {"x": x.tolist(), "y": y.tolist(), "branch": [p[2] for p in points],
                                          "step": [p[3] for p in points]}})
    path = write(out, data)
    log(f"teacache calibration: {len(points)} points, coefficients {np.array2string(coefficients, precision=6)} "
        f"(rmse {rmse:.4g}) -> {path}")
    return path
