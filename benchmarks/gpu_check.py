"""Full-size timing check on a lent GPU: wan2.1-t2v-1.3b (832x480, 81 frames; issue 27) or wan2.2-ti2v-5b
(1280x704, 121 frames; issue 24), random weights, bf16.

    python benchmarks/gpu_check.py [--model wan2.2-ti2v-5b] [--steps 4] [--rounds 2] [--out gpu_check.json]
    python benchmarks/gpu_check.py --small --device cpu --steps 2      # the same code path, tiny, on CPU

The real ``WanTransformer3DModel`` is built from the architecture file the FLOP counter uses
(``measure/architectures/<model>.json``) with seeded random weights (no download), and runs the Wan
pipeline's denoising loop itself (TI2V-5B as ``WanPipeline(expand_timesteps=True)`` runs it: one timestep per
post-patch token) (CFG: a "cond" and an "uncond" call per step, each in its ``cache_context``,
Euler steps on random text embeddings; the text encoder and the VAE are left out: the timed region is the
denoising phase). Interleaved over ``--rounds``, median per mode:

- ``bare``: no hook at all;
- ``recorded``: the harness's call recorder attached (marker hooks on every block, CUDA events per call,
  one synchronisation at the end): ``timing overhead`` = recorded / bare - 1;
- ``sync_per_call``: the recorder plus a ``torch.cuda.synchronize()`` before and after every call (what
  measure/calls.py did before issue 27): what per-call synchronisation cost;
- ``static``: the recorder and the ``static`` policy, every=2 (residual reuse): its speedup over
  ``recorded``, its Amdahl bound from the FLOPs of the calls it ran (counted on the meta device: ``outside``
  per call, the blocks per computed call), and the share of the bound reached.

Per mode: seconds per denoising step and peak memory (``torch.cuda.max_memory_allocated``). Prints one JSON
object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: model -> its default video (width, height, frames): the official settings (Wan 2.1 1.3B 480p; TI2V-5B 720p)
MODELS = {"wan2.1-t2v-1.3b": (832, 480, 81), "wan2.2-ti2v-5b": (1280, 704, 121)}
#: a tiny configuration of the same class, for --small (a CPU check of the whole path)
SMALL = {"num_attention_heads": 2, "attention_head_dim": 16, "text_dim": 32, "freq_dim": 32, "ffn_dim": 64,
         "num_layers": 2}
MODES = ("bare", "recorded", "sync_per_call", "static")


def architecture(model: str, small: bool) -> dict:
    """The architecture facts, with the transformer shrunk for --small (text tokens too)."""
    from sencache_bench.measure.full_size import load_architecture

    arch = copy.deepcopy(load_architecture(model))
    if small:
        arch["transformer"]["config"].update(SMALL)
        arch["text_tokens"] = 8
    return arch


def latent_shape(arch: dict, height: int, width: int, frames: int) -> tuple[int, int, int, int, int]:
    """(1, C, F', H', W'): the Wan VAE's latent of a ``frames`` x ``height`` x ``width`` video."""
    vae = arch["vae"]
    return (1, arch["transformer"]["config"]["in_channels"], (frames - 1) // vae["temporal_compression"] + 1,
            height // vae["spatial_compression"], width // vae["spatial_compression"])


def amdahl_bound(cost, calls: list) -> float:
    """Uncached FLOPs / the FLOPs of the calls as they ran (each priced by the blocks that ran): the most a
    policy can gain when only the transformer's work shrinks (the timed region is denoising only)."""
    full = cost.price(True, range(len(cost.blocks)))[0]
    ran = sum(cost.price(c.forward_ran, c.blocks_ran)[0] for c in calls)
    return len(calls) * full / ran


def summarize(samples: dict[str, list[float]], steps: int) -> dict[str, float]:
    """Median seconds per denoising step per mode, from each mode's timed loops (seconds per loop)."""
    return {mode: statistics.median(values) / steps for mode, values in samples.items() if values}


class Loop:
    """The denoising loop of WanPipeline on one transformer: random text embeddings, Euler steps."""

    def __init__(self, transformer, arch: dict, shape: tuple, steps: int, device: str, dtype, seed: int = 0):
        import torch

        g = torch.Generator("cpu").manual_seed(seed)
        text = arch["transformer"]["config"]["text_dim"]
        self.transformer, self.steps, self.device = transformer, steps, device
        self.latents = torch.randn(shape, generator=g).to(device, dtype)
        self.embeds = {b: torch.randn(1, arch["text_tokens"], text, generator=g).to(device, dtype)
                       for b in ("cond", "uncond")}
        self.timesteps = torch.linspace(1000, 0, steps + 1)
        p = arch["transformer"]["config"]["patch_size"]
        # expand_timesteps: every post-patch token carries the step's timestep (text-to-video: no frame kept at 0)
        self.tokens = (shape[2] // p[0]) * (shape[3] // p[1]) * (shape[4] // p[2]) \
            if arch.get("expand_timesteps") else None

    def run(self) -> float:
        """One timed loop: seconds from a synchronised start to a synchronised end (events on CUDA)."""
        import torch

        cuda = self.device.startswith("cuda")
        x = self.latents.clone()
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(self.steps):
                t = self.timesteps[i].expand(1 if self.tokens is None else (1, self.tokens)).to(self.device)
                out = {}
                for branch in ("cond", "uncond"):
                    with self.transformer.cache_context(branch):
                        out[branch] = self.transformer(hidden_states=x, timestep=t,
                                                       encoder_hidden_states=self.embeds[branch],
                                                       return_dict=False)[0]
                v = out["uncond"] + 5.0 * (out["cond"] - out["uncond"])
                x = x + (self.timesteps[i + 1] - self.timesteps[i]).item() / 1000 * v
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start


def _sync_hooks(transformer):
    """The old per-call synchronisation, as forward pre/post hooks (outermost: registered on the module)."""
    import torch

    sync = lambda *a: torch.cuda.synchronize() if torch.cuda.is_available() else None  # noqa: E731
    return [transformer.register_forward_pre_hook(lambda m, a: sync()),
            transformer.register_forward_hook(lambda m, a, o: sync())]


def check(args) -> dict:
    import torch
    from diffusers.hooks import HookRegistry

    from sencache_bench.measure.calls import MARKER_HOOK, CallRecorder
    from sencache_bench.measure.full_size import _count_transformer_call, _Latent, _model_class
    from sencache_bench.models import FAMILIES
    from sencache_bench.policies.static import StaticConfig

    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[args.dtype]
    arch = architecture(args.model, args.small)
    family = FAMILIES.get("wan")
    shape = latent_shape(arch, args.height, args.width, args.frames)
    cost = _count_transformer_call(arch, family, _Latent(*shape[1:]), batch=1)[1]  # FLOPs: the meta device
    torch.manual_seed(args.seed)
    with torch.device(args.device):  # random weights, made where they run (seeded)
        transformer = _model_class(arch["transformer"]["class"]).from_config(arch["transformer"]["config"])
    transformer = transformer.to(args.device, dtype).eval()
    blocks = [b for _, b in family.blocks(transformer)]
    loop = Loop(transformer, arch, shape, args.steps, args.device, dtype, args.seed)
    recorder = CallRecorder(transformer, blocks)
    policy = StaticConfig(every=2)
    cuda = args.device.startswith("cuda")

    def run(mode: str) -> tuple[float, list]:
        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        handles = []
        if mode != "bare":
            recorder.attach_markers()
            if mode == "static":
                policy.attach(transformer, blocks, recorder)
            recorder.attach_outer()
            recorder.start()
            if mode == "sync_per_call":
                handles = _sync_hooks(transformer)
        try:
            seconds = loop.run()
            recorder.resolve()
            return seconds, list(recorder.calls)
        finally:
            for h in handles:
                h.remove()
            if mode != "bare":
                recorder.detach_outer()
                if mode == "static":
                    policy.detach(transformer)
                registry.remove_hook(MARKER_HOOK, recurse=True)
                registry.invalidate_child_registries_cache()

    run("recorded")  # warm-up: kernels, allocator, lazy initialisation
    samples: dict[str, list[float]] = {m: [] for m in MODES}
    peaks: dict[str, float] = {}
    traces: dict[str, list] = {}
    for _ in range(args.rounds):
        for mode in MODES:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            seconds, traces[mode] = run(mode)
            samples[mode].append(seconds)
            if cuda:
                peaks[mode] = torch.cuda.max_memory_allocated() / 2**20
    per_step = summarize(samples, args.steps)
    bound = amdahl_bound(cost, traces["static"])
    speedup = per_step["recorded"] / per_step["static"]
    calls = traces["recorded"]
    return {"model": args.model + (" (small)" if args.small else ""), "device": args.device,
            "device_name": torch.cuda.get_device_name() if cuda else "cpu", "dtype": args.dtype,
            "video": f"{args.width}x{args.height}x{args.frames}", "latent": list(shape), "steps": args.steps,
            "rounds": args.rounds, "seconds_per_step": per_step, "samples_s": samples,
            "timing_overhead": per_step["recorded"] / per_step["bare"] - 1,
            "sync_per_call_cost": per_step["sync_per_call"] / per_step["recorded"] - 1,
            "recorded_call_s_sum_per_step": sum(c.seconds for c in calls) / args.steps,
            "static": {"nfe": sum(c.computed for c in traces["static"]), "calls": len(traces["static"]),
                       "speedup": speedup, "bound": bound, "share_of_bound": speedup / bound},
            "peak_memory_mb": peaks or None}


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="wan2.1-t2v-1.3b", choices=sorted(MODELS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    ap.add_argument("--height", type=int, default=None, help="default: the model's (MODELS)")
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--steps", type=int, default=4, help="denoising steps per timed loop (2 calls each)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every mode (median kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small", action="store_true", help="a tiny transformer of the same class (CPU check)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    width, height, frames = MODELS[args.model]
    args.width, args.height, args.frames = args.width or width, args.height or height, args.frames or frames
    if args.steps < 2 or args.rounds < 1:
        ap.error("--steps must be >= 2 (static every=2 needs a reused step) and --rounds >= 1")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: no CUDA device here (use --small --device cpu for the CPU check)")
    report = check(args)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
