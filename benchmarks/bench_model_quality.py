"""Print the bench-t2v quality figures (colour, motion, determinism) on held-out and seen prompts.

    .venv/bin/python benchmarks/bench_model_quality.py [--weights DIR] [--seeds 4] [--guidance 3.0]

Held-out prompts use (colour, shape, motion) combinations the transformer never saw in training; seen
prompts use the other 48. The bar (sencache_bench/bench/quality.py): colour >= 90% of videos, moving
>= 80%, still >= 80%, and bit-identical repeats. Exit status 1 when the bar is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from sencache_bench.bench.data import core_combos, core_prompt
    from sencache_bench.bench.quality import QualityReport, evaluate, is_deterministic, load_bench_pipeline
    from sencache_bench.errors import BenchError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="pipeline directory (default: the package's weights)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per prompt")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=8, help="videos generated per pipeline call")
    parser.add_argument("--json", default=None, help="also write the figures and every video's check here")
    parser.add_argument("--verbose", "-v", action="store_true", help="list every video that misses a check")
    args = parser.parse_args(argv)

    try:
        pipe = load_bench_pipeline(args.weights)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    kwargs = dict(steps=args.steps, guidance_scale=args.guidance, batch=args.batch)
    seeds = list(range(args.seeds))
    print(f"bench-t2v quality: {args.steps} steps, guidance {args.guidance}, seeds {seeds}")
    reports, overall = {}, QualityReport()
    for name, held in (("held-out", True), ("seen", False)):
        prompts = [core_prompt(*c) for c in core_combos(held_out=held)]
        start = time.perf_counter()
        report = evaluate(pipe, prompts, seeds, **kwargs)
        per_video = (time.perf_counter() - start) / max(1, len(report.checks))
        reports[name] = report
        overall.checks += report.checks
        print(report.lines(f"{name:8s}")[0] + f" | {per_video:.2f} s/video")
        if args.verbose:
            for c in report.checks:
                if not c.colour_ok or c.motion_ok is False:
                    d = "-" if c.displacement is None else f"({c.displacement[0]:+.1f}, {c.displacement[1]:+.1f})"
                    print(f"    miss: {c.prompt!r} seed {c.seed}: dominant {c.dominant}, displacement {d}")
    overall.deterministic = is_deterministic(pipe, core_prompt(*core_combos(True)[0]), 0, **kwargs)
    print(overall.lines("all     ")[0])
    failures = overall.failures()
    print("PASS: the quality bar is met" if not failures else "FAIL: " + "; ".join(failures))
    if args.json:
        data = {name: {"summary": r.summary(), "checks": [
            {"prompt": c.prompt, "seed": c.seed, "dominant": c.dominant, "colour_ok": c.colour_ok,
             "motion_ok": c.motion_ok, "displacement": None if c.displacement is None else
             [round(float(v), 2) for v in np.asarray(c.displacement)]} for c in r.checks]}
            for name, r in reports.items()}
        data["all"] = {"summary": overall.summary(), "failures": failures}
        with open(args.json, "w") as f:
            json.dump(data, f, indent=2)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
