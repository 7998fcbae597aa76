"""The conformance kit on the image-to-video models (tiny-wan-i2v, tiny-hunyuanvideo15-i2v), where caching fails
visibly (Wan I2V "goes static" with TeaCache, ComfyUI-TeaCache #63): the kit conditions every video on a bench
clip's first frame (sencache_bench.testing.IMAGE_PROMPT) unless given an image."""

from __future__ import annotations

import numpy as np
import pytest

from sencache_bench.testing import IMAGE_PROMPT, Kit, assert_conforms

MODELS = ["tiny-wan-i2v", "tiny-hunyuanvideo15-i2v"]
CONFORMING = {  # tests/models/test_wan22.py's settings; sencache calibrates on the kit's generations from the image
    "static": dict(params={"every": 2}, never_reuse={"every": 1}),
    "semcache": dict(params={"alpha": 0.4, "beta": 0.6}, never_reuse={"alpha": 0.0, "beta": 0.0, "tmm": False}),
    "easycache": dict(params={"tau": 0.5}),
    "seacache": dict(params={"threshold": 2.0}),
    "sencache": dict(params={"eps_main": 0.5, "max_reuse": 2}, never_reuse={"max_reuse": 0}),
    "adacache": dict(steps=8, params={"codebook": {0.5: 3, 1.0: 2, 100.0: 1}, "moreg": True}),
}


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", sorted(CONFORMING))
def test_conformance_kit_on_image_to_video(name, model, tmp_path):
    report = assert_conforms(name, **{"model": model, "steps": 4, "workdir": tmp_path, **CONFORMING[name]})
    checks = {c.name: c.passed for c in report.checks}
    assert checks["never-reuse reproduces the reference bit for bit"] is True
    assert checks["NFE and the trace are counted"] is True
    assert checks["branches are independent"] is True
    assert checks["no state leaks between videos"] is True


def test_the_kit_conditions_on_the_bench_first_frame_or_the_given_image(tmp_path):
    """Default: frame 0 of the bench clip of IMAGE_PROMPT, written beside the kit's results; a given image is used
    as it is (its pixels reach the reference key)."""
    from PIL import Image

    from sencache_bench.models.first_frames import first_frame

    kit = Kit("none", model="tiny-hunyuanvideo15-i2v", steps=2, workdir=tmp_path / "default")
    try:
        written = np.asarray(Image.open(tmp_path / "default" / "first_frame.png").convert("RGB"))
        assert np.array_equal(written, first_frame(IMAGE_PROMPT))
        assert kit.resolved.image.size == (64, 64)
        default_key = kit.runner.reference_key(*kit.runner.items()[0])
    finally:
        kit.close()
    other = tmp_path / "other.png"
    Image.fromarray(first_frame("a blue square moving left")).save(other)
    kit = Kit("none", model="tiny-hunyuanvideo15-i2v", steps=2, workdir=tmp_path / "given", image=other)
    try:
        assert kit.resolved.image.path == other
        assert kit.runner.reference_key(*kit.runner.items()[0]) != default_key
    finally:
        kit.close()
