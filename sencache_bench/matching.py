"""Equal-budget comparison: tune each policy's budget knob to a target NFE, then run it on the evaluation prompts.

For a spec and a target fraction F, the target is T = F x steps computed calls per CFG branch. With g(v) the
mean over the tuning videos of the NFE per branch at knob value v (the policy's
:class:`~sencache_bench.policies.base.Knob`), ``match`` picks, among the values it tried, the one with g(v)
nearest to T under g(v) <= T + 1: NFE is a step function of v, so T itself may be out of reach, and one
step over is the most a matched point may spend. The evaluation prompts then run at that value through the
:class:`~sencache_bench.runner.Runner` (references shared, records resumable), each record carrying
``match: {target_nfe, knob, value, tuned_nfe, tune_prompts, ...}``.

The search, on a knob declared monotone: g at both ends of the range (a threshold knob's upper end is
widened, x4 at most three times, while it still computes more than T + 1 and the NFE still falls), then
bisection of the bracket [a, b] with g(a) <= T < g(b) (a on the less-compute side) until the best value is
within ``tol`` of T, the bracket is one integer (or 1e-4 of the range) wide, or ``max_evals`` values were
tried. An integer knob >= 1 is halved on a log scale (NFE goes as steps / value for a period such as static's
``every``). Values are kept per spec (and on disk, :class:`TuningStore`), so a second target starts from the
brackets the first one left. When the values tried disagree with the declared direction, the result says so
(the pick is still the nearest value tried). A knob declared non-monotone is scanned at ``scan`` evenly
spaced values instead.

``by="flops"`` matches FLOPs instead: g(v) = steps x FLOPs(v) / FLOPs(uncached) of the transformer per tuning
video, without the attention matmuls (the papers' convention), so a policy whose computed calls drop tokens
(SemCache's TMM) or whose reused calls still run embeddings and head is matched on what its denoiser spends
(text encoder and VAE cost the same cached or not, so they are left out).

Tuning prompts default to the model's calibration prompts (``ModelEntry.calibration_prompts``, else
:data:`~sencache_bench.calibration.sencache.CALIBRATION_PROMPTS`), on the spec's first seed; they never overlap
the evaluation prompts.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

from .errors import BenchError, SpecError
from .knob_search import ONE_STEP, Search, _norm, is_monotone, pick, search_knob  # noqa: F401  (re-exported)
from .policies.base import Knob
from .results.store import read_json, write_json
from .runner import Runner, Session, _nfe_summary, check_output_dir, price
from .spec import REPO_ROOT, ResolvedSpec, load_source, sampling_dict

Log = Callable[[str], None]
Progress = Callable[[str, str, int, 'int | None'], None]  # (label, phase, done, total)
Source = Path | str | Mapping  # a spec file, or (Python API) YAML text or a dict: what spec.load_source reads
BY = ("nfe", "flops")
FLOPS_KEY = "transformer_no_attn"  # the denoiser's: text encoder and VAE cost the same cached or not


def yaml_number(value: float) -> str:
    """``value`` as YAML reads it back as a number (PyYAML takes ``1e-05`` for a string, ``1.0e-05`` not)."""
    text = repr(value)
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text


# -- measuring g(v) on a model ---------------------------------------------------------------------
def _shareable(session: Session, spec: ResolvedSpec) -> bool:
    old = session.spec
    return (old.model_identity() == spec.model_identity() and old.device == spec.device
            and old.sampling.shift == spec.sampling.shift and old.family.name == spec.family.name)


class SessionPool:
    """One loaded pipeline handed from runner to runner while model, device and scheduler agree."""

    def __init__(self):
        self.session: Session | None = None

    def runner(self, spec: ResolvedSpec, force: bool = False, log: Log = print) -> Runner:
        runner = Runner(spec, force=force, log=log)
        if self.session is not None and _shareable(self.session, spec):
            self.session.spec = spec
            runner._session = self.session
        else:
            self.session = runner.session
        return runner


def normal_prompt(text: str) -> str:
    """A prompt as the overlap check compares it: case-folded, whitespace collapsed, trailing punctuation stripped,
    so "A  quiet library." is the evaluation prompt "a quiet library" (a tuned budget would flatter it as much)."""
    text = re.sub(r"\s+", " ", text.casefold()).strip()
    while text and (text[-1].isspace() or unicodedata.category(text[-1]).startswith("P")):
        text = text[:-1]
    return text


def tuning_prompts(spec: ResolvedSpec, file: Path | None = None) -> tuple[list[str], str]:
    """(prompts, where they come from): ``file``'s, else the model's calibration prompts; never evaluation ones
    (compared as :func:`normal_prompt` writes them)."""
    from .calibration.sencache import calibration_prompts
    from .prompts import load_prompts

    if file is not None:
        texts, source = [p.text for p in load_prompts(str(file), search=[Path.cwd(), REPO_ROOT])], str(file)
    else:
        texts = list(calibration_prompts(spec))
        source = f"calibration prompts of {spec.model_name}"
    evaluation = {normal_prompt(p.text) for p in spec.prompts}
    shared = sorted({t for t in texts if normal_prompt(t) in evaluation})
    if shared:
        raise SpecError(f"--tune-prompts: {len(shared)} tuning prompt(s) are also evaluation prompts (e.g. "
                        f"{shared[0]!r}); a budget tuned on the evaluation prompts flatters the policy: give a "
                        f"prompt file disjoint from the spec's prompts")
    return texts, source


class Tuner:
    """g(v) for one spec: the tuning prompts generated at knob value v (no references written, nothing decoded or
    scored; a policy with a fixed schedule on its first tuning video only, as its calls do not depend on it)."""

    def __init__(self, source: Source, overrides: list[str], knob: Knob, prompts: list[str], seeds: list[int],
                 pool: SessionPool, by: str = "nfe", log: Log = print, on_generation: Callable[[], None] = lambda: None):
        self.source, self.overrides, self.knob = source, list(overrides), knob
        self.prompts, self.seeds, self.pool, self.by, self.log = prompts, seeds, pool, by, log
        self.on_generation = on_generation
        self._parts: dict[str, dict] = {}  # prompt -> FLOP parts (by="flops")
        self._ref: dict[tuple[str, int], float] = {}  # (prompt, seed) -> uncached FLOPs (by="flops")

    def spec_at(self, value: float) -> ResolvedSpec:
        return load_source(self.source, self.overrides + [f"policy.{self.knob.field}={yaml_number(value)}"])

    def __call__(self, value: float) -> float:
        spec = self.spec_at(value)
        runner = self.pool.runner(spec, log=self.log)
        runner.prepare_policy()
        session = runner.session
        values = []
        for text in self.prompts[:1] if spec.policy.fixed_schedule() else self.prompts:  # the same calls on any
            session.warm_up(text)
            for seed in self.seeds:
                gen = session.generate(text, seed, policy=spec.policy, output_type="latent")  # calls, not frames
                self.on_generation()
                if self.by == "nfe":
                    values.append(_nfe_summary(gen.calls)["nfe"])
                else:
                    values.append(spec.sampling.steps * self._flops(runner, text, seed, gen.calls)
                                  / self._uncached(session, text, seed))
        return fmean(values)

    def _flops(self, runner: Runner, text: str, seed: int, calls: list) -> float:
        if text not in self._parts:
            self._parts[text] = runner.session.count_flops(text, seed)
        parts = self._parts[text]
        if hasattr(runner.spec.policy, "price_parts"):
            parts = runner.spec.policy.price_parts(runner.session, parts, calls)
        return price(parts, calls)[FLOPS_KEY]

    def _uncached(self, session: Session, text: str, seed: int) -> float:
        if (text, seed) not in self._ref:
            gen = session.generate(text, seed, policy=None, output_type="latent")
            self._ref[(text, seed)] = price(self._parts[text], gen.calls)[FLOPS_KEY]
        return self._ref[(text, seed)]


class TuningStore:
    """Values already measured for one spec, kept in ``<output_dir>/match/tuning.json`` so that a rerun (or a
    second target) does not generate them again. Keyed by what decides g(v) besides the code and the contents of
    the files a policy names (profiles, coefficients): model, sampling, the policy's other fields, the knob, the
    tuning prompts and seeds. ``fresh`` (``--force``): ignore what is kept, after a change of code or files.
    ``prior``: a tuning file kept from an earlier run (``match --tuned FILE``, e.g. the one shipped for bench-t2v),
    read only: its values for the same key count as measured, and records name it as their source."""

    def __init__(self, spec: ResolvedSpec, knob: Knob, tune_meta: dict, fresh: bool = False,
                 prior: Path | None = None):
        from .runner import _short_hash

        others = {k: v for k, v in spec.policy.model_dump(mode="json").items() if k != knob.field}
        sampling = {k: v for k, v in sampling_dict(spec.sampling).items() if k != "seeds"}
        self.key = _short_hash({"model": spec.model_identity(), "sampling": sampling, "policy": others,
                                "knob": knob.field, "tune": tune_meta})
        self.knob = knob
        self.path = spec.output_dir / "match" / "tuning.json"
        self.data = {} if fresh or not self.path.is_file() else read_json(self.path)
        self.prior = prior
        self.prior_data = {} if fresh or prior is None else read_tuning(prior)

    def memo(self, by: str) -> dict[float, float]:
        kept = {**self.prior_data.get(self.key, {}).get(by, {}), **self.data.get(self.key, {}).get(by, {})}
        return {_norm(self.knob, float(v)): g for v, g in kept.items()}

    def source(self, by: str, value: float) -> str:
        """Where g(value) came from: measured by this output folder's runs, or the prior file."""
        own = {_norm(self.knob, float(v)) for v in self.data.get(self.key, {}).get(by, {})}
        return "measured" if value in own or self.prior is None else str(self.prior)

    def recording(self, by: str, measure: Callable[[float], float]) -> Callable[[float], float]:
        def measured(value: float) -> float:
            g = measure(value)
            self.data.setdefault(self.key, {}).setdefault(by, {})[str(value)] = g
            write_json(self.path, self.data)
            return g
        return measured


