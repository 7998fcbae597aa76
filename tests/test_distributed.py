"""Sharding: every item on exactly one rank; a real 2-process torchrun (gloo) run on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from sencache_bench.distributed import Dist, detect, shard


def free_port() -> int:
    """A port nothing listens on now (the OS picks it), instead of a fixed one another job may hold."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_shards_cover_items_without_overlap():
    items = list(range(11))
    parts = [shard(items, Dist(rank, 3)) for rank in range(3)]
    assert sorted(sum(parts, [])) == items and sum(len(p) for p in parts) == len(items)


def test_detect_torchrun_and_slurm(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"):
        monkeypatch.delenv(var, raising=False)
    assert detect() == Dist(0, 1, 0)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert detect() == Dist(3, 4, 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert detect().world == 2 and detect().rank == 1


def test_torchrun_two_processes(tiny_spec, tmp_path):
    spec = tiny_spec(prompts=["a red ball bouncing on grass", "a quiet library", "a dog running"],
                     sampling={"steps": 3})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "sencache_bench", "run", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").rglob("*.json")]
    assert sorted(r["prompt_index"] for r in records) == [0, 1, 2]
    assert len(list((tmp_path / "results" / "references").glob("*.npz"))) == 3
    assert out.stdout.count("tiny-wan") == 1, "rank 0 alone prints the merged table"


def test_torchrun_sweep_two_processes(tiny_spec, tmp_path):
    spec = tiny_spec(prompts=["a red ball bouncing on grass", "a quiet library", "a dog running"],
                     sampling={"steps": 3}, policy={"name": "static", "every": 2})
    spec["output"]["save_videos"] = False
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "250"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "sencache_bench", "sweep", str(path), "--set", "policy.every=2,3"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").rglob("*.json")]
    assert sorted((r["setting"][:7], r["prompt_index"]) for r in records) == [
        ("every=2", 0), ("every=2", 1), ("every=2", 2), ("every=3", 0), ("every=3", 1), ("every=3", 2)]
    # 6 pairs dealt round-robin: rank 0 has (2, p0) (2, p2) (3, p1), rank 1 the other three
    assert "rank 0/2: 1/2: policy.every=2: 2 video(s) to run" in out.stderr
    assert "rank 1/2: 2/2: policy.every=3: 2 video(s) to run" in out.stderr
    assert out.stdout.count("every=3,reuse=residual") == 1, "rank 0 alone prints the merged table"
