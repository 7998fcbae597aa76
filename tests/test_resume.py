"""kill -9 in the middle of a run, rerun: nothing half-written counts, and the table equals an uninterrupted run's."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time

import yaml

from sencache_bench.results.speedup import untimed_note

PROMPTS = ["a red ball bouncing on grass", "a quiet library", "a dog running on a beach", "a candle in the dark"]
MEASURED = ("model", "policy", "setting", "videos", "nfe", "nfe_ref", "pflops", "pflops_no_attn", "pflops_ref",
            "ssim", "psnr")


def _spec(tmp_path, name):
    spec = {"model": {"name": "tiny-wan"}, "sampling": {"steps": 4}, "prompts": PROMPTS,
            "policy": {"name": "static", "every": 2}, "metrics": ["psnr", "ssim"],
            "output": {"dir": str(tmp_path / name)}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _table(results):
    out = subprocess.run([sys.executable, "-m", "sencache_bench", "table", str(results), "-f", "csv"],
                         capture_output=True, text=True, check=True)
    # the note without its timing parts: a resumed run's baselines must still reproduce the stored references
    return [{**{k: row[k] for k in MEASURED}, "note": untimed_note(row["note"])}
            for row in csv.DictReader(io.StringIO(out.stdout))]


def test_kill_9_then_rerun_matches_uninterrupted(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = _spec(tmp_path, "killed")
    proc = subprocess.Popen([sys.executable, "-m", "sencache_bench", "run", str(killed), "-q"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "killed" / "runs"
    deadline = time.time() + 500
    while time.time() < deadline and not list(runs.rglob("p*.json")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in runs.rglob("p*.json"))
    assert 1 <= len(finished) < len(PROMPTS), "the kill should land mid-run"
    # what is visible is complete: every record parses, every reference has its frames
    for path in (tmp_path / "killed").rglob("*.json"):
        assert path.read_text().rstrip().endswith("}")
    for meta in (tmp_path / "killed" / "references").glob("*.json"):
        assert meta.with_suffix(".npz").exists()

    rerun = subprocess.run([sys.executable, "-m", "sencache_bench", "run", str(killed), "-q"], env=env,
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert len(list(runs.rglob("p*.json"))) == len(PROMPTS)

    straight = _spec(tmp_path, "straight")
    subprocess.run([sys.executable, "-m", "sencache_bench", "run", str(straight), "-q"], env=env, check=True)
    assert _table(tmp_path / "killed") == _table(tmp_path / "straight")


def test_two_processes_into_one_results_dir(tmp_path):
    """Two runs of the same spec at once: atomic renames leave complete files and one record per video."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    spec = _spec(tmp_path, "shared")
    procs = [subprocess.Popen([sys.executable, "-m", "sencache_bench", "run", str(spec), "-q"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=500) == 0, proc.stderr.read()
    records = list((tmp_path / "shared" / "runs").rglob("p*.json"))
    assert len(records) == len(PROMPTS)
    assert not list((tmp_path / "shared").rglob("*.tmp"))
    rows = _table(tmp_path / "shared")
    assert len(rows) == 1 and rows[0]["videos"] == str(len(PROMPTS))