def read_tuning(path: Path) -> dict:
    """A tuning file (``<output>/match/tuning.json``, or one kept elsewhere), checked: one clear line if not."""
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise BenchError(f"--tuned {path}: no such file (it is an earlier run's <output>/match/tuning.json)") from None
    except (OSError, ValueError) as err:
        raise BenchError(f"--tuned {path}: unreadable ({err}); remake it with `sencache-bench match ... --tune-only`") \
            from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise BenchError(f"--tuned {path}: not a tuning file (a mapping of spec keys to measured values)")
    return data


# -- the command ---------------------------------------------------------------------------------
@dataclass
class Target:
    by: str  # "nfe" or "flops"
    fraction: float

    def label(self) -> str:
        return f"{self.by} {self.fraction:g}"


@dataclass
class MatchPoint:
    spec_path: Source  # the spec as given: its file, or (Python API) a YAML string or a dict
    policy: str
    target: Target
    search: Search
    spec: ResolvedSpec | None = None  # the spec at the picked value (None: unreachable)
    records: list[Path] = field(default_factory=list)  # written by this invocation
    evaluation: list[Path] = field(default_factory=list)  # every evaluation record of the point, new or kept


def parse_targets(nfe: list[float], flops: list[float]) -> list[Target]:
    targets = [Target("nfe", f) for f in nfe] + [Target("flops", f) for f in flops]
    if not targets:
        raise BenchError("give at least one target: --nfe F (a fraction of the steps, e.g. 0.5) or --flops F")
    for t in targets:
        if not 0 < t.fraction <= 1:
            raise BenchError(f"--{t.by} {t.fraction:g}: a target is a fraction of the uncached budget, in (0, 1]")
    return targets


