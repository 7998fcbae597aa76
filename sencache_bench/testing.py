"""The conformance kit: checks every cache policy should pass, on the tiny models, in seconds.

Run it from pytest (``assert_conforms("my-cache", never_reuse={"thresh": 0})``) or from the shell
(``sencache-bench check-policy my-cache``). The checks (docs/writing-a-policy.md):

1. never-reuse is the reference: at its never-reuse setting the policy reproduces the uncached video bit for bit,
   every call computed. The setting is ``never_reuse`` if given, else the knob's most-compute end
   (``Knob.low`` for a "lower" knob, ``Knob.high`` for "higher"), else the parameters as given.
2. the first call of every branch computes (there is nothing to reuse yet).
3. NFE and the trace are counted: one call per step per branch, and a policy that changes the video must show
   skipped calls or calls on fewer tokens to the recorder (or price itself by replay,
   ``PolicyConfig.priced_by_replay``).
4. branches are independent (families that run separate CFG calls): the cond branch's decisions and outputs do
   not change when the uncond branch's input does (another negative prompt), replayed call by call.
5. no state leaks between videos: two videos in a row with one config equal two fresh runs, and an uncached
   run afterwards is the reference again (the policy detached).
6. the knob is monotone (what ``match`` bisects): NFE at a few knob values moves one way.
7. a policy that declares a fixed schedule (``PolicyConfig.fixed_schedule``, so ``match`` tunes it on one video)
   computes the same calls for two different prompts.
"""

from __future__ import annotations

import copy
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .policies.base import Knob

PROMPTS = ("a red ball bouncing on grass", "a quiet library at night")
IMAGE_PROMPT = "a red circle moving right"  # an image-to-video model's first frame: this bench clip's


@dataclass
class Check:
    name: str
    passed: bool | None  # None: not applicable / skipped
    detail: str = ""

    def line(self) -> str:
        tag = {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]
        return f"{tag} {self.name}" + (f": {self.detail}" if self.detail else "")


@dataclass
class Report:
    policy: str
    model: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.passed is not False for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    def lines(self) -> list[str]:
        """One line per check; a failure repeating an error already shown (a policy that raises fails every
        check that runs it) names it once and says so after."""
        out, seen = [], set()
        for c in self.checks:
            error = re.sub(r"^raised \w+: ", "", c.detail) if c.passed is False else None
            if error and error in seen:
                c = Check(c.name, False, "the same error as above")
            seen.add(error)
            out.append(c.line())
        return out


def _per_branch(calls) -> dict[str, list]:
    out: dict[str, list] = {}
    for c in calls:
        out.setdefault(c.branch, []).append(c)
    return out


def _nfe(calls) -> float:
    branches = _per_branch(calls)
    return sum(sum(c.computed for c in cs) for cs in branches.values()) / max(1, len(branches))


def _trace(calls) -> list[tuple]:
    return [(c.branch, c.step, c.computed, c.score) for c in calls]


def never_reuse_setting(knob: Knob | None) -> dict:
    """The knob's most-compute end: threshold knobs at ``low``, budget knobs at ``high``."""
    if knob is None:
        return {}
    value = knob.low if knob.more_compute == "lower" else knob.high
    return {knob.field: int(value) if knob.integer else value}


def knob_values(knob: Knob, n: int = 4) -> list:
    values = np.linspace(knob.low, knob.high, n).tolist()
    if knob.integer:
        values = sorted({int(round(v)) for v in values})
    return values


class _Capture:
    """Records every transformer call of an uncached generation: its cache context, its inputs and the transformer
    (the expert, on a model with several) that ran it."""

    def __init__(self, transformers: list[torch.nn.Module]):
        from diffusers.hooks import HookRegistry, ModelHook
        from diffusers.hooks.hooks import StateManager

        capture = self

        class _Hook(ModelHook):
            _is_stateful = True

            def __init__(self):
                super().__init__()
                self.state_manager = StateManager(dict)

            def pre_forward(self, module, *args, **kwargs):
                capture.calls.append((self.state_manager._context, {k: v.clone() if torch.is_tensor(v) else v
                                                                   for k, v in kwargs.items()}, module))
                return args, kwargs

            def reset_state(self, module):
                return module

        self.calls: list[tuple[Any, dict, torch.nn.Module]] = []
        self.registries = [HookRegistry.check_if_exists_or_initialize(t) for t in transformers]
        for registry in self.registries:
            registry.register_hook(_Hook(), "sencache_bench_capture")

    def close(self) -> None:
        for registry in self.registries:
            registry.remove_hook("sencache_bench_capture", recurse=False)


def _needs_image(model: str) -> bool:
    from .models import MODELS

    return model in MODELS and MODELS.get(model).image == "required"


