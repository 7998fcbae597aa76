"""One video across several ranks: diffusers' context parallelism (Ulysses / ring attention) under torchrun.

A spec's ``parallel: {ulysses: N, ring: M}`` splits each video's token sequence over ``N * M`` ranks
(diffusers ``ContextParallelConfig``; the transformer's own ``_cp_plan`` says where the sequence is split and
gathered). With more ranks than one video needs, the ranks form groups of ``N * M`` and the (prompt, seed)
items are dealt to the groups as :mod:`sencache_bench.distributed` deals them to ranks.

Caching under context parallelism deadlocks when ranks decide differently (xDiT #502, vllm-omni #6180): a rank
that reuses skips the attention collectives a rank that computes waits in. So every hook-based policy's
decision goes through :class:`DecisionSync` (installed into ``policies.base``): a vote (compute when any rank
of the video would: what diffusers' SeaCache does), then a check that all-gathers every rank's final decision
and raises one PolicyError line on a disagreement. The process group has a timeout, so a hang anywhere
becomes one BenchError line instead of a silent stall.

``enable_parallelism`` builds its device on ``rank % accelerator count``, which divides by zero on a CPU
machine, so :func:`enable_context_parallel` does its few steps itself (mesh, config setup, processors, plan).
gloo runs Ulysses (all_to_all_single) and ring's all-gather, but diffusers' only CPU attention backend
(native SDPA) returns no log-sum-exp, which ring attention needs: ring runs on CUDA backends only.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from .distributed import Dist
from .errors import BenchError, PolicyError, SpecError

REDUCTION = "vote: compute when any rank of the video would (all-reduce MAX), then an all-gather check"


class ParallelSpec(BaseModel):
    """The spec's ``parallel`` section: degrees of the context-parallel mesh and the collectives' timeout."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ulysses: int = Field(1, ge=1, description="ranks splitting attention heads (all-to-all)")
    ring: int = Field(1, ge=1, description="ranks passing key/value blocks around a ring (all-gather)")
    timeout_s: float = Field(300.0, gt=0, description="a collective that waits longer is an error, not a hang")

    @property
    def size(self) -> int:
        return self.ulysses * self.ring


def check_spec(parallel: ParallelSpec, device: str, policy_config) -> None:
    """Spec-time checks (one SpecError line): ring attention needs a backend that CPU lacks; a policy that runs
    calls on a subset of the tokens (it prices them itself: ``price_parts``, SemCache's TMM) indexes the whole
    sequence, which no rank holds (measured: an out-of-bounds gather on tiny-wan)."""
    if hasattr(policy_config, "price_parts"):
        raise SpecError(f"parallel: policy {policy_config.name!r} computes calls on a subset of the tokens, which "
                        f"cannot be split evenly across ranks; run it without the parallel section")
    if parallel.ring > 1 and not device.startswith("cuda"):
        raise SpecError("parallel.ring: ring attention needs an attention backend returning log-sum-exp (CUDA "
                        "flash / cuDNN); on CPU diffusers' native backend has none: use parallel.ulysses")


