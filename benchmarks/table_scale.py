"""`table` and `load_results` on a big campaign, against the floor of merely parsing the records' JSON.

    python benchmarks/table_scale.py [--records 20000] [--dir DIR] [--template RECORD.json ...]

Writes ``--records`` synthetic run records (skipped when ``DIR`` already holds that many), shaped like real ones:
each is a copy of a template record (default: two made here by a tiny bench-t2v run, static and SemCache, 30
steps with CFG: 60 calls of trace, per-frame metrics, paired timing), with its policy setting, prompt, seed,
reference key, metrics and timings varied (seeded), as a campaign of 8 settings x N/40 prompts x 5 seeds.
Then, in one run, interleaved (ABC ABC ...), ``--rounds`` times, the median of each:

- floor: read every record file and ``json.loads`` it (nothing else);
- load: :func:`sencache_bench.cli._console.load_results` (what every results command does first);
- table: ``sencache-bench table DIR`` after its imports (the command's function, output discarded): load, the
  timing warnings, aggregate and render (rich).

Prints both ratios to the floor; the goal (issue 27) is both within 3x.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = 8
SEEDS = 5


def tiny_templates(workdir: Path) -> list[dict]:
    """Two real records from bench-t2v (30 steps, CFG), one prompt: a static and a SemCache run."""
    from sencache_bench.runner import Runner
    from sencache_bench.spec import resolve

    out = []
    for policy in ({"name": "static", "every": 2}, {"name": "semcache", "alpha": 0.2, "beta": 0.8}):
        spec = resolve({"model": {"name": "bench-t2v"}, "prompts": ["a red ball rolling on grass"], "policy": policy,
                        "metrics": ["psnr", "ssim"], "output": {"dir": str(workdir)}})
        runner = Runner(spec)
        out.append(json.loads(runner.run_item(*runner.items()[0]).read_text()))
    return out


def synthetic(templates: list[dict], n: int, seed: int = 0):
    """``n`` records varied from the templates: (setting, prompt, seed) unique, values perturbed (seeded)."""
    rng = random.Random(seed)
    prompts = -(-n // (SETTINGS * SEEDS))
    i = 0
    for s in range(SETTINGS):
        base = templates[s % len(templates)]
        for p in range(prompts):
            for sd in range(SEEDS):
                if i == n:
                    return
                rec = copy.deepcopy(base)
                rec["setting"] = f"{base['setting']},variant={s}"
                rec["prompt"], rec["prompt_index"], rec["seed"] = f"prompt {p}", p, sd
                rec["reference"]["key"] = f"ref-{p}-{sd}"
                scale = rng.uniform(0.9, 1.1)
                for m in ("psnr", "ssim", "lpips"):
                    if (rec.get("metrics") or {}).get(m) is not None:
                        rec["metrics"][m] *= rng.uniform(0.95, 1.05)
                t = rec["timing"]
                t["policy_s"] = [x * scale for x in t["policy_s"]]
                t["baseline_s"] = [x * scale * rng.uniform(0.99, 1.01) for x in t["baseline_s"]]
                t["speedup"] = statistics.fmean(t["baseline_s"]) / statistics.median(t["policy_s"])
                rec["latency"]["total_s"] = statistics.median(t["policy_s"])
                rec["baseline"]["latency_s"] = statistics.fmean(t["baseline_s"])
                yield f"runs/{rec['policy']}-variant{s}/p{p:04d}-s{sd}.json", rec
                i += 1


def write(directory: Path, templates: list[dict], n: int) -> None:
    from sencache_bench.results.store import write_json

    for rel, rec in synthetic(templates, n):
        write_json(directory / rel, rec)


def time_floor(directory: Path) -> float:
    start = time.perf_counter()
    for path in sorted(directory.rglob("*.json")):
        json.loads(path.read_bytes())
    return time.perf_counter() - start


def time_load(directory: Path) -> float:
    from sencache_bench.cli._console import load_results

    start = time.perf_counter()
    load_results(directory)
    return time.perf_counter() - start


def time_table(directory: Path) -> float:
    """The ``table`` command's own function (rich, default layout), its output and warnings discarded."""
    from contextlib import redirect_stderr, redirect_stdout

    from sencache_bench.cli.table import table

    start = time.perf_counter()
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        table(directory, format="rich", by_group=False, layout="default", detect=[], out=None)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--dir", type=Path, default=None, help="where the records go (default: a temporary folder)")
    ap.add_argument("--template", type=Path, nargs="*", default=None, help="real run records to copy the shape of")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="table_scale-"))
    have = len(list(directory.rglob("*.json"))) if directory.is_dir() else 0
    if have != args.records:
        templates = ([json.loads(p.read_text()) for p in args.template] if args.template
                     else tiny_templates(Path(tempfile.mkdtemp(prefix="table_scale-tpl-"))))
        write(directory, templates, args.records)
    print(f"{args.records} records under {directory} "
          f"({sum(p.stat().st_size for p in directory.rglob('*.json')) / 2**20:.0f} MiB)")
    import sencache_bench.api  # noqa: F401 - imports paid before the clock, as in every round
    import sencache_bench.cli.table  # noqa: F401

    times: dict[str, list[float]] = {"floor": [], "load": [], "table": []}
    for _ in range(args.rounds):
        times["floor"].append(time_floor(directory))
        times["load"].append(time_load(directory))
        times["table"].append(time_table(directory))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in ("floor", "load", "table"):
        print(f"{k:>6}: {med[k]:.2f} s (median of {args.rounds}: {', '.join(f'{x:.2f}' for x in times[k])})")
    for k in ("load", "table"):
        ratio = med[k] / med["floor"]
        print(f"{k} / floor = {ratio:.2f}x ({'within' if ratio <= 3 else 'above'} the 3x goal)")


if __name__ == "__main__":
    main()
