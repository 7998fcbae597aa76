"""Fidelity of a cached video against its uncached reference: PSNR, SSIM, LPIPS.

Protocol (the TeaCache, MagCache and PAB eval scripts; the project's evaluation notes, "Fidelity
metrics"): the reference is the same model, prompt, seed, sampler and step count with no
cache; both videos are uint8 RGB of shape (F, H, W, 3), scaled to [0, 1], every frame at native
resolution, no resizing. Each metric is computed per frame:

- PSNR over the whole CxHxW frame with MAX = 1; 100 when mse < 1e-10.
- SSIM per RGB channel with an 11-tap Gaussian window (sigma 1.5), C1 = 0.01^2, C2 = 0.03^2, data
  range 1, population (co)variances, averaged over the valid region only (no padding), channels
  averaged. This equals skimage's structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=-1), which crops (11 - 1) // 2 = 5 pixels
  per border (checked within 1e-4 in tests/metrics/test_fidelity.py).
- LPIPS v0.1, AlexNet variant: inputs mapped to [-1, 1], mean over each tap's spatial map.

PSNR and SSIM are ours, not torchmetrics' (torchmetrics is the tests' second implementation), because
torchmetrics differs: its ``structural_similarity_index_measure`` reflect-pads each frame by 5 pixels and
averages its SSIM map over the whole frame, border included (0.02 to 0.07 off skimage on 32x40 frames);
its map cropped by those 5 pixels equals ours to ~1e-15, but its non-separable 11x11 Gaussian convolution
took 307 s per 81-frame 832x480 pair on the project's 2-core CPU against 58 to 63 s for our separable one
(``benchmarks/metrics_speed.py``). Its ``peak_signal_noise_ratio`` turns ln into log10 with a float32
constant (``10 / log(tensor(10.))``), about 4e-8 relative (1.5e-6 dB at 34 dB) off float64.

PSNR and SSIM run in float64 on ``device`` (default: CUDA when available), ``FRAME_CHUNK`` frames per batch.

Aggregation: a per-video value (`FidelityResult.values`) is the MEAN OVER FRAMES of that video.
The eval scripts average per frame index over videos first and then over frames; for videos with
the same frame count this equals the mean over videos of these per-video values. The per-frame
lists (`FidelityResult.per_frame`) are kept so a table can use either order.

LPIPS model: the `lpips` package's own ``lpips.LPIPS`` (what the papers' eval scripts call) wherever
torchvision imports (``lpips`` imports it); elsewhere (the CPU set-up: torchvision would pull another
torch) the loader here, `LPIPSAlex`, which computes the same network (a test checks both give the same
value with the same trunk weights where torchvision imports). Weights: the linear heads ship in the `lpips`
wheel (read from the installed package, found without importing it, or from ``<venv>/share/lpips/`` where
``make env`` extracts only them); the AlexNet backbone is torchvision's `alexnet-owt-7be5be79.pth` and must
already sit in `$TORCH_HOME/hub/checkpoints`; both models load it from that file. Nothing is ever
downloaded: when the file is missing LPIPS reports None with a note naming the file and where to get it.

Other papers' definitions (EasyCache: PSNR pooled over the video, torchmetrics' SSIM, LPIPS with VGG16) are metrics
of their own names: the registry is ``metrics/definitions.py``, the computations ``metrics/variants.py``;
``lpips_vgg`` is built here like the AlexNet model (``build_lpips(net="vgg")``), from torchvision's
``vgg16-397923af.pth`` and the wheel's ``weights/v0.1/vgg.pth`` heads.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sencache_bench.errors import BenchError
from sencache_bench.metrics.definitions import FIDELITY_METRICS

VALID_METRICS = FIDELITY_METRICS

PSNR_CAP = 100.0
PSNR_MSE_FLOOR = 1e-10

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03  # C1 = (K1 * data_range)^2, C2 = (K2 * data_range)^2

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"
#: torchvision's checkpoint file of each LPIPS trunk (``features.N.*`` keys)
TRUNK_FILES = {"alex": ALEXNET_FILE, "vgg": "vgg16-397923af.pth"}
# LPIPS "ScalingLayer": re-centres [-1, 1] inputs to the statistics the ImageNet trunk expects.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_NORM_EPS = 1e-10
# Smallest side for which every AlexNet tap still has at least one pixel.
LPIPS_MIN_SIDE = 31

FRAME_CHUNK = 8  # frames converted to float at once: bounds memory on 81-frame 480p videos

VideoLike = torch.Tensor | np.ndarray


class LPIPSUnavailable(BenchError):
    """LPIPS cannot run in this environment; `str()` names the missing file and how to get it."""


@dataclass
class FidelityResult:
    """Fidelity of one generated video against its reference.

    `values` holds the per-video value (mean over frames), None when a metric could not run;
    `per_frame` the per-frame values of the metrics that ran; `notes` why a metric is missing or
    qualified (e.g. a random LPIPS trunk).
    """

    values: dict[str, float | None] = field(default_factory=dict)
    per_frame: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# input handling


def _as_video(x: VideoLike, name: str) -> torch.Tensor:
    """Check one video is uint8 (F, H, W, 3), the decoded form the protocol starts from."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    if t.dtype != torch.uint8:
        raise ValueError(f"{name}: expected uint8 frames, got dtype {t.dtype}")
    if t.ndim != 4 or t.shape[-1] != 3 or t.shape[0] < 1:
        raise ValueError(f"{name}: expected shape (F, H, W, 3) with F >= 1, got {tuple(t.shape)}")
    return t


