"""The metrics as each paper defines them (issue 22): pooled PSNR, torchmetrics' SSIM, LPIPS-VGG, the registry."""

from __future__ import annotations

import glob
import math
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sencache_bench.errors import BenchError, SpecError
from sencache_bench.metrics import fidelity, lpips_model
from sencache_bench.metrics.definitions import DEFINITIONS, FIDELITY_METRICS, check_names, footnote
from sencache_bench.metrics.fidelity import build_lpips, compute_fidelity, lpips_per_frame
from sencache_bench.metrics.variants import VGG16Trunk, psnr_pooled, ssim_torchmetrics_per_frame


def _video(seed: int, shape=(3, 24, 28, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_psnr_pooled_by_hand_differs_from_the_per_frame_mean():
    """Two frames with MSE 1 and 4 (uint8 units): pooled 10 log10(255^2 / 2.5); per-frame mean of 10 log10(255^2/1)
    and 10 log10(255^2/4)."""
    ref = np.full((2, 8, 8, 3), 100, dtype=np.uint8)
    gen = ref.copy()
    gen[0] += 1  # every value off by 1: MSE 1
    gen[1] += 2  # off by 2: MSE 4
    pooled = compute_fidelity(ref, gen, ["psnr_pooled", "psnr"], device="cpu")
    assert pooled.values["psnr_pooled"] == pytest.approx(10 * math.log10(255**2 / 2.5), abs=1e-9)
    per_frame_mean = (10 * math.log10(255**2 / 1) + 10 * math.log10(255**2 / 4)) / 2
    assert pooled.values["psnr"] == pytest.approx(per_frame_mean, abs=1e-9)
    assert abs(pooled.values["psnr"] - pooled.values["psnr_pooled"]) > 0.1
    assert "psnr_pooled" not in pooled.per_frame  # one value per video
    assert psnr_pooled(ref, ref) == 100.0  # capped like psnr: a record cannot hold inf


def test_psnr_pooled_batches_the_same():
    ref, gen = _video(1, (5, 16, 16, 3)), _video(2, (5, 16, 16, 3))
    assert psnr_pooled(ref, gen, "cpu", chunk=2) == pytest.approx(psnr_pooled(ref, gen, "cpu", chunk=8), rel=1e-12)


def test_ssim_torchmetrics_equals_torchmetrics():
    """torchmetrics itself (the dev extra) is the independent check: its functional SSIM with data_range 1 on
    each frame in float64."""
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    ref, gen = _video(3), _video(4)
    gen = np.clip(ref.astype(int) + (gen.astype(int) - 128) // 8, 0, 255).astype(np.uint8)  # correlated pair
    ours = ssim_torchmetrics_per_frame(ref, gen, "cpu", chunk=2)
    to = lambda v: torch.from_numpy(v).permute(0, 3, 1, 2).double() / 255  # noqa: E731
    want = tm_ssim(to(gen), to(ref), data_range=1.0, reduction="none")
    assert ours.tolist() == pytest.approx(want.tolist(), abs=1e-12)
    a, b = _video(3), _video(4)  # independent noise: the border weighs in
    border = ssim_torchmetrics_per_frame(a, b, "cpu") - fidelity.ssim_per_frame(a, b, "cpu")
    assert border.abs().min() > 5e-4  # the two definitions differ (border included or not)


def test_ssim_valid_region_still_equals_skimage():
    """``ssim`` stays scikit-image's definition (TeaCache's cv2 script: valid region)."""
    from skimage.metrics import structural_similarity

    ref, gen = _video(5), _video(6)
    want = [structural_similarity(r, g, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                  data_range=255, channel_axis=-1) for r, g in zip(ref, gen)]
    assert compute_fidelity(ref, gen, ["ssim"], device="cpu").per_frame["ssim"] == pytest.approx(want, abs=1e-4)


def _vgg_heads(tmp_path: Path, monkeypatch) -> None:
    """Put the wheel's v0.1 vgg.pth where lpips_heads_path looks when lpips is not installed (make env's share)."""
    import importlib.util

    if importlib.util.find_spec("lpips") is not None:
        return
    wheels = glob.glob(str(Path(sys.prefix) / ".lpips-wheel" / "lpips-*.whl"))
    if not wheels:
        pytest.skip("no lpips wheel here to take the VGG heads from")
    share = tmp_path / "share" / "lpips" / "weights" / "v0.1"
    share.mkdir(parents=True)
    (share / "vgg.pth").write_bytes(zipfile.ZipFile(wheels[0]).read("lpips/weights/v0.1/vgg.pth"))
    monkeypatch.setattr(lpips_model, "SHARED_HEADS", share / "alex.pth")


def test_lpips_vgg_random_trunk_plumbing(tmp_path, monkeypatch):
    """VGG16 trunk at torchvision's indices, the wheel's heads (64/128/256/512/512 channels), flagged as not real."""
    _vgg_heads(tmp_path, monkeypatch)
    model = build_lpips(random_trunk=True, seed=0, backend="own", net="vgg")
    assert [h.weight.shape[1] for h in model.heads] == [64, 128, 256, 512, 512]
    assert all((h.weight >= 0).all() for h in model.heads)  # the real heads, not a fresh init
    convs = [k.split(".")[1] for k in model.trunk.state_dict() if k.endswith("weight")]
    assert convs == ["0", "2", "5", "7", "10", "12", "14", "17", "19", "21", "24", "26", "28"]
    ref, gen = _video(7, (2, 32, 32, 3)), _video(8, (2, 32, 32, 3))
    assert lpips_per_frame(ref, ref, model).tolist() == [0.0, 0.0]
    assert (lpips_per_frame(ref, gen, model) > 0).all()
    res = compute_fidelity(ref, gen, ["lpips_vgg"], lpips_vgg_model=model, device="cpu")
    assert "random VGG16 trunk" in res.notes["lpips_vgg"] and res.values["lpips_vgg"] > 0
    with pytest.raises(ValueError, match="at least 16x16"):
        lpips_per_frame(_video(1, (1, 15, 32, 3)), _video(1, (1, 15, 32, 3)), model)


def test_lpips_vgg_loads_a_torchvision_shaped_checkpoint(tmp_path, monkeypatch):
    _vgg_heads(tmp_path, monkeypatch)
    trunk = VGG16Trunk()
    sd = {f"features.{k}": v.clone() for k, v in trunk.features.state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(4, 4)  # ignored, as in torchvision's file
    ckpt = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(sd, ckpt)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = build_lpips(backend="own", net="vgg")
    assert model.is_real_metric and torch.equal(model.trunk.features[28].weight, sd["features.28.weight"])


def test_lpips_vgg_without_its_backbone_is_none_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    v = _video(9, (2, 32, 32, 3))
    res = compute_fidelity(v, v, ["psnr", "lpips_vgg"], device="cpu")
    assert res.values["lpips_vgg"] is None and res.values["psnr"] == 100.0
    note = res.notes["lpips_vgg"]
    assert note.startswith("unavailable: ") and "vgg16-397923af.pth" in note
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in note


def test_registry_names_the_definitions_and_the_spec_accepts_them(tiny_spec):
    from sencache_bench.spec import resolve

    assert set(FIDELITY_METRICS) == {"psnr", "psnr_pooled", "ssim", "ssim_torchmetrics", "lpips", "lpips_vgg"}
    assert "TeaCache" in DEFINITIONS["psnr"].source and "EasyCache" in DEFINITIONS["psnr_pooled"].source
    note = footnote(["lpips", "psnr", "model"])
    assert note.startswith("LPIPS: LPIPS v0.1 with the AlexNet trunk") and "PSNR: per-frame PSNR" in note
    assert "(TeaCache's eval)" in note and "SSIM" not in note
    assert resolve(tiny_spec(metrics=["psnr_pooled", "ssim_torchmetrics"])).metrics == ["psnr_pooled",
                                                                                       "ssim_torchmetrics"]
    with pytest.raises(SpecError, match=r"metrics\[1\]: unknown metric 'psnr_pool' \(valid: psnr, psnr_pooled, ssim"):
        resolve(tiny_spec(metrics=["psnr", "psnr_pool"]))
    with pytest.raises(BenchError, match="unknown metric 'fvd'"):
        check_names(["fvd"])


def test_paper_layout_footnote_comes_from_the_registry():
    from sencache_bench.results.layouts import Column, notes

    cols = [Column("model", "Model"), Column("lpips", "LPIPS", "min"), Column("psnr", "PSNR", "max")]
    text = " ".join(notes("sencache", [{"uncached": False, "lpips": 0.1}], cols))
    assert footnote(["lpips", "psnr"]) in text and "per-frame PSNR (MAX 1, capped at 100 dB), mean over frames " \
                                                  "(TeaCache's eval)" in text
