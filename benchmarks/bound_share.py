"""How much of its own Amdahl bound each built-in policy reaches on bench-t2v at 15 of 30 calls (issue 27).

    python benchmarks/bound_share.py [--prompts 3] [--policies sencache teacache ...] [--tuned FILE]

Each policy runs at the knob value ``make run`` picks for NFE 0.5 of 30 steps: the ``match`` search replayed on
the kept tuning file (configs/calibrated/bench-t2v_tuning.json; nothing is generated to tune). One session (one
loaded pipeline, warmed up, each policy's first use untimed); per prompt the policies run in a rotating order,
each between two uncached baselines (B P1 B P2 ... B), so a drift in the machine's speed falls on both sides of
every ratio. Per video, as a record would carry it (results/overhead.py does the arithmetic, as ``table --layout
overhead`` does): speedup = mean of the two bracketing baselines / the policy's time; Amdahl bound from the
baselines' phase split and the FLOPs priced along the call trace (stages/pricing.py); lost = T_policy -
T_baseline / bound; decide and hook time summed over the video's calls (``decide_s``, ``hook_s`` of the trace).
The rest (lost - decide - hooks) is split by the call trace's per-call seconds, against the bracketing baselines
with the denoising scaled by r = policy FLOPs / uncached FLOPs, as the bound scales it:

- ``calls``: time inside transformer calls beyond r times the baselines' (a reused call's embeddings and head
  and the hooks' own bookkeeping, fewer-token calls slower than their FLOPs); split into ``reused`` and
  ``computed`` calls, each against the baselines' time per FLOP (not for policies priced by a counted replay);
- ``loop``: time between the calls beyond r times the baselines' (scheduler steps, CFG combination: they run at
  every step, cached or not, so they do not shrink as the bound assumes);
- ``fixed``: text encoding and decoding against the baselines' (noise: the policy does not touch them).

Printed per policy: speedup, bound, share of bound (geometric means over prompts; the range over prompts shows
the noise), NFE, those parts in ms per video, decide ms per call, and whether the share reaches 0.95.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: the seven policies of ``make run`` that issue 27 measured (their specs, configs/bench_<name>.yaml)
POLICIES = ["static", "magcache", "fbc", "sencache", "dbcache", "semcache", "teacache"]
TUNED = ROOT / "configs" / "calibrated" / "bench-t2v_tuning.json"
GOAL = 0.95


def tuned_spec(path: Path, overrides: list[str], tuned: Path, fraction: float):
    """The spec at the knob value ``match --nfe fraction --tuned tuned`` picks, from the kept values only."""
    from sencache_bench.errors import BenchError
    from sencache_bench.matching import TuningStore, resolve_specs, tuning_prompts, yaml_number
    from sencache_bench.knob_search import search_knob
    from sencache_bench.spec import load_source

    [(_, spec, knob)] = resolve_specs([path], overrides)
    prompts, source = tuning_prompts(spec)
    seeds = [spec.sampling.seeds[0]]
    meta = {"source": source, "count": len(prompts) * len(seeds), "seeds": seeds, "prompts": prompts}
    store = TuningStore(spec, knob, meta, prior=tuned)

    def unmeasured(value: float) -> float:
        raise BenchError(f"{path.name}: {knob.field}={value} is not in {tuned}; run `make run` (or `match "
                         f"--tune-only`) to measure it")

    found = search_knob(knob, unmeasured, fraction * spec.sampling.steps, memo=store.memo("nfe"))
    return load_source(path, overrides + [f"policy.{knob.field}={yaml_number(found.value)}"]), found


def record_of(gen, base: list, ref_flops: float, flops: float) -> dict:
    """The fields of a run record that results/overhead.py and results/speedup.py read, for one video."""
    phases = {k: statistics.fmean(b.latency[k] for b in base) for k in ("total_s", "denoise_s")}
    return {"timing": {"speedup": phases["total_s"] / gen.latency["total_s"], "steady": True},
            "latency": {"total_s": gen.latency["total_s"]},
            "baseline": {"latency_s": phases["total_s"], "phases": phases},
            "reference": {"flops": {"transformer": ref_flops}}, "flops": {"transformer": flops},
            "trace": [c.to_json() for c in gen.calls]}


def rest_split(gen, base: list, ratio: float, call_flops: list[int] | None, full: int) -> dict:
    """Seconds per video beyond the ideal (r = ``ratio``) inside the calls, between them, and in the fixed phases;
    with the decide and hook seconds they add up to the record's lost time exactly. With each call's FLOPs
    (``call_flops``; ``full``: an uncached call's), ``calls`` splits into reused and computed calls, each against
    the baselines' mean call time scaled by its own FLOPs (the two add up to ``calls``)."""
    def parts(g) -> tuple[float, float, float]:
        calls = sum(c.seconds for c in g.calls)
        return g.latency["total_s"] - g.latency["denoise_s"], calls, g.latency["denoise_s"] - calls

    fixed, calls, loop = parts(gen)
    b_fixed, b_calls, b_loop = (statistics.fmean(x) for x in zip(*(parts(g) for g in base)))
    own = [c.seconds - (c.decide_s or 0.0) - (c.hook_s or 0.0) for c in gen.calls]
    out = {"calls_s": sum(own) - b_calls * ratio, "loop_s": loop - b_loop * ratio, "fixed_s": fixed - b_fixed}
    if call_flops is not None:
        per_flop = statistics.fmean(b_calls / len(g.calls) for g in base) / full
        excess = [s - per_flop * f for s, f in zip(own, call_flops)]
        out["reused_s"] = sum(e for e, c in zip(excess, gen.calls) if not c.computed)
        out["computed_s"] = sum(e for e, c in zip(excess, gen.calls) if c.computed)
    return out


def call_flops(runner, session, prompt, seed: int, parts: dict, calls: list) -> tuple[list[int] | None, int]:
    """(each call's transformer FLOPs as the trace prices it, with the policy's decision FLOPs; an uncached call's):
    stages/pricing.py's ``price`` call by call. None for a policy priced by a counted replay."""
    from sencache_bench.measure.flops import CallCost

    policy = runner.spec.policy
    full = CallCost.from_dict(parts["call"]).full[0]
    if policy.priced_by_replay():
        return None, full
    parts = {**parts, "decision": runner.flops.decision(session, prompt, seed)}
    if hasattr(policy, "price_parts"):
        parts = policy.price_parts(session, parts, calls)
    cost, decision = CallCost.from_dict(parts["call"]), (parts.get("decision") or [0])[0]
    return [cost.price(c.forward_ran, c.blocks_ran, getattr(c, "tokens", None))[0] + decision for c in calls], full


def geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=3, help="evaluation prompts (prompts/bench.yaml), seed 0")
    ap.add_argument("--policies", nargs="*", default=POLICIES, help="configs/bench_<name>.yaml specs")
    ap.add_argument("--tuned", type=Path, default=TUNED)
    ap.add_argument("--nfe", type=float, default=0.5, help="target NFE, a fraction of the steps")
    args = ap.parse_args(argv)
    from sencache_bench.matching import SessionPool
    from sencache_bench.results.overhead import overhead_row
    from sencache_bench.results.speedup import amdahl_bound
    from sencache_bench.stages.pricing import price, run_flops

    os.chdir(ROOT)  # the specs name their calibrated files relative to the repository root
    out = tempfile.mkdtemp(prefix="bound_share-")
    overrides = [f"output.dir={out}"]
    pool, runners, found = SessionPool(), {}, {}
    quiet = lambda _line: None  # noqa: E731
    for name in args.policies:
        spec, found[name] = tuned_spec(ROOT / "configs" / f"bench_{name}.yaml", overrides, args.tuned, args.nfe)
        runners[name] = pool.runner(spec, log=quiet)
        runners[name].prepare_policy()
    first = runners[args.policies[0]]
    session = first.session
    items = first.items()[: args.prompts]
    session.warm_up(items[0][0].text)
    parts = first.flops_parts(*items[0])
    for name, runner in runners.items():  # first use of each policy untimed (imports, calibration files, kernels)
        session.spec = runner.spec
        session.generate(items[0][0].text, items[0][1], policy=runner.spec.policy, output_type="latent")
    records: dict[str, list[dict]] = {name: [] for name in runners}
    nfe: dict[str, list[float]] = {name: [] for name in runners}
    rests: dict[str, list[dict]] = {name: [] for name in runners}
    for p, (prompt, seed) in enumerate(items):
        order = args.policies[p % len(args.policies):] + args.policies[: p % len(args.policies)]
        before = session.generate(prompt.text, seed)
        ref_flops = price(parts, before.calls)["transformer"]
        for name in order:
            runner = runners[name]
            session.spec = runner.spec
            gen = session.generate(prompt.text, seed, policy=runner.spec.policy)
            after = session.generate(prompt.text, seed)
            priced = run_flops(runner.flops, session, prompt, seed, parts, gen.calls)
            flops = priced["flops"]["transformer"]
            records[name].append(record_of(gen, [before, after], ref_flops, flops))
            rests[name].append(rest_split(gen, [before, after], flops / ref_flops,
                                          *call_flops(runner, session, prompt, seed, parts, gen.calls)))
            nfe[name].append(priced["nfe"])
            before = after
    report = {}
    base_s = statistics.fmean(r["baseline"]["latency_s"] for recs in records.values() for r in recs)
    print(f"bench-t2v, NFE {args.nfe:g} of {session.spec.sampling.steps}, {len(items)} prompt(s), paired in time; "
          f"uncached {base_s:.3f} s per video. ms per video: lost = decide + hooks + calls (reused + comp.) + loop + "
          f"fixed")
    print(f"{'policy':<10} {'knob':<32} {'NFE':>5} {'speedup':>8} {'bound':>6} {'share':>6} {'range':>13} "
          f"{'lost':>6} {'decide':>6} {'hooks':>6} {'calls':>6} {'reused':>6} {'comp.':>6} {'loop':>6} {'fixed':>6} {'ms/dec':>7}  goal")
    fmt = lambda v, w=6, d=1: " " * w if v is None else f"{v:{w}.{d}f}"  # noqa: E731
    for name, recs in records.items():
        speedup = geomean([r["timing"]["speedup"] for r in recs])
        bound = geomean([amdahl_bound(r) for r in recs])
        row = overhead_row(recs, speedup, bound)
        shares = [r["timing"]["speedup"] / amdahl_bound(r) for r in recs]
        calls = statistics.fmean(len(r["trace"]) for r in recs)
        split = {k: 1e3 * statistics.fmean(s[k] for s in rests[name]) if k in rests[name][0] else None
                 for k in ("calls_s", "reused_s", "computed_s", "loop_s", "fixed_s")}
        per_call = None if row["decide_ms"] is None else row["decide_ms"] / calls
        report[name] = {"knob": f"{runners[name].spec.policy.knob.field}={found[name].value}",
                        "nfe": statistics.fmean(nfe[name]), "speedup": speedup, "bound": bound,
                        "share": row["reached"], "share_range": [min(shares), max(shares)],
                        "lost_ms": row["lost_ms"], "decide_ms": row["decide_ms"], "hook_ms": row["hook_ms"],
                        "calls_ms": split["calls_s"], "reused_ms": split["reused_s"],
                        "computed_ms": split["computed_s"], "loop_ms": split["loop_s"], "fixed_ms": split["fixed_s"],
                        "decide_ms_per_call": per_call, "goal_met": row["reached"] >= GOAL}
        r = report[name]
        print(f"{name:<10} {r['knob']:<32} {r['nfe']:5.1f} {speedup:7.3f}x {bound:5.2f}x {r['share']:6.3f} "
              f"[{min(shares):.3f},{max(shares):.3f}] {fmt(r['lost_ms'])} {fmt(r['decide_ms'])} {fmt(r['hook_ms'])} "
              f"{fmt(r['calls_ms'])} {fmt(r['reused_ms'])} {fmt(r['computed_ms'])} {fmt(r['loop_ms'])} {fmt(r['fixed_ms'])} {fmt(per_call, 7, 3)}  "
              f"{'met' if r['goal_met'] else 'below'}")
    return report


if __name__ == "__main__":
    main()
