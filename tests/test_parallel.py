"""One video across 2 ranks (Ulysses context parallelism over gloo, CPU): the video equals the single-process one,
every rank takes the same decisions, an unsynchronised policy is caught, a hang becomes an error, and
``torchrun -m sencache_bench run`` with a ``parallel`` section writes per-rank figures.

The two-process runs are real torchrun launches (tests/parallel_worker.py): the gloo process group, diffusers'
split/gather hooks and all-to-all attention, nothing mocked. Tolerance: the parallel latent within 1e-5 of the
single-process one (measured: 0.0 on CPU: Ulysses moves whole heads, so each head's attention is the same
computation), frames (uint8) equal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from sencache_bench import parallel
from sencache_bench.distributed import Dist
from sencache_bench.errors import SpecError
from sencache_bench.spec import resolve
from tests.parallel_worker import POLICIES
from tests.test_distributed import free_port

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "250",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def torchrun(*args: str, timeout: int = 200) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("parallel")
    done = torchrun("tests/parallel_worker.py", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    load = lambda name: (json.loads((out / f"{name}.json").read_text()), np.load(out / f"{name}.npz"))  # noqa: E731
    return load("single"), load("rank0"), load("rank1")


def test_parallel_video_equals_the_single_process_one(ranks):
    (single, s_arr), (r0, a0), (r1, a1) = ranks
    assert np.abs(a0["latent"] - s_arr["latent"]).max() <= 1e-5
    assert np.array_equal(a0["latent"], a1["latent"])  # the gathered output is one tensor on every rank
    for name in POLICIES:
        assert np.array_equal(a0[name], s_arr[name]), name
        assert np.array_equal(a0[name], a1[name]), name


def test_every_rank_takes_the_same_decisions(ranks):
    (single, _), (r0, _), (r1, _) = ranks
    for name in POLICIES:
        assert r0[name]["computed"] == r1[name]["computed"], name
        # the statistics these policies read (latent, timestep embedding, gathered output) are whole on every
        # rank, so the vote changes nothing: the same calls as in one process
        assert r0[name]["computed"] == single[name]["computed"], name
    assert not all(r0["sencache"]["computed"]), "the policy reused some calls"
    # a statistic of the rank's own shard, voted: the ranks agree, and reuse is still possible
    assert r0["shard-mean-voted"]["computed"] == r1["shard-mean-voted"]["computed"]


def test_unsynchronised_policy_is_caught_not_hung(ranks):
    _, (r0, _), (r1, _) = ranks
    for r in (r0, r1):
        assert r["_unsynchronised"].startswith("parallel: ranks of one video disagree at call 1"), r["_unsynchronised"]
        assert "'shard-mean'" in r["_unsynchronised"] and "\n" not in r["_unsynchronised"]


def test_a_collective_one_rank_skips_times_out_as_one_line(ranks):
    _, (r0, _), _ = ranks
    assert r0["_timeout"].startswith("parallel: rank 0 waited over timeout_s=5 s"), r0["_timeout"]
    assert 5 <= r0["_timeout_waited_s"] < 15


def test_torchrun_run_with_a_parallel_section(tiny_spec, tmp_path):
    spec = tiny_spec(sampling={"steps": 3}, prompts=["a red ball bouncing on grass"],
                     policy={"name": "teacache", "thresh": 0.3,
                             "coefficients": str(ROOT / "configs/calibrated/tiny-wan_teacache.json")},
                     parallel={"ulysses": 2, "timeout_s": 60}, timing={"timed": False})
    spec["output"]["save_videos"] = False
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = torchrun("-m", "sencache_bench", "run", str(path))
    assert done.returncode == 0, done.stderr[-3000:]
    (record_path,) = (tmp_path / "results" / "runs").rglob("*.json")  # the video once, from its leader
    record = json.loads(record_path.read_text())
    par = record["parallel"]
    assert (par["ulysses"], par["ring"], par["disagreements"]) == (2, 1, 0) and par["checked_calls"] > 0
    assert [r["video_rank"] for r in par["ranks"]] == [0, 1]
    assert all(r["nfe"] == record["nfe"] and r["latency_s"] > 0 and r["peak_memory_mb"] > 0 for r in par["ranks"])
    assert par["flops_total"] == sum(par["flops_per_rank"]) and par["flops_per_rank"][0] == record["flops"]["total"]
    # rank 1's own files sit beside the output directory, out of its tables
    assert list((tmp_path / "results.rank1" / "runs").rglob("*.json"))
    assert done.stdout.count("│ tiny-wan │ teacache") == 1, "rank 0 alone prints the table, one row for the video"


def test_spec_and_layout_checks_are_one_line(tiny_spec, monkeypatch):
    with pytest.raises(SpecError, match="parallel.ring: ring attention needs"):
        resolve(tiny_spec(parallel={"ring": 2}))
    with pytest.raises(SpecError, match="policy 'semcache' computes calls on a subset of the tokens"):
        resolve(tiny_spec(policy={"name": "semcache", "layers": 15}, parallel={"ulysses": 2}))
    with pytest.raises(SpecError, match="parallel.ulysses"):
        resolve(tiny_spec(parallel={"ulysses": 0}))
    section = resolve(tiny_spec(parallel={"ulysses": 2})).parallel
    with pytest.raises(SpecError, match=r"3 rank\(s\) cannot be split into videos of ulysses x ring = 2 x 1"):
        parallel.setup(section, Dist(0, 3), "cpu")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(SpecError, match="needs torchrun"):
        parallel.setup(section, Dist(0, 2), "cpu")
    assert parallel.Layout(section, Dist(3, 4)).items_dist() == Dist(1, 2)  # ranks 2, 3 are video group 1


def test_family_without_a_plan_and_built_in_caches_are_refused(tiny_spec):
    from sencache_bench.runner import Session

    cog = Session(resolve(tiny_spec(model={"name": "tiny-cogvideox"}, sampling={})))
    layout = parallel.Layout(parallel.ParallelSpec(ulysses=2), Dist(0, 2))
    with pytest.raises(SpecError, match="CogVideoXTransformer3DModel has no context-parallel plan"):
        parallel.enable_context_parallel(layout, cog.transformer)
    wan = Session(resolve(tiny_spec()))
    fbc = resolve(tiny_spec(policy={"name": "fbc"})).policy
    fbc.attach(wan.transformer, wan.blocks, wan.recorder)
    with pytest.raises(SpecError, match="policy 'fbc' decides in hooks of its own"):
        parallel.check_attached(wan.transformer, fbc)
    none = resolve(tiny_spec()).policy
    parallel.check_attached(Session(resolve(tiny_spec())).transformer, none)  # no cache: nothing to refuse
