"""One rank of tests/test_parallel.py (run by torchrun, 2 processes, gloo): tiny-wan under Ulysses context
parallelism with several policies, a policy left unsynchronised, and a collective one rank never joins.

Writes ``rank{r}.json`` and ``rank{r}.npz`` under the directory given as argv[1]; rank 0 also writes the same
policies' single-process results (``single.json`` / ``single.npz``), made before the process group exists."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from sencache_bench import parallel
from sencache_bench.distributed import detect
from sencache_bench.errors import BenchError, PolicyError
from sencache_bench.policies.base import CachePolicy, Decision, PolicyConfig
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve

PROMPT = "a red ball bouncing on grass"
TIMEOUT_S = 5.0
POLICIES = {
    "none": {"name": "none"},
    "sencache": {"name": "sencache", "eps_start": 0.01, "eps_main": 0.3, "max_reuse": 2, "reuse": "residual"},
    "teacache": {"name": "teacache", "thresh": 0.3, "coefficients": "configs/calibrated/tiny-wan_teacache.json"},
    "magcache": {"name": "magcache", "thresh": 0.12, "max_reuse": 2, "retention": 0.2,
                 "ratios": "configs/calibrated/tiny-wan_magcache.json"},
    "easycache": {"name": "easycache", "tau": 0.3},
}
if os.environ.get("PARALLEL_WORKER_POLICIES"):  # other policies, by hand: a JSON object name -> policy section
    POLICIES = json.loads(os.environ["PARALLEL_WORKER_POLICIES"])


class ShardMean(CachePolicy):
    """Decides from the mean of the head block's input, which under context parallelism is this rank's shard of
    the sequence, and opts out of the vote: the ranks disagree, which the check must catch."""

    name = "shard-mean"
    reuse = "residual"
    decide_in_block = True
    reduction = None

    def decide(self, state, call):
        stat = float(call.block_args[0].float().mean())
        return Decision(call.index == 0 or stat > 0, score=stat, threshold=0.0)


class VotedShardMean(ShardMean):
    """The same rule with the vote: every rank computes when any rank's shard says compute."""

    reduction = "vote"


class ShardMeanConfig(PolicyConfig):
    name: Literal["shard-mean"] = "shard-mean"
    voted: bool = False

    def make_policy(self):
        return VotedShardMean() if self.voted else ShardMean()


MODEL = os.environ.get("PARALLEL_WORKER_MODEL", "tiny-wan")


def spec(out: Path, policy: dict, parallel_section: dict | None) -> dict:
    data = {"model": {"name": MODEL}, "prompts": [PROMPT], "sampling": {"steps": 4, "seeds": [0]},
            "policy": policy, "output": {"dir": str(out), "save_videos": False}}
    if parallel_section is not None:
        data["parallel"] = parallel_section
    return resolve(data)


def run_policies(out: Path, layout) -> tuple[dict, dict]:
    """Each policy's decisions (computed per call) and frames on one session; the uncached latent too."""
    section = None if layout is None else {"ulysses": 2, "timeout_s": TIMEOUT_S}
    session, info, arrays = None, {}, {}
    for name, policy in POLICIES.items():
        runner = Runner(spec(out, policy, section), log=lambda line: None, layout=layout)
        if session is not None:
            runner._session = session
        runner.prepare_policy()
        session = runner.session
        gen = session.generate(PROMPT, 0, policy=runner.spec.policy)
        info[name] = {"computed": [bool(c.computed) for c in gen.calls], "branches": [c.branch for c in gen.calls]}
        arrays[name] = gen.frames
    arrays["latent"] = session._call(PROMPT, 0, output_type="latent").float().numpy()
    return info, arrays


def main() -> None:
    out = Path(sys.argv[1])
    dist = detect()
    torch.set_num_threads(1)
    if dist.rank == 0:  # the single-process results, before any process group exists
        info, arrays = run_policies(out / "single", None)
        (out / "single.json").write_text(json.dumps(info))
        np.savez(out / "single.npz", **arrays)
    layout = parallel.setup(spec(out, {"name": "none"}, {"ulysses": 2, "timeout_s": TIMEOUT_S}).parallel,
                            dist, "cpu")
    info, arrays = run_policies(out / f"rank{dist.rank}", layout)
    info["_check"] = {"calls": layout.calls, "disagreements": layout.disagreements}
    cp = Runner(spec(out / f"rank{dist.rank}", {"name": "none"}, {"ulysses": 2, "timeout_s": TIMEOUT_S}),
                layout=layout)
    gen = cp.session.generate(PROMPT, 0, policy=ShardMeanConfig(voted=True))
    info["shard-mean-voted"] = {"computed": [bool(c.computed) for c in gen.calls]}
    try:  # an unsynchronised policy: the check raises on every rank at the same call
        cp.session.generate(PROMPT, 0, policy=ShardMeanConfig())
        info["_unsynchronised"] = "no error"
    except PolicyError as err:
        info["_unsynchronised"] = str(err)
    start = time.perf_counter()
    if dist.rank == 0:  # a collective rank 1 never joins: a BenchError line after timeout_s, not a hang
        try:
            with parallel.hang_guard(layout):
                torch.distributed.all_reduce(torch.ones(1), group=layout.group)
            info["_timeout"] = "no error"
        except BenchError as err:
            info["_timeout"] = str(err)
    else:
        time.sleep(TIMEOUT_S + 3)
    info["_timeout_waited_s"] = time.perf_counter() - start
    (out / f"rank{dist.rank}.json").write_text(json.dumps(info))
    np.savez(out / f"rank{dist.rank}.npz", **arrays)


if __name__ == "__main__":
    main()