class Kit:
    """One policy on one tiny model: a loaded session, the references, and a way to build configs. An
    image-to-video model gets ``image`` (default: frame 0 of the bench renderer's clip of :data:`IMAGE_PROMPT`)."""

    def __init__(self, policy: str, model: str = "tiny-wan", params: dict | None = None, steps: int = 4,
                 workdir: str | Path | None = None, guidance_scale: float | None = None,
                 log: Callable[[str], None] | None = None, image: str | Path | None = None):
        from .runner import Runner, Session
        from .spec import resolve

        self.policy, self.model, self.params = policy, model, dict(params or {})
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="sencache-check-")
        out = Path(workdir if workdir is not None else self._tmp.name)
        sampling = {"steps": steps, "seeds": [0]}
        if guidance_scale is not None:
            sampling["guidance_scale"] = guidance_scale
        if image is None and _needs_image(model):  # image-to-video: a bench clip's first frame
            from .models.first_frames import write_first_frame

            image = write_first_frame(out / "first_frame.png", IMAGE_PROMPT)
        if image is not None:
            sampling["image"] = str(image)
        self.spec = {"model": {"name": model}, "sampling": sampling, "prompts": list(PROMPTS),
                     "policy": {"name": "none"}, "metrics": ["psnr"], "output": {"dir": str(out)}}
        self.log = log or (lambda line: None)
        self.resolved = resolve(self.spec)
        self.session = Session(self.resolved)
        self.runner = Runner(self.resolved, log=self.log)
        self.runner._session = self.session  # prepare() (e.g. SenCache's calibration) uses this session
        self.reference = {p: self.session.generate(p, 0) for p in PROMPTS}

    def config(self, **overrides):
        """A fresh, prepared config of the policy at ``params`` updated by ``overrides``."""
        from .runner import Runner
        from .spec import resolve

        spec = copy.deepcopy(self.spec)
        spec["policy"] = {"name": self.policy, **self.params, **overrides}
        resolved = resolve(spec)
        runner = Runner(resolved, log=self.log)
        runner._session = self.session
        runner.prepare_policy()
        return resolved.policy

    def generate(self, prompt: str, config):
        return self.session.generate(prompt, 0, policy=config)

    def replay(self, config, calls: list[tuple[Any, dict, torch.nn.Module]]) -> tuple[list[torch.Tensor], list]:
        """Run the captured calls one by one through their transformer (expert) with ``config`` attached."""
        from diffusers.hooks.hooks import _set_cache_context

        rec = self.session.recorder
        self.session.attach(config)
        rec.attach_outer()
        rec.start()
        outputs = []
        try:
            with torch.no_grad():
                for context, kwargs, tr in calls:
                    _set_cache_context(tr, context)
                    try:
                        out = tr(**kwargs)
                    finally:
                        _set_cache_context(tr, None)
                    outputs.append((out[0] if isinstance(out, (tuple, list)) else out.sample).clone())
        finally:
            rec.detach_outer()
            self.session.detach(config)
        return outputs, list(rec.calls)

    def capture(self, prompt: str) -> list[tuple[Any, dict, torch.nn.Module]]:
        cap = _Capture([transformer for _, transformer, _ in self.session.recorder.experts])
        try:
            self.session.generate(prompt, 0)
        finally:
            cap.close()
        return cap.calls

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def check_policy(policy: str, model: str = "tiny-wan", *, params: dict | None = None,
                 never_reuse: dict | None = None, knob: Knob | None = None, values: list | None = None,
                 steps: int = 4, workdir: str | Path | None = None,
                 log: Callable[[str], None] | None = None, image: str | Path | None = None) -> Report:
    """Run the conformance checks on ``policy`` (a registered name, plugins included) with ``params`` (its
    spec keys; the setting that may reuse). ``never_reuse``: the keys that make it compute every call, when
    it declares no knob (or the knob's end is not it). ``knob``: overrides the declared ``knob`` for check 6."""
    from .policies import POLICIES

    config_cls = POLICIES.get(policy)
    knob = knob if knob is not None else getattr(config_cls, "knob", None)
    report = Report(policy=POLICIES.canonical(policy), model=model)
    kit = Kit(policy, model, params=params, steps=steps, workdir=workdir, log=log, image=image)
    try:
        # spec errors in params / never_reuse are the caller's: one error line, before any check runs
        kit.config()
        kit.config(**(dict(never_reuse) if never_reuse is not None else never_reuse_setting(knob)))
        _run_checks(kit, report, knob, never_reuse, values)
    finally:
        kit.close()
    return report


