"""One video across several ranks: context parallelism (diffusers' Ulysses attention) with cache decisions that
agree on every rank.

Under context parallelism each rank holds a shard of the token sequence inside the block stack. A policy whose
statistic is read there (a first-block residual, a probe block, tokens) sees a different value on each rank; ranks
that decide differently call the attention all-to-all a different number of times and deadlock (xDiT #502 with
FirstBlockCache, vllm-omni #6180 with TeaCache). Here every decision taken by the framework's ``PolicyHook`` is
all-gathered over the video's ranks before it is applied:

- a policy whose ``synchronise`` is ``"vote"`` (the default) computes when any rank's rule says compute (the
  cautious side: no rank reuses what another would recompute); a rank outvoted runs its ``after_compute`` like any
  computed call. The record counts the calls where the ranks' rules differed (``parallel.outvoted``).
- a policy declaring ``synchronise = "none"`` claims its decisions do not depend on the shard (fixed schedules,
  or a statistic of the whole latent and timestep, read before the sequence is split); a disagreement is then a
  bug, and it stops the run on every rank with one line (``ParallelError``) instead of a hang.

A process group timeout (``parallel.timeout_s``) turns a hang elsewhere (a rank that died) into an error.

On CPU the mesh is built here over gloo: diffusers' ``enable_parallelism`` divides by the accelerator count (0 on
CPU). gloo carries Ulysses' all-to-all (checked: the 2-rank tiny-wan transformer output equals the single-process
one exactly); ring attention needs an attention backend returning the log-sum-exp, which diffusers' native (CPU)
backend does not, so ``ring > 1`` needs CUDA and a flash backend.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from .distributed import Dist
from .errors import BenchError, SpecError


class ParallelError(BenchError):
    """The ranks of one video disagree, or cannot meet."""


class ParallelConfig(BaseModel):
    """The spec's ``parallel`` section: the context-parallel degrees of one video (1 and 1: one rank per video)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ulysses: int = Field(default=1, ge=1, description="Ulysses (all-to-all over heads) degree")
    ring: int = Field(default=1, ge=1, description="ring attention degree (CUDA with a flash attention backend)")
    timeout_s: float = Field(default=600.0, gt=0, description="a collective waiting longer fails the run")

    @property
    def size(self) -> int:
        return self.ulysses * self.ring


@dataclass(frozen=True)
class Layout:
    """Where this rank sits: ``group`` of ``groups`` videos-at-a-time, ``member`` of the group's ``size`` ranks."""

    group: int
    groups: int
    member: int
    size: int

    @property
    def leader(self) -> bool:
        """The rank that writes the group's references and records (the others compute the same video)."""
        return self.member == 0


