"""Our policies against the peers' on the same rule, paired in time: wall time per policy and the ratio.

    python benchmarks/policy_overhead.py [--prompts 3] [--rounds 2] [--steps 30]

Two pairs on bench-t2v (the project's small trained model, CPU), each at one setting where the rules agree:

- ``magcache`` (ours, policies/magcache.py) against diffusers' ``diffusers-magcache``: the same calibrated
  curve (configs/calibrated/bench-t2v_magcache.json), thresh 0.12, K 2, retention 0.2;
- ``fbc`` (the harness's First Block Cache spec) against cache-dit's DBCache F1B0 (``dbcache`` with
  ``Fn_compute_blocks: 1, Bn_compute_blocks: 0``): threshold 0.05 both, cache-dit's warm-up and caps off
  (``max_warmup_steps: 0``, no cached-step limits) so both test every call after the first.

One session (one loaded pipeline, warmed up); per round and prompt the two policies of a pair run back to back,
in alternating order (A B, then B A), so a drift in the machine's speed falls on both. Per policy: the median
wall time of a generation, its NFE (computed calls per branch, mean); per pair: the geometric mean over prompts
and rounds of the paired ratio ours / peer (goal, issue 27: <= 1), and how many calls the two decided alike.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CURVE = str(ROOT / "configs" / "calibrated" / "bench-t2v_magcache.json")
PAIRS = {
    "magcache": ({"name": "magcache", "thresh": 0.12, "max_reuse": 2, "retention": 0.2, "ratios": CURVE},
                 {"name": "diffusers-magcache", "threshold": 0.12, "max_skip_steps": 2, "retention_ratio": 0.2,
                  "ratios": CURVE}),
    "fbc": ({"name": "fbc", "threshold": 0.05},
            {"name": "dbcache", "Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "residual_diff_threshold": 0.05,
             "max_warmup_steps": 0}),
}
PROMPTS = ["a red ball bouncing on green grass", "a quiet library with tall wooden shelves",
           "waves rolling onto a sandy beach at sunset", "a cat walking along a garden fence",
           "city traffic at night with neon signs"]


def resolved(policy: dict, steps: int):
    from sencache_bench.spec import resolve

    return resolve({"model": {"name": "bench-t2v"}, "sampling": {"steps": steps}, "prompts": PROMPTS[:1],
                    "policy": policy, "metrics": ["psnr"], "output": {"dir": "/tmp/policy_overhead"}})


def agreement(a: list, b: list) -> tuple[int, int]:
    """(calls both computed or both reused, calls compared): the two traces, call by call."""
    same = sum(x.computed == y.computed for x, y in zip(a, b))
    return same, min(len(a), len(b))


def geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=3, help=f"prompts per round (at most {len(PROMPTS)})")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--pairs", nargs="*", default=list(PAIRS), choices=list(PAIRS))
    args = ap.parse_args(argv)
    from sencache_bench.runner import Session

    specs = {name: (resolved(ours, args.steps), resolved(peer, args.steps)) for name, (ours, peer) in PAIRS.items()
             if name in args.pairs}
    session = Session(next(iter(specs.values()))[0])
    session.warm_up(PROMPTS[0])
    for ours, peer in specs.values():  # each policy's first use (imports, curve loading), untimed
        for spec in (ours, peer):
            session.generate(PROMPTS[0], 0, policy=spec.policy)
    times: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {name: [] for name in specs}
    nfe: dict[str, list[float]] = {}
    agree: dict[str, list[int]] = {name: [0, 0] for name in specs}
    for r in range(args.rounds):
        for p, prompt in enumerate(PROMPTS[: args.prompts]):
            for name, (ours, peer) in specs.items():
                order = (ours, peer) if (r + p) % 2 == 0 else (peer, ours)
                gens = {}
                for spec in order:
                    gen = session.generate(prompt, 0, policy=spec.policy)
                    gens[spec.policy.name] = gen
                    times.setdefault(spec.policy.name, []).append(gen.latency["total_s"])
                    per_branch = {}
                    for c in gen.calls:
                        per_branch[c.branch] = per_branch.get(c.branch, 0) + c.computed
                    nfe.setdefault(spec.policy.name, []).append(statistics.fmean(per_branch.values()))
                a, b = gens[ours.policy.name], gens[peer.policy.name]
                ratios[name].append(a.latency["total_s"] / b.latency["total_s"])
                same, n = agreement(a.calls, b.calls)
                agree[name][0] += same
                agree[name][1] += n
    report = {}
    for name, (ours, peer) in specs.items():
        o, q = ours.policy.name, peer.policy.name
        ratio = geomean(ratios[name])
        report[name] = {"ours": o, "peer": q, "ours_s": statistics.median(times[o]),
                        "peer_s": statistics.median(times[q]), "nfe_ours": statistics.fmean(nfe[o]),
                        "nfe_peer": statistics.fmean(nfe[q]), "ratio": ratio,
                        "ratio_range": [min(ratios[name]), max(ratios[name])],
                        "same_decisions": f"{agree[name][0]}/{agree[name][1]}"}
        print(f"{o:>10} {report[name]['ours_s']:.3f} s (NFE {report[name]['nfe_ours']:.1f})  vs  "
              f"{q:<18} {report[name]['peer_s']:.3f} s (NFE {report[name]['nfe_peer']:.1f}): ours / peer = "
              f"{ratio:.3f} [{min(ratios[name]):.3f}, {max(ratios[name]):.3f}] over {len(ratios[name])} pairs, "
              f"same decisions {report[name]['same_decisions']}: {'goal met' if ratio <= 1 else 'above 1'}")
    return report


if __name__ == "__main__":
    main()
