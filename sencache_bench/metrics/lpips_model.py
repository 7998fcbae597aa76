"""LPIPS v0.1 (AlexNet, or VGG16 for ``lpips_vgg``): the lpips package's model or our own loader of the same network.

Where the weights come from and why there are two loaders: :mod:`sencache_bench.metrics.fidelity`'s docstring.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

from sencache_bench.errors import BenchError
from sencache_bench.metrics.pixel import FRAME_CHUNK, VideoLike, _check_pair, _unit_chunks, default_device

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


class LPIPSUnavailable(BenchError):
    """LPIPS cannot run in this environment; `str()` names the missing file and how to get it."""



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