@dataclass
class Layout:
    """This rank's place: which video group it is in, its rank inside the video, and the video's process group."""

    spec: ParallelSpec
    dist: Dist
    config: object = None  # diffusers ParallelConfig, shared by every expert of the pipeline
    group: object = None  # the video's process group (reductions and the check)
    disagreements: int = 0
    calls: int = 0
    rank_seconds: float | None = None  # this rank's own seconds of its last timed generation
    plans: dict = field(default_factory=dict)  # id(transformer) -> the context-parallel plan applied

    @property
    def video_rank(self) -> int:
        return self.dist.rank % self.spec.size

    @property
    def is_leader(self) -> bool:
        return self.video_rank == 0

    def items_dist(self) -> Dist:
        """The groups as ranks of item sharding: group g takes items g, g + groups, ... (distributed.shard)."""
        return Dist(self.dist.rank // self.spec.size, self.dist.world // self.spec.size, self.dist.local_rank)

    def record(self) -> dict:
        return {"ulysses": self.spec.ulysses, "ring": self.spec.ring, "ranks_per_video": self.spec.size,
                "video_groups": self.dist.world // self.spec.size, "reduction": REDUCTION,
                "checked_calls": self.calls, "disagreements": self.disagreements, "timeout_s": self.spec.timeout_s}


def setup(spec: ParallelSpec, dist: Dist, device: str) -> Layout:
    """Check the world against the spec, start the process group (gloo on CPU, nccl on CUDA) with the spec's
    timeout, and build the (group, ring, ulysses) device mesh."""
    import torch.distributed as td
    from diffusers.models._modeling_parallel import ContextParallelConfig, ParallelConfig
    from torch.distributed.device_mesh import init_device_mesh

    if dist.world % spec.size:
        raise SpecError(f"parallel: {dist.world} rank(s) cannot be split into videos of ulysses x ring = "
                        f"{spec.ulysses} x {spec.ring} = {spec.size} ranks; launch a multiple of {spec.size}")
    if "MASTER_ADDR" not in os.environ:
        raise SpecError("parallel: one video across ranks needs torchrun (MASTER_ADDR unset); launch with "
                        "torchrun --nproc-per-node N (under SLURM: srun torchrun ...)")
    cuda = device.startswith("cuda")
    if not td.is_initialized():
        td.init_process_group("nccl" if cuda else "gloo", rank=dist.rank, world_size=dist.world,
                              timeout=timedelta(seconds=spec.timeout_s))
    mesh = init_device_mesh("cuda" if cuda else "cpu", (dist.world // spec.size, spec.ring, spec.ulysses),
                            mesh_dim_names=("video", "ring", "ulysses"))
    import torch

    if cuda:
        torch.cuda.set_device(torch.device(device))
    cp = ContextParallelConfig(ring_degree=spec.ring, ulysses_degree=spec.ulysses, mesh=mesh)
    config = ParallelConfig(context_parallel_config=cp)
    config.setup(dist.rank, dist.world, torch.device(device), mesh=mesh)
    return Layout(spec, dist, config=config, group=cp._flattened_mesh.get_group())


def enable_context_parallel(layout: Layout, transformer, plan: dict | None = None) -> None:
    """``ModelMixin.enable_parallelism`` without its accelerator-count device: the processors get the config, the
    plan's split/gather hooks go on. ``plan``: the family's, else the transformer's built-in ``_cp_plan``."""
    from diffusers.hooks.context_parallel import apply_context_parallel

    plan = plan if plan is not None else getattr(transformer, "_cp_plan", None)
    if plan is None:
        raise SpecError(f"parallel: {type(transformer).__name__} has no context-parallel plan (diffusers ships "
                        f"them for Wan and LTX); remove the parallel section for this model")
    transformer._parallel_config = layout.config
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_parallel_config"):
            processor._parallel_config = layout.config
    apply_context_parallel(transformer, layout.config.context_parallel_config, plan)
    layout.plans[id(transformer)] = plan


def attach_inside(layout: Layout, transformer, attach, policy_config) -> None:
    """Run ``attach()`` (a policy's hooks) inside the split/gather hooks: they come off and go back on after it,
    since the newest hook runs first (diffusers HookRegistry), so the policy's block hooks see this rank's shard
    of the sequence, as the blocks do. Only the newest hooks come off: removing a hook from the middle of a chain
    skips the next hook's ``new_forward`` (HookRegistry.remove_hook), and the split/gather hooks are the newest
    here (added at load, and back on after every attach; the policy's own come off before them on detach)."""
    from diffusers.hooks.context_parallel import apply_context_parallel, remove_context_parallel

    plan = layout.plans[id(transformer)]
    remove_context_parallel(transformer, plan)
    try:
        attach()
        check_attached(transformer, policy_config)
    finally:
        apply_context_parallel(transformer, layout.config.context_parallel_config, plan)


def check_attached(transformer, policy_config) -> None:
    """A policy that decides in hooks of its own (diffusers' and cache-dit's built-ins) is out of the vote's
    reach: refused under ``parallel`` rather than risk a deadlock (diffusers' SeaCache votes itself, but is
    refused with the rest for now)."""
    from diffusers.hooks import HookRegistry

    from .policies.base import POLICY_HOOK, PolicyConfig, PolicyHook

    hook = HookRegistry.check_if_exists_or_initialize(transformer).get_hook(POLICY_HOOK)
    if hook is None and type(policy_config).attach is PolicyConfig.attach:
        return  # the base attach installed nothing: no cache (``none``), nothing to decide
    if not isinstance(hook, PolicyHook):
        raise SpecError(f"parallel: policy {policy_config.name!r} decides in hooks of its own, which the vote across "
                        f"ranks cannot reach; use one of the project's hook-based policies (sencache, teacache, ...)")


class DecisionSync:
    """Makes every rank of a video take the same decision at each call (installed as ``base.decision_sync``)."""

    def __init__(self, layout: Layout):
        self.layout = layout

    def __call__(self, policy, call, decision):
        import torch
        import torch.distributed as td

        from .policies.base import Decision

        group = self.layout.group
        if getattr(policy, "reduction", "vote") == "vote":
            vote = torch.tensor([int(decision.compute)], dtype=torch.int64)
            td.all_reduce(vote, op=td.ReduceOp.MAX, group=group)
            if bool(vote.item()) != decision.compute:  # another rank's shard says compute: all compute
                decision = Decision(True, decision.score, decision.threshold, decision.detail)
        mine = torch.tensor([int(decision.compute)], dtype=torch.int64)
        every = [torch.zeros_like(mine) for _ in range(td.get_world_size(group))]
        td.all_gather(every, mine, group=group)
        self.layout.calls += 1
        votes = [int(t.item()) for t in every]
        if len(set(votes)) > 1:
            self.layout.disagreements += 1
            raise PolicyError(f"parallel: ranks of one video disagree at call {call.index} of branch {call.branch!r} "
                              f"(compute per rank: {votes}): policy {getattr(policy, 'name', type(policy).__name__)!r} "
                              f"decides from its own shard without the vote (reduction "
                              f"{getattr(policy, 'reduction', 'vote')!r})")
        return decision


@contextmanager
def synchronised(layout: Layout | None):
    """Within the block, every hook-based policy's decision goes through the layout's DecisionSync."""
    from .policies import base

    if layout is None:
        yield
        return
    previous, base.decision_sync = base.decision_sync, DecisionSync(layout)
    try:
        yield
    finally:
        base.decision_sync = previous


@contextmanager
def hang_guard(layout: Layout | None):
    """A collective that timed out (a rank stopped or took another path) becomes one BenchError line."""
    try:
        yield
    except RuntimeError as err:
        text = str(err)
        if layout is None or not any(word in text.lower() for word in ("timed out", "timeout", "connection closed",
                                                                         "connection reset")):
            raise
        raise BenchError(f"parallel: rank {layout.dist.rank} waited over timeout_s={layout.spec.timeout_s:g} s for "
                         f"the other ranks of its video (one failed or took another path): "
                         f"{text.splitlines()[0][:160]}") from None


def rank_dir(out, dist: Dist):
    """Where a rank other than its video's leader keeps its own references, FLOP counts and records: beside the
    output directory, so the tables (which read it recursively) see each video once, from its leader."""
    return out.parent / f"{out.name}.rank{dist.rank}"


def key(layout: Layout | None) -> dict:
    """What a reference / FLOP-count key adds under ``parallel``: made under this layout, kept apart from
    single-process ones (the per-rank FLOPs differ; the frames agree within float tolerance, tests/test_parallel.py)."""
    return {} if layout is None else {"parallel": [layout.spec.ulysses, layout.spec.ring]}


def video_seconds(layout: Layout, seconds: float) -> float:
    """A video is done when its slowest rank is: the max over the video's ranks (all-reduce MAX), so every rank
    times, and takes timing decisions (re-timing an unsteady segment), on the same number."""
    import torch
    import torch.distributed as td

    layout.rank_seconds = seconds
    value = torch.tensor([seconds], dtype=torch.float64)
    td.all_reduce(value, op=td.ReduceOp.MAX, group=layout.group)
    return float(value.item())


def record(layout: Layout, run: dict) -> dict:
    """The run record's ``parallel`` section: the layout, the reduction and its check (``checked_calls``: calls
    voted and checked by this process so far, warm-ups and FLOP counts included), and every rank's own figures (its last generation's seconds, the FLOPs its counter saw, NFE, peak memory), gathered."""
    import torch.distributed as td

    flops = run.get("flops", {})
    mine = {"rank": layout.dist.rank, "video_rank": layout.video_rank,
            "latency_s": layout.rank_seconds, "flops": flops.get("total"),
            "flops_transformer": flops.get("transformer"), "nfe": run.get("nfe"),
            "peak_memory_mb": run.get("peak_memory_mb"), "disagreements": layout.disagreements}
    ranks: list = [None] * layout.spec.size
    td.all_gather_object(ranks, mine, group=layout.group)
    total = sum(r["flops"] or 0 for r in ranks)
    return {**layout.record(), "disagreements": sum(r["disagreements"] for r in ranks), "ranks": ranks,
            "flops_per_rank": [r["flops"] for r in ranks], "flops_total": total,
            "flops_note": "each rank's FLOP counter: its shard of the transformer, plus text encoding and VAE "
                          "decoding, which every rank runs whole"}


def agree(layout: Layout | None, value):
    """The video leader's ``value`` on every rank of the video (which items are pending: a rank must not skip
    what another rank of its video runs)."""
    if layout is None:
        return value
    import torch.distributed as td

    box = [value]
    td.broadcast_object_list(box, group_src=0, group=layout.group)
    return box[0]