def _label(source: Source, i: int) -> str:
    """How errors name a spec: its file, or its place in the list (a dict or YAML text)."""
    return str(source) if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source) else f"specs[{i}]"


def resolve_specs(sources: list[Source], overrides: list[str]) -> list[tuple[Source, ResolvedSpec, Knob]]:
    """Every spec resolved and checked before anything runs: a knob each, one model and sampling for all."""
    out = []
    for i, source in enumerate(sources):
        path = _label(source, i)
        spec = load_source(source, overrides)
        check_output_dir(spec.output_dir)
        knob = type(spec.policy).knob
        if knob is None:
            raise BenchError(f"{path}: policy {spec.policy.name} declares no budget knob (PolicyConfig.knob), so "
                             f"match has nothing to tune; run it with `sencache-bench run`, or declare its knob")
        out.append((source, spec, knob))
    first = out[0][1]
    labels = [_label(source, i) for i, (source, _, _) in enumerate(out)]
    for path, (_, spec, _) in zip(labels[1:], out[1:]):
        same = (spec.model_identity() == first.model_identity()
                and sampling_dict(spec.sampling) == sampling_dict(first.sampling))
        if not same:
            raise BenchError(f"{path}: model or sampling differs from {labels[0]}; equal budgets compare one model "
                             f"at one sampling: align the specs (or --set the field for all)")
        if [p.text for p in spec.prompts] != [p.text for p in first.prompts]:
            raise BenchError(f"{path}: its evaluation prompts differ from {labels[0]}'s; use one prompt set")
    return out


