"""`score`: two folders of real mp4 files with a known perturbation, and every kind of bad pair."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from sencache_bench.cli.app import app
from sencache_bench.metrics.fidelity import build_lpips
from sencache_bench.metrics.video_io import read_video, write_mp4
from sencache_bench.results.score import pair_videos, render_score, score_dirs

# Flat frames survive H.264 exactly (checked by decoding them in the fixture), so PSNR is known by hand.
LEVELS = [100, 100, 100, 100]
DELTA = 16
PERTURBED = [116, 116, 100, 100]
HAND_PSNR = (2 * 20 * math.log10(255 / DELTA) + 2 * 100.0) / 4  # frames 0, 1 off by 16; 2, 3 equal (cap 100)


def flat(levels, size=32):
    return np.stack([np.full((size, size, 3), v, np.uint8) for v in levels])


@pytest.fixture
def folders(tmp_path):
    ref, gen = tmp_path / "ref", tmp_path / "gen"
    write_mp4(ref / "a.mp4", flat(LEVELS))
    write_mp4(gen / "a.mp4", flat(PERTURBED))
    for path, levels in ((ref / "a.mp4", LEVELS), (gen / "a.mp4", PERTURBED)):  # the hand value's premise
        assert [np.unique(f).tolist() for f in read_video(path)] == [[v] for v in levels]
    write_mp4(ref / "sub" / "same.mp4", flat(LEVELS))
    write_mp4(gen / "sub" / "same.mp4", flat(LEVELS))
    write_mp4(ref / "short.mp4", flat(LEVELS))  # shape mismatch: 3 frames generated
    write_mp4(gen / "short.mp4", flat(LEVELS[:3]))
    write_mp4(ref / "broken.mp4", flat(LEVELS))
    (gen / "broken.mp4").write_bytes(b"not a video at all")
    write_mp4(ref / "only_ref.mp4", flat(LEVELS))
    write_mp4(gen / "only_gen.mp4", flat(LEVELS))
    return ref, gen


def test_pairs_scores_and_problems(folders):
    ref, gen = folders
    pairs, problems = pair_videos(ref, gen)
    assert [p[0] for p in pairs] == ["a", "broken", "short", "sub/same"]
    report = score_dirs(ref, gen, ["psnr", "ssim"])
    rows = {r["name"]: r for r in report.rows}
    assert set(rows) == {"a", "sub/same"}
    assert rows["a"]["psnr"] == pytest.approx(HAND_PSNR, abs=1e-6)
    assert rows["sub/same"]["psnr"] == 100.0 and rows["sub/same"]["ssim"] == pytest.approx(1.0)
    assert rows["a"]["frames"] == 4 and (rows["a"]["height"], rows["a"]["width"]) == (32, 32)
    assert report.mean["psnr"] == pytest.approx((HAND_PSNR + 100.0) / 2)
    text = "\n".join(report.problems)
    assert "missing pair: only_ref.mp4 has no generated video named only_ref.*" in text
    assert "missing pair: only_gen.mp4 has no reference video named only_gen.*" in text
    assert "shape mismatch: short: reference 4x32x32 vs generated 3x32x32" in text
    assert "unreadable: cannot read video" in text and "broken.mp4" in text
    assert len(report.problems) == 4


def test_lpips_column_and_formats(folders):
    ref, gen = folders
    report = score_dirs(ref, gen, ["lpips", "psnr"], lpips_model=build_lpips(random_trunk=True))
    assert {r["name"]: r["lpips"] for r in report.rows}["sub/same"] == pytest.approx(0.0, abs=1e-6)
    assert "random AlexNet trunk" in report.notes["lpips"]
    md = render_score(report, "markdown")
    assert "| mean (2 videos) |" in md and f"{HAND_PSNR:.2f}" in md
    data = json.loads(render_score(report, "json"))
    assert data["scored"] == 2 and data["mean"]["psnr"] == pytest.approx((HAND_PSNR + 100) / 2)
    assert render_score(report, "csv").splitlines()[0] == "video,frames,size,lpips,psnr"


def test_ambiguous_names(tmp_path):
    write_mp4(tmp_path / "r" / "x.mp4", flat(LEVELS))
    write_mp4(tmp_path / "g" / "x.mp4", flat(LEVELS))
    (tmp_path / "g" / "x.webm").write_bytes(b"")
    pairs, problems = pair_videos(tmp_path / "r", tmp_path / "g")
    assert any("ambiguous name 'x'" in p for p in problems)


def test_cli(folders, tmp_path):
    ref, gen = folders
    out = tmp_path / "score.json"
    result = CliRunner().invoke(app, ["score", str(ref), str(gen), "-m", "psnr,ssim", "-f", "csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"a,4,32x32,{HAND_PSNR:.2f}," in result.stdout
    assert "warning: shape mismatch: short" in result.stderr and "warning: missing pair" in result.stderr
    saved = json.loads(out.read_text())
    assert saved["scored"] == 2 and len(saved["problems"]) == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = CliRunner().invoke(app, ["score", str(ref), str(empty)])
    assert nothing.exit_code == 1 and "nothing scored" in str(nothing.exception)


def test_pairs_the_harness_own_folders(tiny_spec, tmp_path):
    """`score RESULTS/references RESULTS/runs/<setting>`: run videos p000-s0-<key> pair with references <key>."""
    import yaml

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(sampling={"steps": 3, "seeds": [0, 1]}, prompts=["a quiet library"])))
    cli = lambda *a: CliRunner().invoke(app, [str(x) for x in a])  # noqa: E731
    assert cli("run", spec, "-q").exit_code == 0
    results = tmp_path / "results"
    runs = results / "runs" / "none-default"
    keys = sorted(p.stem for p in (results / "references").glob("*.mp4"))
    assert len(keys) == 2 and sorted(p.stem[-12:] for p in runs.glob("*.mp4")) == keys
    out = cli("score", results / "references", runs, "-f", "json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert sorted(r["name"] for r in report["videos"]) == sorted(p.stem for p in runs.glob("*.mp4"))
    # policy none reproduces its reference bit for bit, and the encoder is deterministic: identical mp4s
    assert [r["psnr"] for r in report["videos"]] == [100.0, 100.0] and report["problems"] == []
    whole = json.loads(cli("score", results / "references", results / "runs", "-f", "json").stdout)
    assert sorted(r["name"] for r in whole["videos"]) == sorted(f"none-default/{p.stem}" for p in runs.glob("*.mp4"))
