"""Fidelity metrics (EVALUATION.md, "Fidelity metrics") against values worked out independently."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from sencache_bench.metrics import fidelity
from sencache_bench.metrics.fidelity import (
    LPIPSUnavailable,
    alexnet_checkpoint_path,
    build_lpips,
    compute_fidelity,
    lpips_per_frame,
    psnr_per_frame,
    ssim_per_frame,
)

needs_lpips_heads = pytest.mark.skipif(
    importlib.util.find_spec("lpips") is None, reason="the lpips wheel (linear heads) is not installed"
)
# Where torch caches the real AlexNet backbone on this machine: $TORCH_HOME (default ~/.cache/torch)/hub/checkpoints.
REAL_BACKBONE = alexnet_checkpoint_path()


def _random_video(seed: int, shape: tuple[int, ...] = (3, 32, 40, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _structured_video(frames: int = 3, h: int = 33, w: int = 45) -> np.ndarray:
    """Gradients, a sinusoid and a moving square: edges and flat areas, unlike uniform noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for f in range(frames):
        r = x / (w - 1)
        g = 0.5 + 0.5 * np.sin(0.4 * x + 0.3 * y + f)
        b = np.zeros((h, w))
        b[5 + f : 20 + f, 8 + 2 * f : 25 + 2 * f] = 1.0
        out.append(np.stack([r, g, b], axis=-1))
    return np.round(np.stack(out) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def random_lpips() -> fidelity.LPIPSAlex:
    if importlib.util.find_spec("lpips") is None:
        pytest.skip("the lpips wheel (linear heads) is not installed")
    return build_lpips(random_trunk=True, seed=0)


def _add_noise(v: np.ndarray, seed: int, sigma: float) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, v.shape)
    return np.clip(v + noise, 0, 255).round().astype(np.uint8)


# ---------------------------------------------------------------------------------------- PSNR


def test_psnr_identical_is_capped_at_100() -> None:
    v = _random_video(0)
    assert psnr_per_frame(v, v).tolist() == [100.0, 100.0, 100.0]


def test_psnr_known_offset_matches_hand_value() -> None:
    ref = np.full((2, 16, 24, 3), 128, dtype=np.uint8)
    gen = ref + np.uint8(10)  # 138: no clipping, every pixel off by exactly 10/255
    expected = 20 * math.log10(255 / 10)  # mse = (10/255)^2, MAX = 1
    got = psnr_per_frame(torch.from_numpy(ref), torch.from_numpy(gen))
    assert got.shape == (2,)
    assert torch.allclose(got, torch.full((2,), expected, dtype=got.dtype), atol=1e-4, rtol=0)


def test_psnr_is_per_frame() -> None:
    ref = np.full((2, 16, 16, 3), 100, dtype=np.uint8)
    gen = ref.copy()
    gen[1] += 5
    got = psnr_per_frame(ref, gen)
    assert got[0] == 100.0
    assert got[1] == pytest.approx(20 * math.log10(255 / 5), abs=1e-6)


# ---------------------------------------------------------------------------------------- SSIM


def _skimage_ssim(ref: np.ndarray, gen: np.ndarray) -> list[float]:
    return [
        structural_similarity(
            a.astype(np.float64) / 255,
            b.astype(np.float64) / 255,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=-1,
        )
        for a, b in zip(ref, gen)
    ]