def _add_target(path: Path, match: dict) -> None:
    """An existing record that serves another target too: note the target in its ``match`` (idempotent)."""
    rec = read_json(path)
    own = rec.get("match")
    if own is None:
        rec["match"] = match
    else:
        entry = {k: match[k] for k in ("by", "target_fraction", "target_nfe", "tuned_nfe")}
        seen = [{k: m.get(k) for k in entry} for m in [own] + own.get("also", [])]
        if entry in seen:
            return
        own.setdefault("also", []).append(entry)
    write_json(path, rec)


def run_match(specs: list[Source], targets: list[Target], overrides: list[str] = (), tune_file: Path | None = None,
              force: bool = False, tol: float = 0.1, max_evals: int = 10, log: Log = print,
              progress: Progress | None = None, tuned: Path | None = None,
              tune_only: bool = False) -> list[MatchPoint]:
    """Tune every spec's knob to every target, then run its evaluation prompts at the value found (``tune_only``:
    stop after tuning). ``tuned``: a kept tuning file whose values for the same specs are not measured again.
    ``progress(label, phase, done, total)``: after every tuning generation (total None until the search ends) and
    every evaluation record."""
    progress = progress or (lambda *a: None)
    overrides = list(overrides)
    resolved = resolve_specs(list(specs), overrides)
    prompts, source = tuning_prompts(resolved[0][1], tune_file)
    seeds = [resolved[0][1].sampling.seeds[0]]
    tune_meta = {"source": source, "count": len(prompts) * len(seeds), "seeds": seeds, "prompts": prompts}
    pool = SessionPool()
    points: list[MatchPoint] = []
    for path, spec, knob in resolved:
        store = TuningStore(spec, knob, tune_meta, fresh=force, prior=tuned)
        memos: dict[str, dict[float, float]] = {by: store.memo(by) for by in BY}
        made = {"n": 0, "label": ""}

        def generated() -> None:
            made["n"] += 1
            progress(made["label"], "tuning", made["n"], None)

        tuner = {by: Tuner(path, overrides, knob, prompts, seeds, pool, by=by, log=log, on_generation=generated)
                 for by in BY}
        ran: dict[float, list[Path]] = {}  # value -> records written by this invocation
        for target in targets:
            steps = spec.sampling.steps
            goal = target.fraction * steps
            videos = len(seeds) if spec.policy.fixed_schedule() else len(prompts) * len(seeds)
            log(f"{spec.policy.name}: tuning {knob.field} to {target.label()} = {goal:.2f} of {steps} steps on "
                f"{videos} tuning video(s) ({source}" + ("; a fixed schedule" if videos < len(prompts) else "") + ")")
            made.update(n=0, label=f"{spec.policy.name} @ {target.label()}")
            progress(made["label"], "tuning", 0, None)
            found = search_knob(knob, store.recording(target.by, tuner[target.by]), goal, tol=tol,
                                max_evals=max_evals, memo=memos[target.by], log=log)
            progress(made["label"], "tuning", made["n"], made["n"])
            point = MatchPoint(path, spec.policy.name, target, found)
            points.append(point)
            if found.note:
                log(f"{spec.policy.name}: note: {found.note}")
            if found.value is None:
                continue
            log(f"{spec.policy.name}: {knob.field}={found.value} gives {found.achieved:.2f} "
                f"({found.achieved / steps:.3f} of the steps) for the target {goal:.2f}")
            match = {"by": target.by, "target_fraction": target.fraction, "target_nfe": goal, "knob": knob.field,
                     "value": found.value, "tuned_nfe": found.achieved, "tune_prompts": tune_meta,
                     "monotone": found.monotone, "probes": [list(p) for p in found.probes],
                     "tuned_from": store.source(target.by, found.value)}
            if found.note:
                match["note"] = found.note
            point.spec = tuner[target.by].spec_at(found.value)
            if tune_only:
                continue
            runner = pool.runner(point.spec, force=force and found.value not in ran, log=log)
            runner.record_extra = {"match": match}
            todo = runner.pending() if found.value not in ran else []
            for path_done in {runner.record_path(p, s) for p, s in runner.items()} - {
                    runner.record_path(p, s) for p, s in todo}:
                if path_done.exists():
                    _add_target(path_done, match)
            written = {"n": 0}

            def recorded(_i: int, _path: Path, label: str = made["label"], total: int = len(todo)) -> None:
                written["n"] += 1
                progress(label, "evaluation", written["n"], total)

            if todo:
                progress(made["label"], "evaluation", 0, len(todo))
            point.records.extend(runner.run_items(todo, on_done=recorded))
            point.evaluation = [runner.record_path(p, s) for p, s in runner.items()]
            ran.setdefault(found.value, []).extend(point.records)
    return points


