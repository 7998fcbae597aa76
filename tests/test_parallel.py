"""One video across two ranks (context parallelism, diffusers' Ulysses attention over gloo on CPU).

Each test launches ``torchrun --nproc-per-node 2 -m sencache_bench run`` on tiny-wan, the way a user would, and
compares with the same spec run in one process. A policy declared below decides from the rank (a rule that
depends on a rank's shard, made certain): voting makes the ranks agree; declaring ``synchronise = "none"`` turns
the disagreement into one error line on every rank instead of a deadlock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from sencache_bench import api
from sencache_bench.errors import SpecError
from sencache_bench.spec import REPO_ROOT

PLUGIN = '''
from typing import Literal

import torch.distributed as td

from sencache_bench.plugins import register_policy
from sencache_bench.policy import CachePolicy, Decision, PolicyConfig


@register_policy("by-rank")
class ByRankConfig(PolicyConfig):
    name: Literal["by-rank"] = "by-rank"
    synchronise: Literal["vote", "none"] = "vote"

    def make_policy(self):
        policy = ByRankPolicy()
        policy.synchronise = self.synchronise
        return policy


class ByRankPolicy(CachePolicy):
    """Computes the first call, then on rank 0 every odd call and on rank 1 every even one: never in agreement."""

    name = "by-rank"

    def decide(self, state, call):
        rank = td.get_rank() if td.is_initialized() else 0
        return Decision(compute=call.index == 0 or (call.index + rank) % 2 == 1)
'''


def _spec(tmp: Path, name: str, policy: dict, parallel: bool) -> Path:
    spec = {"model": {"name": "tiny-wan"}, "prompts": ["a quiet library", "a red fox running"], "policy": policy,
            "sampling": {"steps": 12, "seeds": [0]}, "metrics": ["psnr"],
            "output": {"dir": str(tmp / name), "save_videos": False}, "timing": {"timed": False},
            "plugins": ["by_rank_plugin"], **({"parallel": {"ulysses": 2, "timeout_s": 60}} if parallel else {})}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _torchrun(spec: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", "29533", "-m", "sencache_bench", "run", str(spec), "-q"],
                          cwd=spec.parent, env=env, capture_output=True, text=True, timeout=240)


def _records(folder: Path) -> dict[str, dict]:
    return {r["prompt"]: r for r in (json.loads(p.read_text()) for p in sorted(folder.glob("runs/*/*.json")))}


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    (tmp_path / "by_rank_plugin.py").write_text(PLUGIN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_two_ranks_make_the_single_process_video_with_the_same_decisions(tmp):
    """EasyCache on tiny-wan: references equal bit for bit, every decision and the PSNR equal, no rank outvoted."""
    done = _torchrun(_spec(tmp, "par", {"name": "easycache", "tau": 0.5}, parallel=True))
    assert done.returncode == 0, done.stderr[-3000:]
    api.run(_spec(tmp, "single", {"name": "easycache", "tau": 0.5}, parallel=False), log=lambda s: None)
    par, single = _records(tmp / "par"), _records(tmp / "single")
    assert sorted(par) == sorted(single) == ["a quiet library", "a red fox running"]
    for prompt, rec in par.items():
        ref = single[prompt]
        assert [c["computed"] for c in rec["trace"]] == [c["computed"] for c in ref["trace"]]
        assert 0 < rec["nfe"] < 12  # it reuses
        assert rec["metrics"]["psnr"] == pytest.approx(ref["metrics"]["psnr"], abs=1e-6)
        assert rec["parallel"]["ulysses"] == 2 and rec["parallel"]["outvoted"] == 0
        assert rec["parallel"]["checked_calls"] == len(rec["trace"])  # every call's decision gathered
    for npz in sorted((tmp / "single" / "references").glob("*.npz")):  # the uncached videos under parallelism
        a, b = np.load(npz), np.load(tmp / "par" / "references" / npz.name)
        assert np.array_equal(a["frames"], b["frames"])
    assert not list(tmp.glob(".par.rank*")), "the other rank's scratch copy is removed"


def test_ranks_that_disagree_vote_or_stop_with_one_line(tmp):
    voted = _torchrun(_spec(tmp, "vote", {"name": "by-rank"}, parallel=True))
    assert voted.returncode == 0, voted.stderr[-3000:]
    for rec in _records(tmp / "vote").values():  # every call after the first: one rank says compute, so all do
        assert all(c["computed"] for c in rec["trace"]) and rec["parallel"]["outvoted"] == len(rec["trace"]) - 2
    stopped = _torchrun(_spec(tmp, "none", {"name": "by-rank", "synchronise": "none"}, parallel=True))
    assert stopped.returncode != 0
    lines = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    assert lines and all("decided differently across the ranks of one video at call 1 of branch 'cond' "
                         "(compute per rank: [1, 0])" in line for line in lines), stopped.stderr[-3000:]
    assert "Traceback" not in "\n".join(line for line in stopped.stderr.splitlines() if "[rank" in line)


def test_bad_layouts_are_one_line():
    from sencache_bench.distributed import Dist
    from sencache_bench.parallel import ParallelConfig, layout, start

    with pytest.raises(SpecError, match="does not divide the 3 ranks"):
        layout(Dist(0, 3), ParallelConfig(ulysses=2))
    assert layout(Dist(3, 4), ParallelConfig(ulysses=2)) == layout(Dist(3, 4), ParallelConfig(ulysses=2))
    place = layout(Dist(3, 4), ParallelConfig(ulysses=2))
    assert (place.group, place.groups, place.member, place.leader) == (1, 2, 1, False)
    with pytest.raises(SpecError, match="ring attention needs"):
        start(Dist(0, 2), ParallelConfig(ring=2), "cpu")


def test_a_library_policy_that_cannot_vote_is_refused():
    from sencache_bench.parallel import check_policy
    from sencache_bench.spec import resolve

    def policy(p):
        return resolve({"model": {"name": "tiny-wan"}, "prompts": ["x"], "policy": p}).policy

    with pytest.raises(SpecError, match="policy 'fbc' decides in its library's own hooks"):
        check_policy(policy({"name": "fbc"}))
    for ok in ({"name": "none"}, {"name": "seacache"}, {"name": "static", "every": 2}, {"name": "easycache"}):
        check_policy(policy(ok))