def layout(dist: Dist, config: ParallelConfig) -> Layout:
    if dist.world % config.size:
        raise SpecError(f"parallel: ulysses x ring = {config.size} does not divide the {dist.world} ranks; launch "
                        f"a multiple of {config.size} processes (torchrun --nproc-per-node {config.size})")
    return Layout(dist.rank // config.size, dist.world // config.size, dist.rank % config.size, config.size)


@dataclass
class VideoGroup:
    """The ranks computing one video: their process group and what was checked."""

    config: ParallelConfig
    layout: Layout
    mesh: object
    group: object  # torch.distributed ProcessGroup of the video's ranks
    calls: int = 0  # decisions checked
    outvoted: int = 0  # of which the ranks' rules differed

    def reset(self) -> None:
        self.calls = self.outvoted = 0

    def to_json(self) -> dict:
        return {"ulysses": self.config.ulysses, "ring": self.config.ring, "ranks": self.layout.size,
                "groups": self.layout.groups, "attention": "ulysses" if self.config.ring == 1 else "ring",
                "reduction": "decisions all-gathered per call: vote (compute if any rank computes), or a checked "
                             "agreement for policies declaring synchronise='none'",
                "checked_calls": self.calls, "outvoted": self.outvoted}


_ACTIVE: VideoGroup | None = None


def active() -> VideoGroup | None:
    return _ACTIVE


def start(dist: Dist, config: ParallelConfig, device: str) -> VideoGroup:
    """Join the process group (gloo on CPU, nccl on CUDA) and build the (group, ring, ulysses) mesh."""
    global _ACTIVE
    import torch.distributed as td
    from torch.distributed.device_mesh import init_device_mesh

    place = layout(dist, config)
    if config.ring > 1 and not device.startswith("cuda"):
        raise SpecError("parallel.ring: ring attention needs an attention backend that returns the log-sum-exp "
                        "(flash on CUDA); diffusers' native CPU backend does not: use parallel.ulysses on CPU")
    if "MASTER_ADDR" not in os.environ:
        raise SpecError("parallel: launch with torchrun (e.g. torchrun --nproc-per-node "
                        f"{config.size} -m sencache_bench run SPEC); one video across ranks needs a process group")
    if not td.is_initialized():
        td.init_process_group("nccl" if device.startswith("cuda") else "gloo", rank=dist.rank,
                              world_size=dist.world, timeout=datetime.timedelta(seconds=config.timeout_s))
    kind = "cuda" if device.startswith("cuda") else "cpu"
    mesh = init_device_mesh(kind, (place.groups, config.ring, config.ulysses),
                            mesh_dim_names=("group", "ring", "ulysses"))
    _ACTIVE = VideoGroup(config, place, mesh, mesh["ring", "ulysses"]._flatten().get_group())
    return _ACTIVE


def stop() -> None:
    global _ACTIVE
    import torch.distributed as td

    _ACTIVE = None
    if td.is_initialized():
        td.destroy_process_group()


def enable(transformer: torch.nn.Module, video: VideoGroup, device: str) -> None:
    """diffusers' context parallelism on ``transformer`` with our mesh (its ``enable_parallelism`` needs an
    accelerator); the model's own ``_cp_plan`` says where the sequence is split and gathered."""
    from diffusers.hooks.context_parallel import apply_context_parallel
    from diffusers.models._modeling_parallel import ContextParallelConfig
    from diffusers.models._modeling_parallel import ParallelConfig as DiffusersParallel
    from diffusers.models.attention import AttentionModuleMixin
    from diffusers.models.attention_processor import Attention

    plan = getattr(transformer, "_cp_plan", None)
    if plan is None:
        raise SpecError(f"parallel: {type(transformer).__name__} has no context-parallel plan in diffusers "
                        f"(`_cp_plan`; Wan and LTX-Video have one); run this model with one rank per video")
    cp = ContextParallelConfig(ring_degree=video.config.ring, ulysses_degree=video.config.ulysses,
                               mesh=video.mesh)
    config = DiffusersParallel(context_parallel_config=cp)
    config.setup(torch.distributed.get_rank(), torch.distributed.get_world_size(), torch.device(device),
                 mesh=video.mesh)
    transformer._parallel_config = config
    for module in transformer.modules():
        if isinstance(module, (Attention, AttentionModuleMixin)) and hasattr(module.processor, "_parallel_config"):
            module.processor._parallel_config = config
    apply_context_parallel(transformer, cp, plan)


@contextlib.contextmanager
def outermost(transformer: torch.nn.Module):
    """Around a policy's attach or detach: the split/gather hooks come off first and go back on last, so they wrap
    the policy's (a block hook then sees and caches this rank's shard, and a reused stack returns a shard the gather
    expects). Removing a hook from under another one is not safe in diffusers' registry (an outer hook with its own
    ``new_forward`` would be bypassed), so they are only ever removed from the top."""
    from diffusers.hooks.context_parallel import apply_context_parallel, remove_context_parallel

    config = getattr(transformer, "_parallel_config", None)
    if config is None or config.context_parallel_config is None:
        yield
        return
    remove_context_parallel(transformer, transformer._cp_plan)
    try:
        yield
    finally:
        apply_context_parallel(transformer, config.context_parallel_config, transformer._cp_plan)


def agree(policy, label: str, branch: str, index: int, compute: bool) -> bool:
    """The decision every rank of the video applies (see the module docstring); ``compute`` when no group."""
    video = _ACTIVE
    if video is None:
        return compute
    import torch.distributed as td

    mine = torch.tensor([int(compute)], dtype=torch.int64)
    every = [torch.zeros_like(mine) for _ in range(video.layout.size)]
    td.all_gather(every, mine, group=video.group)
    votes = [int(v.item()) for v in every]
    video.calls += 1
    if len(set(votes)) == 1:
        return compute
    if getattr(policy, "synchronise", "vote") == "none":
        raise ParallelError(f"policy {label!r} decided differently across the ranks of one video at call {index} of "
                            f"branch {branch!r} (compute per rank: {votes}); it declares synchronise='none' (decisions "
                            f"independent of the rank's shard) but they are not: remove the declaration so the "
                            f"ranks vote")
    video.outvoted += 1
    return True


def check_policy(config) -> None:
    """Refuse a policy whose decisions no rank vote reaches: diffusers' and cache-dit's own hooks decide from
    their shard, except those that vote themselves (``ranks_agree``) or follow a fixed schedule."""
    if config.make_policy() is None and not (config.ranks_agree or config.fixed_schedule()):
        raise SpecError(f"parallel: policy {config.name!r} decides in its library's own hooks, from each rank's shard, "
                        f"with no vote across the ranks of a video (they would deadlock); run it with one rank per "
                        f"video, or use a policy of this package")


def _scratch(spec, video: VideoGroup) -> Path:
    out = spec.output_dir
    return out.parent / f".{out.name}.rank{torch.distributed.get_rank()}"


def rank_spec(spec, video: VideoGroup):
    """The spec this rank runs: the leader's own; another rank's writes into a hard-linked copy of the output folder
    taken before anyone writes (so every rank finds the same references and FLOP counts, and calls the same
    collectives), kept out of the results."""
    import dataclasses

    local = spec
    if not video.layout.leader:
        scratch = _scratch(spec, video)
        shutil.rmtree(scratch, ignore_errors=True)
        for path in spec.output_dir.rglob("*") if spec.output_dir.is_dir() else []:
            target = scratch / path.relative_to(spec.output_dir)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif path.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, target)
        scratch.mkdir(parents=True, exist_ok=True)
        local = dataclasses.replace(spec, output_dir=scratch)
    torch.distributed.barrier(group=video.group)
    return local


def finish(spec, video: VideoGroup) -> None:
    """The group meets once its videos are done (the leader's records are then complete); the copies go."""
    torch.distributed.barrier(group=video.group)
    if not video.layout.leader:
        shutil.rmtree(_scratch(spec, video), ignore_errors=True)