def _run_checks(kit: Kit, report: Report, knob: Knob | None, never_reuse: dict | None, values) -> None:
    """Each check on its own: one that raises is a FAIL naming the exception, and the others still run."""
    ctx = {"steps": kit.resolved.sampling.steps, "add": report.checks.append, "ref": kit.reference[PROMPTS[0]],
           "branches": kit.resolved.family.branches(kit.resolved.sampling.guidance_scale), "knob": knob,
           "never_reuse": never_reuse, "values": values}
    for name, check in _CHECKS:
        try:
            check(kit, **ctx)
        except Exception as err:  # noqa: BLE001 - the policy under test is foreign code; its failure is the finding
            first = str(err).splitlines()[0] if str(err) else ""
            report.checks.append(Check(name, False, f"raised {type(err).__name__}: {first}"))


def _check_1(kit: Kit, steps, add, ref, branches, knob, never_reuse, values) -> None:
    """Never-reuse reproduces the reference bit for bit."""
    a, b = PROMPTS
    setting = dict(never_reuse) if never_reuse is not None else never_reuse_setting(knob)
    never = kit.generate(a, kit.config(**setting))
    same = bool(np.array_equal(never.frames, ref.frames))
    all_computed = all(c.computed for c in never.calls) and len(never.calls) == len(ref.calls)
    diff = int(np.abs(never.frames.astype(int) - ref.frames.astype(int)).max())
    label = ", ".join(f"{k}={v}" for k, v in setting.items()) or "the parameters as given"
    add(Check("never-reuse reproduces the reference bit for bit", same and all_computed,
              f"at {label}: {sum(c.computed for c in never.calls)} of {len(ref.calls)} calls computed, "
              f"max pixel difference {diff}" + ("" if same and all_computed else
                                                  " (pass never_reuse=... with the setting that never reuses)")))


def _check_2(kit: Kit, steps, add, ref, branches, knob, never_reuse, values) -> None:
    """The first call of every branch computes: the framework refuses a reuse with nothing cached (PolicyError),
    whose line is the finding; a trace that still shows a reused first call fails too."""
    from .errors import PolicyError

    a, b = PROMPTS
    try:
        gen = kit.generate(a, kit.config())
    except PolicyError as err:
        add(Check("the first call of every branch computes", False, str(err)))
        return
    per = _per_branch(gen.calls)
    first = {br: cs[0].computed for br, cs in per.items()}
    add(Check("the first call of every branch computes", all(first.values()) and bool(first),
              ", ".join(f"{br}: {'computed' if ok else 'REUSED'}" for br, ok in first.items())))


def _check_3(kit: Kit, steps, add, ref, branches, knob, never_reuse, values) -> None:
    """NFE and traces counted: one call per step per branch; a changed video shows skipped calls (or replay)."""
    a, b = PROMPTS
    gen = kit.generate(a, kit.config())
    per = _per_branch(gen.calls)
    problems = []
    if sorted(per) != sorted(branches):
        problems.append(f"branches {sorted(per)}, expected {sorted(branches)}")
    for br, cs in per.items():
        if [c.step for c in cs] != list(range(steps)):
            problems.append(f"{br}: steps {[c.step for c in cs]}, expected 0..{steps - 1}")
    changed = not np.array_equal(gen.frames, ref.frames)
    nfe = _nfe(gen.calls)
    fewer_tokens = sum(c.token_fraction < 1 for c in gen.calls)  # computed on fewer tokens (SemCache's TMM)
    if changed and nfe == steps and not fewer_tokens and not kit.config().priced_by_replay():
        problems.append("the video changed but every call ran its whole block stack on every token: the "
                        "recorder cannot see the saving (declare priced_by_replay)")
    add(Check("NFE and the trace are counted", not problems,
              "; ".join(problems) or f"NFE {nfe:g} of {steps} per branch, {len(gen.calls)} calls traced"
              + (f", {fewer_tokens} on fewer tokens" if fewer_tokens else "")
              + (", video changed" if changed else ", video identical to the reference")))