def test_ssim_identical_is_one() -> None:
    v = _random_video(1)
    assert torch.allclose(ssim_per_frame(v, v), torch.ones(3, dtype=torch.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "ref, gen",
    [
        (_random_video(2), _random_video(3)),
        (_structured_video(), _add_noise(_structured_video(), seed=4, sigma=12.0)),
        (_structured_video(), np.roll(_structured_video(), 2, axis=2)),
    ],
    ids=["random", "structured+noise", "structured-shifted"],
)
def test_ssim_matches_skimage_valid_region(ref: np.ndarray, gen: np.ndarray) -> None:
    got = ssim_per_frame(ref, gen).tolist()
    want = _skimage_ssim(ref, gen)
    assert got == pytest.approx(want, abs=1e-4)
    assert all(v < 0.999 for v in got)  # a real difference, not a trivially equal pair


def test_ssim_rejects_frames_smaller_than_window() -> None:
    v = _random_video(5, (1, 10, 20, 3))
    with pytest.raises(ValueError, match="11x11"):
        ssim_per_frame(v, v)


# --------------------------------------------------------------------------------------- LPIPS


def _reference_lpips(model: fidelity.LPIPSAlex, ref: np.ndarray, gen: np.ndarray) -> list[float]:
    """Straightforward LPIPS from the model's raw weights, one frame at a time, no module forward."""
    sd = model.state_dict()
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(img: np.ndarray) -> list[torch.Tensor]:
        x = torch.from_numpy(img).float().permute(2, 0, 1)[None] / 255 * 2 - 1
        x = (x - shift) / scale
        out = []
        x = F.relu(F.conv2d(x, sd["trunk.features.0.weight"], sd["trunk.features.0.bias"], stride=4, padding=2))
        out.append(x)
        x = F.max_pool2d(x, 3, 2)
        x = F.relu(F.conv2d(x, sd["trunk.features.3.weight"], sd["trunk.features.3.bias"], padding=2))
        out.append(x)
        x = F.max_pool2d(x, 3, 2)
        for i in (6, 8, 10):
            x = F.relu(F.conv2d(x, sd[f"trunk.features.{i}.weight"], sd[f"trunk.features.{i}.bias"], padding=1))
            out.append(x)
        return out

    values = []
    for a, b in zip(ref, gen):
        total = 0.0
        for k, (fa, fb) in enumerate(zip(taps(a), taps(b))):
            na = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
            nb = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
            w = sd[f"heads.{k}.weight"].view(-1)
            total += float(((na - nb) ** 2 * w.view(1, -1, 1, 1)).sum(dim=1).mean())
        values.append(total)
    return values


def test_lpips_random_trunk_identical_is_zero(random_lpips: fidelity.LPIPSAlex) -> None:
    v = _random_video(6)
    assert lpips_per_frame(v, v, random_lpips).tolist() == [0.0, 0.0, 0.0]


def test_lpips_random_trunk_positive_symmetric_and_matches_reference(random_lpips: fidelity.LPIPSAlex) -> None:
    ref, gen = _random_video(7), _random_video(8)
    ab = lpips_per_frame(ref, gen, random_lpips, chunk=2)  # chunk < F: exercises the batching
    ba = lpips_per_frame(gen, ref, random_lpips)
    assert ab.shape == (3,)
    assert (ab > 0).all()
    assert torch.allclose(ab, ba, atol=1e-6, rtol=0)
    assert ab.tolist() == pytest.approx(_reference_lpips(random_lpips, ref, gen), rel=1e-4, abs=1e-6)


def test_lpips_random_trunk_is_seeded_and_flagged() -> None:
    if importlib.util.find_spec("lpips") is None:
        pytest.skip("the lpips wheel (linear heads) is not installed")
    a, b, c = (build_lpips(random_trunk=True, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.trunk.features[0].weight, b.trunk.features[0].weight)
    assert not torch.equal(a.trunk.features[0].weight, c.trunk.features[0].weight)
    assert not a.is_real_metric
    # the real heads are loaded: non-negative, not a fresh random init
    assert all((h.weight >= 0).all() for h in a.heads)


def test_trunk_names_match_torchvision_alexnet_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file with torchvision's key names and shapes (classifier included) loads, weights_only."""
    if importlib.util.find_spec("lpips") is None:
        pytest.skip("the lpips wheel (linear heads) is not installed")
    shapes = {
        "features.0": (64, 3, 11, 11),
        "features.3": (192, 64, 5, 5),
        "features.6": (384, 192, 3, 3),
        "features.8": (256, 384, 3, 3),
        "features.10": (256, 256, 3, 3),
        "classifier.1": (8, 16),  # ignored by LPIPS; small here to keep the file small
    }
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for name, shape in shapes.items():
        sd[f"{name}.weight"] = torch.randn(shape, generator=gen)
        sd[f"{name}.bias"] = torch.randn(shape[0], generator=gen)
    ckpt = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(sd, ckpt)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = build_lpips()
    assert model.is_real_metric
    for name in shapes:
        if name.startswith("features."):
            assert torch.equal(model.trunk.state_dict()[f"{name}.weight"], sd[f"{name}.weight"])


def test_lpips_too_small_frames_rejected(random_lpips: fidelity.LPIPSAlex) -> None:
    v = _random_video(9, (1, 30, 64, 3))
    with pytest.raises(ValueError, match="31x31"):
        lpips_per_frame(v, v, random_lpips)


@pytest.mark.skipif(not REAL_BACKBONE.is_file(), reason=f"real AlexNet backbone not present at {REAL_BACKBONE}")
@needs_lpips_heads
def test_real_lpips_zero_for_identical_and_grows_with_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_lpips()
    ref = _structured_video(2, 64, 64)
    noisy = [_add_noise(ref, seed=0, sigma=s) for s in (4.0, 32.0)]
    assert lpips_per_frame(ref, ref, model).tolist() == [0.0, 0.0]
    low, high = (lpips_per_frame(ref, n, model) for n in noisy)
    assert (0 < low).all() and (low < high).all() and (high < 1.5).all()


# ------------------------------------------------------------------------------ compute_fidelity


def test_compute_fidelity_all_metrics_with_random_trunk(random_lpips: fidelity.LPIPSAlex) -> None:
    ref = np.full((2, 32, 32, 3), 128, dtype=np.uint8)
    res = compute_fidelity(ref, ref + np.uint8(10), ["psnr", "ssim", "lpips"], lpips_model=random_lpips)
    assert set(res.values) == set(res.per_frame) == {"psnr", "ssim", "lpips"}
    assert res.values["psnr"] == pytest.approx(20 * math.log10(25.5), abs=1e-4)
    assert len(res.per_frame["ssim"]) == 2
    assert res.values["lpips"] == pytest.approx(float(np.mean(res.per_frame["lpips"])))
    assert "not a real LPIPS" in res.notes["lpips"]


def test_compute_fidelity_lpips_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    v = _random_video(10)
    res = compute_fidelity(v, v, ["psnr", "ssim", "lpips"])
    assert res.values["lpips"] is None
    assert "lpips" not in res.per_frame
    expected = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert str(expected) in res.notes["lpips"]
    assert res.notes["lpips"].startswith("unavailable: ")
    assert fidelity.ALEXNET_URL in res.notes["lpips"]
    assert res.values["psnr"] == 100.0
    assert res.values["ssim"] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(LPIPSUnavailable, match="alexnet-owt-7be5be79.pth"):
        build_lpips()


def test_compute_fidelity_rejects_unknown_metric_and_shape_mismatch() -> None:
    v = _random_video(11)
    with pytest.raises(ValueError, match=r"valid: \['psnr', 'ssim', 'lpips'\]"):
        compute_fidelity(v, v, ["psnr", "fvd"])
    with pytest.raises(ValueError, match=r"\(3, 32, 40, 3\).*\(3, 32, 38, 3\)"):
        compute_fidelity(v, v[:, :, :38], ["psnr"])
    with pytest.raises(ValueError, match="uint8"):
        compute_fidelity(v.astype(np.float32), v.astype(np.float32), ["psnr"])