def _check_pair(ref: VideoLike, gen: VideoLike) -> tuple[torch.Tensor, torch.Tensor]:
    r, g = _as_video(ref, "ref"), _as_video(gen, "gen")
    if r.shape != g.shape:
        raise ValueError(
            f"ref and gen differ in shape: ref {tuple(r.shape)} vs gen {tuple(g.shape)} "
            "(the protocol compares frame by frame at native resolution, no resizing)"
        )
    return r, g


def _unit_chunks(
    ref: torch.Tensor,
    gen: torch.Tensor,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    chunk: int = FRAME_CHUNK,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (N, 3, H, W) float chunks in [0, 1] so a whole video is never held as float."""
    for start in range(0, ref.shape[0], chunk):
        a, b = (v[start : start + chunk].to(device).permute(0, 3, 1, 2).to(dtype) / 255.0 for v in (ref, gen))
        yield a, b


# ----------------------------------------------------------------------------------------------
# PSNR and SSIM


def default_device() -> torch.device:
    """Where the metrics run when the caller names no device: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def psnr_per_frame(ref: VideoLike, gen: VideoLike, device: torch.device | str | None = None,
                   chunk: int = FRAME_CHUNK) -> torch.Tensor:
    """PSNR (dB) of each frame over all of C x H x W, MAX = 1, capped at 100 (mse < 1e-10); (F,) on CPU."""
    r, g = _check_pair(ref, gen)
    out = []
    for a, b in _unit_chunks(r, g, torch.float64, device or default_device(), chunk):
        mse = (a - b).pow(2).mean(dim=(1, 2, 3))
        psnr = -10.0 * torch.log10(mse.clamp_min(PSNR_MSE_FLOOR))
        out.append(torch.where(mse < PSNR_MSE_FLOOR, torch.full_like(mse, PSNR_CAP), psnr).cpu())
    return torch.cat(out)


def _gaussian_taps(dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    x = torch.arange(SSIM_WINDOW, dtype=dtype, device=device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def _blur_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of every channel, valid region only (no padding)."""
    c = x.shape[1]
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim_per_frame(ref: VideoLike, gen: VideoLike, device: torch.device | str | None = None,
                   chunk: int = FRAME_CHUNK) -> torch.Tensor:
    """Mean SSIM of each frame (see module docstring for the exact window and constants); (F,) on CPU."""
    r, g = _check_pair(ref, gen)
    h, w = r.shape[1:3]
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {h}x{w}")
    device = device or default_device()
    taps = _gaussian_taps(torch.float64, device)
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    out = []
    for a, b in _unit_chunks(r, g, torch.float64, device, chunk):
        stats = _blur_valid(torch.cat([a, b, a * a, b * b, a * b], dim=1), taps)
        mu_a, mu_b, e_aa, e_bb, e_ab = stats.chunk(5, dim=1)
        var_a, var_b, cov = e_aa - mu_a**2, e_bb - mu_b**2, e_ab - mu_a * mu_b
        num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
        den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
        out.append((num / den).mean(dim=(2, 3)).mean(dim=1).cpu())
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------
# LPIPS (AlexNet, v0.1)


class TappedTrunk(nn.Module):
    """A convolutional trunk (``self.features``) whose forward returns the outputs at ``TAPS``: what LPIPS reads."""

    TAPS: tuple[int, ...] = ()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.TAPS:
                taps.append(x)
        return taps


class AlexNetTrunk(TappedTrunk):
    """AlexNet convolutional trunk named like torchvision's `alexnet().features`.

    Indices match torchvision so its checkpoint's `features.N.*` keys load as they are; the final
    max-pool (index 12) is left out because LPIPS never reads past relu5. `forward` returns the five
    LPIPS taps: the ReLU outputs after conv1..conv5.
    """

    TAPS = (1, 4, 7, 9, 11)
    CHANNELS = (64, 192, 384, 256, 256)
    MIN_SIDE = 31  # LPIPS_MIN_SIDE

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
        )


def _unit_normalise(f: torch.Tensor) -> torch.Tensor:
    """Divide each spatial position's feature vector by its L2 norm over channels (LPIPS v0.1)."""
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + LPIPS_NORM_EPS)


class LPIPSAlex(nn.Module):
    """LPIPS v0.1 with the AlexNet trunk: inputs are (N, 3, H, W) in [-1, 1], output (N,).

    `is_real_metric` is False for a random trunk (`build_lpips(random_trunk=True)`): such a model
    only exercises the plumbing and its numbers are not LPIPS.
    """

    def __init__(self, trunk: AlexNetTrunk, is_real_metric: bool) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in trunk.CHANNELS)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        self.is_real_metric = is_real_metric
        self.min_side = trunk.MIN_SIDE

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        f0 = self.trunk((x0 - self.shift) / self.scale)
        f1 = self.trunk((x1 - self.shift) / self.scale)
        total = torch.zeros(x0.shape[0], device=x0.device, dtype=x0.dtype)
        for a, b, head in zip(f0, f1, self.heads):
            diff = (_unit_normalise(a) - _unit_normalise(b)).pow(2)
            total = total + head(diff).mean(dim=(1, 2, 3))
        return total


def alexnet_checkpoint_path(net: str = "alex") -> Path:
    """Where torchvision (and `lpips`) would cache the AlexNet (or ``net="vgg"``: VGG16) backbone:
    $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TRUNK_FILES[net]


#: where ``make env`` extracts the heads from the lpips wheel when lpips itself is not installed
SHARED_HEADS = Path(sys.prefix) / "share" / "lpips" / "weights" / "v0.1" / "alex.pth"


def lpips_heads_path(net: str = "alex") -> Path:
    """The v0.1 linear heads of ``net`` (alex, vgg): inside the installed `lpips` package (found without importing
    it), or extracted from its wheel into ``<venv>/share/lpips`` (``make env``)."""
    spec = importlib.util.find_spec("lpips")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / f"{net}.pth"
        if path.is_file():
            return path
        raise LPIPSUnavailable(f"needs {path} (shipped in the lpips wheel; reinstall lpips)")
    shared = SHARED_HEADS.with_name(f"{net}.pth")
    if shared.is_file():
        return shared
    raise LPIPSUnavailable(
        f"needs the LPIPS linear heads {shared.name} from the lpips wheel (`make env` extracts them into "
        f"{SHARED_HEADS.parent}; or pip install --no-deps lpips: it is only imported where torchvision imports)"
    )


@functools.cache
def torchvision_imports() -> bool:
    """Whether ``import torchvision`` works (``lpips`` needs it); a torchvision built for another torch fails."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # ImportError, or a RuntimeError from operators its compiled part cannot register
        return False
    return True


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: report it rather than crash a run
        raise LPIPSUnavailable(f"could not read {path}: {err}") from err


# torchvision features index -> the lpips package's slice holding it (pretrained_networks.alexnet / vgg16: slices
# end after alexnet's indices 1, 4, 7, 9, 11 and vgg16's 3, 8, 15, 22, 29)
_LPIPS_SLICE = {"alex": {0: 1, 3: 2, 6: 3, 8: 4, 10: 5},
                "vgg": {i: 1 + sum(i > end for end in (3, 8, 15, 22)) for i in range(29)}}


class PackageLPIPS(nn.Module):
    """The `lpips` package's ``LPIPS(net="alex", version="0.1")``, its trunk loaded from the weights of an
    `AlexNetTrunk` (torchvision's ``features`` names: ``N.weight``), so nothing is downloaded; same call
    convention as `LPIPSAlex`."""

    def __init__(self, features_state: dict[str, torch.Tensor], is_real_metric: bool, net: str = "alex",
                 min_side: int = LPIPS_MIN_SIDE) -> None:
        super().__init__()
        import lpips

        # pnet_rand: build the trunk without asking torchvision for weights; the heads load from the wheel
        self.model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
        state = {}
        for key, value in features_state.items():
            index, kind = key.split(".")
            state[f"slice{_LPIPS_SLICE[net][int(index)]}.{index}.{kind}"] = value
        self.model.net.load_state_dict(state, strict=True)
        self.model.eval().requires_grad_(False)
        self.is_real_metric = is_real_metric
        self.min_side = min_side

    @property
    def shift(self) -> torch.Tensor:
        return self.model.scaling_layer.shift

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return self.model(x0, x1).flatten()


LPIPSModel = LPIPSAlex | PackageLPIPS


def build_lpips(*, random_trunk: bool = False, seed: int = 0, device: torch.device | str = "cpu",
                backend: str = "auto", net: str = "alex") -> LPIPSModel:
    """Build LPIPS-Alex v0.1 (``net="vgg"``: LPIPS-VGG16, ``lpips_vgg``) in eval mode, with no gradients and no
    downloads.

    ``backend``: "package" (the `lpips` package's model; needs torchvision), "own" (`LPIPSAlex`), "auto"
    (the package wherever torchvision imports). random_trunk=True gives a trunk with torch's default init
    under `seed` (the real linear heads are still used): for plumbing tests only, NOT a real metric; both
    backends get the same trunk for the same seed. Otherwise the torchvision backbone must already be at
    `alexnet_checkpoint_path()`; raises LPIPSUnavailable if not.
    """
    if net not in TRUNK_FILES:
        raise ValueError(f"LPIPS net must be one of {', '.join(TRUNK_FILES)}, got {net!r}")
    if backend not in ("auto", "package", "own"):
        raise ValueError(f"LPIPS backend must be auto, package or own, got {backend!r}")
    if backend == "package" and not torchvision_imports():
        raise LPIPSUnavailable("the lpips package needs torchvision, which does not import here")
    package = backend == "package" or (backend == "auto" and torchvision_imports()
                                        and importlib.util.find_spec("lpips") is not None)
    with torch.random.fork_rng(devices=[]):  # leave the caller's CPU RNG stream untouched
        if random_trunk:
            torch.manual_seed(seed)
        if net == "vgg":
            from .variants import VGG16Trunk

            trunk = VGG16Trunk()
        else:
            trunk = AlexNetTrunk()
        model = LPIPSAlex(trunk, is_real_metric=not random_trunk)
    kind = {"alex": "AlexNet", "vgg": "VGG16"}[net]
    if not random_trunk:
        path = alexnet_checkpoint_path(net)
        if not path.is_file():
            raise LPIPSUnavailable(
                f"needs {path} (torchvision {kind} backbone; on a machine with network access download "
                f"https://download.pytorch.org/models/{path.name} into {path.parent}; nothing is downloaded here)"
            )
        features = {k: v for k, v in _load_state(path).items() if k.startswith("features.")}
        try:
            trunk.load_state_dict(features, strict=True)
        except RuntimeError as err:
            raise LPIPSUnavailable(f"{path} is not torchvision's {kind} checkpoint: {err}") from err
    if package:
        return PackageLPIPS(trunk.features.state_dict(), is_real_metric=not random_trunk, net=net,
                            min_side=trunk.MIN_SIDE).to(device)
    heads_path = lpips_heads_path(net)
    heads = _load_state(heads_path)
    try:
        with torch.no_grad():
            for i, head in enumerate(model.heads):
                head.weight.copy_(heads[f"lin{i}.model.1.weight"])
    except (KeyError, RuntimeError) as err:
        raise LPIPSUnavailable(f"{heads_path} does not hold the v0.1 {kind} heads: {err}") from err
    return model.eval().requires_grad_(False).to(device)


_REAL_LPIPS: dict[tuple[str, str], LPIPSModel] = {}


def load_lpips(device: torch.device | str | None = None, net: str = "alex") -> LPIPSModel:
    """The real LPIPS-Alex (or -VGG) on ``device``, cached per backbone path and device (failures are not
    cached: adding the file later works)."""
    device = torch.device(device or default_device())
    key = (str(alexnet_checkpoint_path(net)), str(device))
    if key not in _REAL_LPIPS:
        _REAL_LPIPS[key] = build_lpips(device=device, net=net)
    return _REAL_LPIPS[key]


def lpips_per_frame(ref: VideoLike, gen: VideoLike, model: LPIPSModel, chunk: int = FRAME_CHUNK) -> torch.Tensor:
    """LPIPS of each frame pair, `chunk` frames per forward pass on the model's device; (F,) on CPU."""
    r, g = _check_pair(ref, gen)
    h, w = r.shape[1:3]
    side = getattr(model, "min_side", LPIPS_MIN_SIDE)
    if min(h, w) < side:
        raise ValueError(f"LPIPS needs frames of at least {side}x{side} for its trunk, got {h}x{w}")
    device = model.shift.device
    out = []
    with torch.inference_mode():
        for a, b in _unit_chunks(r, g, torch.float32, device=device, chunk=chunk):
            out.append(model(a * 2 - 1, b * 2 - 1).cpu())
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------
# entry point for the runner


def compute_fidelity(
    ref: VideoLike,
    gen: VideoLike,
    metrics: Sequence[str],
    lpips_model: LPIPSModel | None = None,
    device: torch.device | str | None = None,
    lpips_vgg_model: LPIPSModel | None = None,
) -> FidelityResult:
    """Compute the requested metrics of `gen` against its uncached reference `ref`.

    Per-video values are means over frames. PSNR and SSIM run on ``device`` (default: CUDA when
    available; the run's device when the runner passes it). LPIPS uses `lpips_model` if given, else the
    real model (cached) on ``device``; if its backbone is missing the value is None, `notes["lpips"]` says
    why, and the other metrics are still computed. ``lpips_vgg`` likewise, with ``lpips_vgg_model``.
    ``psnr_pooled`` is one value per video: it has no per-frame list.
    """
    unknown = [m for m in metrics if m not in VALID_METRICS]
    if unknown:
        raise ValueError(f"unknown fidelity metric(s) {unknown}; valid: {list(VALID_METRICS)}")
    from . import variants

    r, g = _check_pair(ref, gen)
    result = FidelityResult()
    for name in dict.fromkeys(metrics):
        if name == "psnr":
            per = psnr_per_frame(r, g, device)
        elif name == "psnr_pooled":
            result.values[name] = variants.psnr_pooled(r, g, device)
            continue
        elif name == "ssim":
            per = ssim_per_frame(r, g, device)
        elif name == "ssim_torchmetrics":
            per = variants.ssim_torchmetrics_per_frame(r, g, device)
        else:
            net = "vgg" if name == "lpips_vgg" else "alex"
            model = lpips_vgg_model if net == "vgg" else lpips_model
            if model is None:
                try:
                    model = load_lpips(device, net=net)
                except LPIPSUnavailable as err:
                    result.values[name] = None
                    result.notes[name] = f"unavailable: {err}"
                    continue
            if not model.is_real_metric:
                result.notes[name] = (f"random {'VGG16' if net == 'vgg' else 'AlexNet'} trunk: plumbing check only, "
                                      "not a real LPIPS value")
            per = lpips_per_frame(r, g, model)
        result.values[name] = float(per.double().mean())
        result.per_frame[name] = per.tolist()
    return result