def _check_4(kit: Kit, steps, add, ref, branches, knob, never_reuse, values) -> None:
    """Branch independence."""
    a, b = PROMPTS
    if len(branches) < 2:
        add(Check("branches are independent", None, f"{kit.resolved.family.name} runs CFG as "
                                                     f"{kit.resolved.family.cfg_layout} calls (one branch)"))
    else:
        calls_a, calls_b = kit.capture(a), kit.capture(b)
        cond_b = [kw for ctx, kw, _ in calls_b if ctx.name == branches[0]]
        uncond_b = [kw for ctx, kw, _ in calls_b if ctx.name != branches[0]]
        # the same cond calls; the uncond calls given prompt b's embedding as their negative prompt and b's
        # trajectory x_t: only the uncond branch's input changes
        other, j = [], 0
        for ctx, kw, tr in calls_a:
            if ctx.name == branches[0]:
                other.append((ctx, kw, tr))
            else:
                k = min(j, len(cond_b) - 1, len(uncond_b) - 1)
                other.append((ctx, {**kw, "encoder_hidden_states": cond_b[k]["encoder_hidden_states"],
                                    "hidden_states": uncond_b[k]["hidden_states"]}, tr))
                j += 1
        out1, rec1 = kit.replay(kit.config(), calls_a)
        out2, rec2 = kit.replay(kit.config(), other)
        cond = [i for i, (ctx, _, _) in enumerate(calls_a) if ctx.name == branches[0]]
        uncond = [i for i, (ctx, _, _) in enumerate(calls_a) if ctx.name != branches[0]]
        same_out = all(torch.equal(out1[i], out2[i]) for i in cond)
        same_dec = _trace([rec1[i] for i in cond]) == _trace([rec2[i] for i in cond])
        moved = any(not torch.equal(out1[i], out2[i]) for i in uncond)
        add(Check("branches are independent", (same_out and same_dec) if moved else None,
                  ("cond decisions and outputs unchanged when the uncond input changes" if same_out and same_dec
                   else f"the {branches[0]} branch's {'outputs' if not same_out else 'decisions'} changed when "
                        f"only the {branches[1]} branch's input did") if moved
                  else "the uncond outputs did not change with its input: nothing to compare"))


def _check_5(kit: Kit, steps, add, ref, branches, knob, never_reuse, values) -> None:
    """No state leaks between videos; the policy detaches."""
    a, b = PROMPTS
    shared = kit.config()
    first_a, then_b = kit.generate(a, shared), kit.generate(b, shared)
    fresh_a, fresh_b = kit.generate(a, kit.config()), kit.generate(b, kit.config())
    plain = kit.session.generate(a, 0)
    leaks = []
    for label, x, y in (("first", first_a, fresh_a), ("second", then_b, fresh_b)):
        if not np.array_equal(x.frames, y.frames) or _trace(x.calls) != _trace(y.calls):
            leaks.append(f"the {label} video of two in a row differs from a fresh run")
    if not np.array_equal(plain.frames, ref.frames) or not all(c.computed for c in plain.calls):
        leaks.append("an uncached run after the policy is not the reference (hooks left attached?)")
    add(Check("no state leaks between videos", not leaks,
              "; ".join(leaks) or "two videos in a row equal two fresh runs; uncached afterwards = reference"))


def _check_6(kit: Kit, steps, add, ref, branches, knob, never_reuse, values) -> None:
    """The knob is monotone."""
    a, b = PROMPTS
    if knob is None:
        add(Check("the knob is monotone", None, "no knob declared (PolicyConfig.knob): match refuses this policy"))
    else:
        vals = list(values) if values is not None else knob_values(knob)
        nfes = [_nfe(kit.generate(a, kit.config(**{knob.field: v})).calls) for v in vals]
        pairs = list(zip(nfes, nfes[1:]))
        down = knob.more_compute == "lower"  # raising a "lower" knob must not add compute
        ok = all(y <= x for x, y in pairs) if down else all(y >= x for x, y in pairs)
        shown = ", ".join(f"{knob.field}={v:g}: {n:g}" for v, n in zip(vals, nfes))
        add(Check("the knob is monotone", ok if knob.monotone else None,
                  f"NFE {shown}" + ("" if knob.monotone else " (declared not monotone: match scans)")))


def _check_7(kit: Kit, steps, add, ref, branches, knob, never_reuse, values) -> None:
    """A declared fixed schedule is fixed: the same computed calls for two prompts."""
    a, b = PROMPTS
    config = kit.config()
    if not config.fixed_schedule():
        add(Check("a fixed schedule is fixed", None, "not declared (its calls may depend on the inputs)"))
        return
    computed = [[(c.branch, c.step) for c in kit.generate(p, kit.config()).calls if c.computed] for p in (a, b)]
    add(Check("a fixed schedule is fixed", computed[0] == computed[1],
              f"{len(computed[0])} computed calls for both prompts" if computed[0] == computed[1] else
              f"computed calls differ between two prompts ({len(computed[0])} vs {len(computed[1])}): the policy "
              f"declares fixed_schedule() but its decisions depend on the inputs"))


_CHECKS = [
    ("never-reuse reproduces the reference bit for bit", _check_1),
    ("the first call of every branch computes", _check_2),
    ("NFE and the trace are counted", _check_3),
    ("branches are independent", _check_4),
    ("no state leaks between videos", _check_5),
    ("the knob is monotone", _check_6),
    ("a fixed schedule is fixed", _check_7),
]


def assert_conforms(policy: str, **kwargs) -> Report:
    """pytest helper: run :func:`check_policy` and fail with every failed check's line."""
    report = check_policy(policy, **kwargs)
    if not report.ok:
        raise AssertionError(f"{report.policy} on {report.model}:\n" + "\n".join(report.lines()))
    return report
