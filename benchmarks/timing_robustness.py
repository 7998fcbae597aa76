"""Do speedups hold up on a busy machine? bench-t2v, ``none`` and ``static every=2``, two trials.

In each trial a CPU burner (a busy Python process on one core) runs during part of the run, at a different
moment in each trial. Printed per trial and policy: the table's speedup with its interval, the Amdahl bound,
how many items were unsteady or re-timed; then the harness's cost per video (wall time of the runs /
their timed generations) and the start-up to the first generation of ``sencache-bench run``.

Goals (issue 12): ``none`` 1.00 +- 0.03 in both trials; static never above 2.0 and the two trials within 6%;
<= 1.15x per video; <= 5 s start-up.

    python benchmarks/timing_robustness.py [--prompts 8] [--out /tmp/timing-robustness]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BURNER = "import os\nos.sched_setaffinity(0, {0})\nwhile True: pass\n"
POLICIES = {"none": {"name": "none"}, "static": {"name": "static", "every": 2}}


def spec_for(policy: dict, out: Path, prompts: int) -> dict:
    return {"model": {"name": "bench-t2v"}, "prompts": {"file": "bench.yaml", "limit": prompts},
            "policy": policy, "metrics": ["psnr", "ssim"], "output": {"dir": str(out), "save_videos": False}}


class Burner:
    """Starts a busy process at ``start_s`` after ``begin()`` and stops it at ``stop_s``."""

    def __init__(self, start_s: float, stop_s: float):
        self.start_s, self.stop_s = start_s, stop_s
        self.proc: subprocess.Popen | None = None
        self.on_s: list[float] = []
        self._timers: list[threading.Timer] = []

    def begin(self) -> None:
        t0 = time.perf_counter()

        def on():
            self.proc = subprocess.Popen([sys.executable, "-c", BURNER])
            self.on_s.append(time.perf_counter() - t0)

        def off():
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait()
                self.on_s.append(time.perf_counter() - t0)

        self._timers = [threading.Timer(self.start_s, on), threading.Timer(self.stop_s, off)]
        for t in self._timers:
            t.start()

    def end(self) -> None:
        for t in self._timers:
            t.cancel()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def timed_seconds(records: list[dict]) -> float:
    """Every timed generation of the run once: the policy samples and the distinct baselines (each closes one
    segment and opens the next), re-timed attempts included."""
    total = 0.0
    for i, rec in enumerate(records):
        t = rec["timing"]
        total += sum(t["policy_s"]) + t["baseline_s"][1] + (t["baseline_s"][0] if i == 0 else 0.0)
        for rejected in t.get("rejected", []):
            total += sum(sum(v) for v in rejected["policy_s"].values()) + rejected["baseline_s"][1]
    return total


def run_trial(policy: str, out: Path, prompts: int, burner: Burner | None, session=None):
    from sencache_bench.results.tables import aggregate
    from sencache_bench.runner import Runner
    from sencache_bench.spec import resolve

    spec = resolve(spec_for(POLICIES[policy], out, prompts), spec_dir=ROOT / "configs")
    runner = Runner(spec, force=True)
    if session is not None:
        session.spec = spec
        runner._session = session
    items = runner.items()
    runner.reference(*items[0])  # references exist after the first run: the run below is timed work only
    runner.session.warm_up(items[0][0].text)
    if burner:
        burner.begin()
    start = time.perf_counter()
    try:
        paths = runner.run_items(items)
    finally:
        wall = time.perf_counter() - start
        if burner:
            burner.end()
    records = [json.loads(Path(p).read_text()) for p in paths]
    row = aggregate(records)[0]
    retimed = sum(len(r["timing"].get("rejected", [])) for r in records)
    return row, records, wall, retimed, runner.session


def startup_seconds(out: Path) -> float:
    """Seconds from process start to the first timed generation of `sencache-bench run` on bench-t2v."""
    probe = (
        "import os, sys, time\n"
        "ticks = os.sysconf('SC_CLK_TCK')\n"
        "start = int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19]) / ticks\n"
        "from sencache_bench import runner\n"
        "original = runner.Session.generate\n"
        "def first(self, *a, **k):\n"
        "    print(float(open('/proc/uptime').read().split()[0]) - start, flush=True)\n"
        "    os._exit(0)\n"
        "runner.Session.generate = first\n"
        "from sencache_bench.cli.app import main\n"
        f"sys.argv = ['sencache-bench', 'run', {str(ROOT / 'configs' / 'bench_static.yaml')!r}, '--quiet', '--force',"
        f" '--set', 'output.dir={out}', '--set', 'prompts=[a red square moving right]', '--set', 'metrics=[psnr]']\n"
        "main()\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("/tmp/timing-robustness"))
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    os.chdir(ROOT)
    import torch

    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, {args.prompts} prompts of "
          f"prompts/bench.yaml, seed 0, bench-t2v 30 steps")
    # references and a quiet pass, to size the burner's windows
    _, _, quiet_none, _, session = run_trial("none", args.out, args.prompts, None)
    _, _, quiet_static, _, session = run_trial("static", args.out, args.prompts, None, session)
    print(f"quiet pass: none run {quiet_none:.1f} s, static run {quiet_static:.1f} s")
    windows = {1: (0.15, 0.55), 2: (0.5, 0.95)}  # share of each run the burner is on
    results: dict[tuple[int, str], dict] = {}
    overhead = []
    for trial, (a, b) in windows.items():
        for policy, quiet in (("none", quiet_none), ("static", quiet_static)):
            burner = Burner(a * quiet, b * quiet)
            row, records, wall, retimed, session = run_trial(policy, args.out, args.prompts, burner, session)
            results[trial, policy] = row
            overhead.append(wall / timed_seconds(records))
            on = ", ".join(f"{x:.1f}" for x in burner.on_s)
            print(f"trial {trial} {policy:6s} speedup {row['speedup']:.3f}x [{row['speedup_lo']:.3f}, "
                  f"{row['speedup_hi']:.3f}] bound {row['speedup_bound']:.2f}x nfe {row['nfe']:.1f}/"
                  f"{row['nfe_ref']:.0f}  note: {row['note'] or '-'}  re-timed segments {retimed}  "
                  f"burner on/off at {on} s of {wall:.1f} s")
    s1, s2 = results[1, "static"]["speedup"], results[2, "static"]["speedup"]
    print(f"static: trials differ by {abs(s1 - s2) / min(s1, s2) * 100:.1f}% (goal <= 6%), max {max(s1, s2):.3f}x "
          f"(goal <= 2.0)")
    print("none: " + ", ".join(f"trial {t} {results[t, 'none']['speedup']:.3f}x" for t in windows)
          + " (goal 1.00 +- 0.03)")
    print(f"harness cost per video: {min(overhead):.3f}x - {max(overhead):.3f}x its timed generations "
          f"(goal <= 1.15x)")
    print(f"start-up to the first generation: {startup_seconds(args.out / 'startup'):.2f} s (goal <= 5 s)")


if __name__ == "__main__":
    main()
