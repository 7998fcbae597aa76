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

from sencache_bench.metrics import fidelity, lpips_model
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
    return build_lpips(random_trunk=True, seed=0, backend="own")


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


def test_torchmetrics_map_cropped_to_the_valid_region_equals_ours_its_own_mean_does_not() -> None:
    """torchmetrics as a second implementation: its SSIM map without the 5 reflect-padded border pixels is ours;
    its own mean (border included) is what the module docstring says it is: off skimage by more than 1e-2."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    ref, gen = _structured_video(), _add_noise(_structured_video(), seed=4, sigma=12.0)
    a, b = (torch.from_numpy(v).permute(0, 3, 1, 2).double() / 255 for v in (ref, gen))
    mean, full = structural_similarity_index_measure(b, a, sigma=1.5, data_range=1.0, reduction="none",
                                                     return_full_image=True)
    cropped = full[..., 5:-5, 5:-5].mean(dim=(1, 2, 3))
    ours = ssim_per_frame(ref, gen)
    assert torch.allclose(cropped, ours, atol=1e-10, rtol=0)
    want = _skimage_ssim(ref, gen)
    assert max(abs(x - y) for x, y in zip(mean.tolist(), want)) > 1e-2


def test_psnr_equals_torchmetrics_up_to_its_float32_log_constant() -> None:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    ref, gen = _structured_video(), _add_noise(_structured_video(), seed=5, sigma=6.0)
    a, b = (torch.from_numpy(v).permute(0, 3, 1, 2).double() / 255 for v in (ref, gen))
    theirs = peak_signal_noise_ratio(b, a, data_range=1.0, reduction="none", dim=(1, 2, 3))
    assert torch.allclose(psnr_per_frame(ref, gen), theirs, rtol=1e-7, atol=0)


def test_ssim_and_psnr_batches_and_device_give_the_same_values() -> None:
    ref, gen = _structured_video(5, 40, 48), _add_noise(_structured_video(5, 40, 48), seed=6, sigma=8.0)
    for metric in (ssim_per_frame, psnr_per_frame):
        one = metric(ref, gen, device="cpu", chunk=1)
        five = metric(ref, gen, device="cpu", chunk=5)
        assert one.device.type == "cpu" and torch.allclose(one, five, atol=1e-12, rtol=0)


@pytest.mark.gpu
def test_ssim_and_psnr_on_cuda_equal_cpu() -> None:
    ref, gen = _structured_video(4, 64, 80), _add_noise(_structured_video(4, 64, 80), seed=7, sigma=8.0)
    for metric in (ssim_per_frame, psnr_per_frame):
        assert torch.allclose(metric(ref, gen, device="cuda"), metric(ref, gen, device="cpu"), atol=1e-9, rtol=0)


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
    a, b, c = (build_lpips(random_trunk=True, seed=s, backend="own") for s in (1, 1, 2))
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
    model = build_lpips(backend="own")
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


needs_torchvision = pytest.mark.skipif(
    not fidelity.torchvision_imports() or importlib.util.find_spec("lpips") is None,
    reason="the lpips package needs torchvision, which does not import here (CPU torch; torchvision's wheel is "
           "built for another torch)",
)


@needs_torchvision
def test_lpips_package_and_own_loader_agree_with_the_same_trunk() -> None:
    """The lpips package's LPIPS and LPIPSAlex, both with the seed-0 random trunk and the wheel's heads."""
    own = build_lpips(random_trunk=True, seed=0, backend="own")
    package = build_lpips(random_trunk=True, seed=0, backend="package")
    assert isinstance(package, fidelity.PackageLPIPS) and not package.is_real_metric
    ref, gen = _structured_video(3, 64, 72), _add_noise(_structured_video(3, 64, 72), seed=8, sigma=20.0)
    a, b = lpips_per_frame(ref, gen, own), lpips_per_frame(ref, gen, package)
    assert (a > 0).all() and torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert isinstance(build_lpips(random_trunk=True, backend="auto"), fidelity.PackageLPIPS)


@needs_torchvision
@pytest.mark.skipif(not REAL_BACKBONE.is_file(), reason=f"real AlexNet backbone not present at {REAL_BACKBONE}")
def test_real_lpips_package_and_own_loader_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(REAL_BACKBONE.parents[2]))
    ref, gen = _structured_video(2, 64, 64), _add_noise(_structured_video(2, 64, 64), seed=9, sigma=16.0)
    a, b = (lpips_per_frame(ref, gen, build_lpips(backend=k)) for k in ("own", "package"))
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


@needs_lpips_heads
def test_without_torchvision_auto_is_the_own_loader_and_package_is_refused() -> None:
    if fidelity.torchvision_imports():
        pytest.skip("torchvision imports here: auto picks the package (the test above)")
    assert isinstance(build_lpips(random_trunk=True, backend="auto"), fidelity.LPIPSAlex)
    with pytest.raises(LPIPSUnavailable, match="torchvision"):
        build_lpips(random_trunk=True, backend="package")


@needs_lpips_heads
def test_heads_extracted_into_the_venv_share_are_found_without_the_package(tmp_path, monkeypatch) -> None:
    """`make env` extracts only the heads from the lpips wheel into <venv>/share/lpips (no lpips install)."""
    installed = fidelity.lpips_heads_path()
    shared = tmp_path / "share" / "lpips" / "weights" / "v0.1" / "alex.pth"
    shared.parent.mkdir(parents=True)
    shared.write_bytes(installed.read_bytes())
    monkeypatch.setattr(lpips_model, "SHARED_HEADS", shared)  # where lpips_heads_path reads it
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lpips" else real_find_spec(name, *a))
    assert fidelity.lpips_heads_path() == shared
    a = build_lpips(random_trunk=True, seed=3, backend="own")
    monkeypatch.undo()
    b = build_lpips(random_trunk=True, seed=3, backend="own")
    assert all(torch.equal(x.weight, y.weight) for x, y in zip(a.heads, b.heads))


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
    with pytest.raises(ValueError, match=r"valid: \['psnr', 'psnr_pooled', 'ssim', 'ssim_torchmetrics', 'lpips', 'lpips_vgg'\]"):
        compute_fidelity(v, v, ["psnr", "fvd"])
    with pytest.raises(ValueError, match=r"\(3, 32, 40, 3\).*\(3, 32, 38, 3\)"):
        compute_fidelity(v, v[:, :, :38], ["psnr"])
    with pytest.raises(ValueError, match="uint8"):
        compute_fidelity(v.astype(np.float32), v.astype(np.float32), ["psnr"])
