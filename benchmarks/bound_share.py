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
Printed per policy: speedup, bound, share of bound (geometric means over prompts), NFE, decide_s and hook_s per
video and per call, and whether the share reaches 0.95.
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
    for p, (prompt, seed) in enumerate(items):
        order = args.policies[p % len(args.policies):] + args.policies[: p % len(args.policies)]
        before = session.generate(prompt.text, seed)
        ref_flops = price(parts, before.calls)["transformer"]
        for name in order:
            runner = runners[name]
            session.spec = runner.spec
            gen = session.generate(prompt.text, seed, policy=runner.spec.policy)
            after = session.generate(prompt.text, seed)
            priced = run_flops(runner, session, prompt, seed, parts, gen.calls)
            records[name].append(record_of(gen, [before, after], ref_flops, priced["flops"]["transformer"]))
            nfe[name].append(priced["nfe"])
            before = after
    report = {}
    base_s = statistics.fmean(r["baseline"]["latency_s"] for recs in records.values() for r in recs)
    print(f"bench-t2v, NFE {args.nfe:g} of {session.spec.sampling.steps}, {len(items)} prompt(s), paired in time; "
          f"uncached {base_s:.3f} s per video; ms per video (dec/call: decide ms per call)")
    print(f"{'policy':<10} {'setting':<34} {'NFE':>5} {'speedup':>8} {'bound':>6} {'share':>6} {'range':>13} "
          f"{'lost':>7} {'decide':>7} {'hooks':>7} {'rest':>7} {'dec/call':>8}  goal")
    for name, recs in records.items():
        speedup = geomean([r["timing"]["speedup"] for r in recs])
        bound = geomean([amdahl_bound(r) for r in recs])
        row = overhead_row(recs, speedup, bound)
        shares = [r["timing"]["speedup"] / amdahl_bound(r) for r in recs]
        calls = statistics.fmean(len(r["trace"]) for r in recs)
        per_call = None if row["decide_ms"] is None else row["decide_ms"] / calls
        report[name] = {"setting": runners[name].spec.policy.setting(), "nfe": statistics.fmean(nfe[name]),
                        "speedup": speedup, "bound": bound, "share": row["reached"],
                        "share_range": [min(shares), max(shares)], "lost_ms": row["lost_ms"],
                        "decide_ms": row["decide_ms"], "hook_ms": row["hook_ms"], "rest_ms": row["rest_ms"],
                        "decide_ms_per_call": per_call, "goal_met": row["reached"] >= GOAL}
        r = report[name]
        fmt = lambda v: "" if v is None else f"{v:7.1f}"  # noqa: E731
        knob = found[name]
        print(f"{name:<10} {runners[name].spec.policy.knob.field + '=' + str(knob.value):<34} {r['nfe']:5.1f} "
              f"{speedup:7.3f}x {bound:5.2f}x {r['share']:6.3f} [{min(shares):.3f},{max(shares):.3f}] "
              f"{fmt(r['lost_ms'])} {fmt(r['decide_ms'])} {fmt(r['hook_ms'])} {fmt(r['rest_ms'])} "
              f"{'' if per_call is None else f'{per_call:8.3f}'}  {'met' if r['goal_met'] else 'below'}")
    return report


if __name__ == "__main__":
    main()