def evaluated(point: MatchPoint) -> tuple[float, int] | None:
    """(mean, videos) of the point's evaluation records on disk, in the target's unit: NFE per branch, or for a
    FLOPs target steps x transformer FLOPs / uncached (no attention), as the tuning measured it."""
    values = []
    for path in point.evaluation:
        try:
            rec = read_json(path)
            if point.target.by == "nfe":
                values.append(float(rec["nfe"]))
            else:
                values.append(rec["sampling"]["steps"] * rec["flops"][FLOPS_KEY]
                              / rec["reference"]["flops"][FLOPS_KEY])
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            continue  # a missing or damaged record: the run reported it
    return (fmean(values), len(values)) if values else None


def summary(points: list[MatchPoint]) -> list[str]:
    """One line per (policy, target): the value found, or why none; then a warning line for a point whose
    evaluation mean is more than one step from its target (tuning prompts are not the evaluation prompts, and a
    knob that cannot land near the target leaves its rows at another budget than the rest of the group)."""
    lines = []
    for p in points:
        s = p.search
        head = f"{p.policy} @ {p.target.label()} (target {s.target:.2f}):"
        if s.value is None:
            lines.append(f"{head} {s.note}")
            continue
        flag = "" if s.monotone else " (not monotone)"
        lines.append(f"{head} {p.spec.policy.knob.field}={s.value} -> tuned {s.achieved:.2f}{flag}, "
                     f"{len(p.records)} new record(s)")
        got = evaluated(p)
        if got is not None and abs(got[0] - s.target) > ONE_STEP + 1e-9:
            unit = "NFE" if p.target.by == "nfe" else "FLOPs in steps"
            lines.append(f"warning: {p.policy} @ {p.target.label()}: evaluation mean {unit} {got[0]:.2f} over "
                         f"{got[1]} video(s) is {got[0] - s.target:+.2f} from the target {s.target:.2f}, more than "
                         f"one step: its rows do not compare at that budget")
    return lines
