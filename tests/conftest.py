"""Shared fixtures: offline hub, and the issue's tiny-wan spec as a dict to vary per test."""

from __future__ import annotations

import copy
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

TINY_WAN_SPEC = {
    "model": {"name": "tiny-wan"},
    "sampling": {"steps": 6, "height": 32, "width": 32, "frames": 9, "guidance_scale": 5.0, "seeds": [0]},
    "prompts": ["a red ball bouncing on grass", "a quiet library"],
    "policy": {"name": "none"},
    "metrics": ["psnr", "ssim"],
    "output": {"dir": "results/tiny-wan"},
}

TINY_MODELS = ["tiny-wan", "tiny-cogvideox", "tiny-ltx", "tiny-hunyuanvideo"]


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The tiny models run faster on one thread than on two (thread overhead dominates at their size)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_spec(tmp_path):
    """A factory: the issue's spec with the output under tmp_path, updated by keyword sections."""

    def make(**sections):
        spec = copy.deepcopy(TINY_WAN_SPEC)
        spec["output"] = {"dir": str(tmp_path / "results")}
        for key, value in sections.items():
            spec[key] = value
        return spec

    return make


def pytest_collection_modifyitems(config, items):
    """GPU tests (``@pytest.mark.gpu``) are skipped where CUDA is not available."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
