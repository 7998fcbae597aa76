"""VBench: total score by hand, weight checks, the spec section, and VBench itself in its own environment.

The live tests need the VBench environment (`make vbench-env`, or $SENCACHE_VBENCH_PYTHON); without it
they are skipped. They use temporal_flickering, the one dimension with no model weights:
(255 - mean |frame_t - frame_t+1|) / 255, known by hand for flat frames (which H.264 keeps exactly).
"""

from __future__ import annotations

import csv
import io
import json
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from sencache_bench.cli.app import app

from sencache_bench.errors import BenchError, SpecError
from sencache_bench.metrics.vbench import (DIMENSIONS, NORMALIZE, QUALITY, SEMANTIC, Video, check_dimensions,
                                           env_python, missing_weights, run_vbench, total_score)
from sencache_bench.metrics.video_io import read_video, write_mp4
from sencache_bench.spec import resolve

LIVE = pytest.mark.skipif(not env_python().exists(), reason=f"no VBench environment at {env_python()} "
                                                             f"(make vbench-env)")


def test_total_score_by_hand():
    assert len(QUALITY) == 7 and len(SEMANTIC) == 9 and set(QUALITY) | set(SEMANTIC) == set(DIMENSIONS)
    at = lambda f: {d: NORMALIZE[d][0] + f * (NORMALIZE[d][1] - NORMALIZE[d][0]) for d in DIMENSIONS}  # noqa: E731
    assert total_score(at(1.0))["total"] == pytest.approx(1.0)
    assert total_score(at(0.0))["total"] == pytest.approx(0.0)
    scores = at(0.5)
    scores["dynamic_degree"] = 1.0  # normalised 1, weight 0.5
    s = total_score(scores)
    quality = (6 * 0.5 + 0.5 * 1.0) / 6.5
    assert s["quality"] == pytest.approx(quality) and s["semantic"] == pytest.approx(0.5)
    assert s["total"] == pytest.approx((4 * quality + 0.5) / 5)
    scores["temporal_style"] = 0.182  # (0.182 - 0) / (0.364 - 0) = 0.5: as before
    assert total_score(scores)["total"] == pytest.approx(s["total"])
    del scores["scene"]
    assert total_score(scores) is None  # not all 16 dimensions: no total


def test_dimensions_and_missing_weights(tmp_path):
    assert check_dimensions(["temporal_flickering", "temporal_flickering"]) == ["temporal_flickering"]
    with pytest.raises(BenchError, match="unknown VBench dimension 'flicker'"):
        check_dimensions(["flicker"])
    with pytest.raises(BenchError, match="color needs the standard prompt suite"):
        check_dimensions(["color"], "custom_input")
    assert check_dimensions(["color"], "vbench_standard") == ["color"]
    lines = missing_weights(["temporal_flickering", "subject_consistency", "dynamic_degree"], cache=tmp_path)
    assert set(lines) == {"subject_consistency", "dynamic_degree"}  # one line per dimension
    assert str(tmp_path / "dino_model" / "dino_vitbase16_pretrain.pth") in lines["subject_consistency"]
    assert str(tmp_path / "dino_model" / "facebookresearch_dino_main") in lines["subject_consistency"]
    assert str(tmp_path / "raft_model" / "models" / "raft-things.pth") in lines["dynamic_degree"]
    (tmp_path / "raft_model" / "models").mkdir(parents=True)
    (tmp_path / "raft_model" / "models" / "raft-things.pth").write_bytes(b"x")
    assert set(missing_weights(["dynamic_degree"], cache=tmp_path)) == set()
    result = run_vbench([], ["subject_consistency"], tmp_path / "w", python=tmp_path / "nope",
                        log=lambda s: None)  # skipped before any environment is needed
    assert set(result.skipped) == {"subject_consistency"}


def test_spec_section(tiny_spec):
    spec = resolve(tiny_spec(metrics=["psnr", "vbench"]))
    assert spec.metrics == ["psnr"] and spec.vbench.dimensions == ["temporal_flickering"]
    assert spec.vbench.mode == "custom_input"
    plain = resolve(tiny_spec())
    assert plain.vbench is None and "vbench" not in plain.raw  # specs without VBench keep their hash
    with pytest.raises(SpecError, match="vbench.dimensions: unknown VBench dimension 'nope'"):
        resolve(tiny_spec(metrics=["vbench"], vbench={"dimensions": ["nope"]}))
    with pytest.raises(SpecError, match="set output.save_videos: true"):
        resolve(tiny_spec(metrics=["vbench"], output={"save_videos": False}))
    with pytest.raises(SpecError, match="vbench.device: expected auto, cpu, cuda or cuda:N"):
        resolve(tiny_spec(metrics=["vbench"], vbench={"device": "tpu"}))
    with pytest.raises(SpecError, match="metrics has no vbench"):
        resolve(tiny_spec(vbench={"dimensions": ["temporal_flickering"]}))


def flat(levels, size=32):
    return np.stack([np.full((size, size, 3), v, np.uint8) for v in levels])


def flicker(levels):
    return (255 - float(np.mean(np.abs(np.diff(np.asarray(levels, float)))))) / 255


@LIVE
def test_live_standard_mode_by_hand(tmp_path, monkeypatch):
    """Standard mode on a suite prompt (custom mode: the end-to-end test below); exact hand values."""
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(tmp_path / "cache"))
    a, b = [100, 116, 100, 116], [116, 116, 100, 100]
    for name, levels in (("a.mp4", a), ("b.mp4", b)):
        write_mp4(tmp_path / name, flat(levels))
        assert [np.unique(f).tolist() for f in read_video(tmp_path / name)] == [[v] for v in levels]  # premise
    prompt = "a toilet, frozen in time"  # in VBench_full_info.json, with temporal_flickering
    lines = []
    # the same prompt and index twice (a run and its reference): two batches, one worker process
    res = run_vbench([Video("A", tmp_path / "a.mp4", prompt), Video("B", tmp_path / "b.mp4", prompt)],
                     ["temporal_flickering", "motion_smoothness"], tmp_path / "standard", mode="vbench_standard",
                     log=lines.append)
    assert res.per_video == {"A": {"temporal_flickering": pytest.approx(flicker(a), abs=1e-6)},  # 239/255
                             "B": {"temporal_flickering": pytest.approx(flicker(b), abs=1e-6)}}
    assert res.aggregate["temporal_flickering"] == pytest.approx((flicker(a) + flicker(b)) / 2, abs=1e-6)
    assert (tmp_path / "standard" / "batch-1" / "videos" / f"{prompt}-0.mp4").exists()
    assert [line.split(",")[0] for line in lines] == ["VBench motion_smoothness: skipped"]
    assert "amt_model/amt-s.pth" in lines[0] and set(res.skipped) == {"motion_smoothness"}
    saved = json.loads(open(res.eval_results[0]).read())  # VBench's own output file
    assert saved["temporal_flickering"][0] == pytest.approx(flicker(a), abs=1e-6)


@LIVE
def test_live_run_with_vbench_metric_end_to_end(tiny_spec, tmp_path, monkeypatch):
    spec = tiny_spec(prompts=["a quiet library"], policy={"name": "static", "every": 2}, metrics=["psnr", "vbench"],
                     vbench={"dimensions": ["temporal_flickering", "subject_consistency"]})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    cli = lambda *a: CliRunner().invoke(app, list(a))  # noqa: E731 - in process; VBench is the subprocess
    out = cli("run", str(path))
    assert out.exit_code == 0, out.output
    assert "VBench subject_consistency: skipped, missing" in out.stderr
    assert str(tmp_path / "cache" / "dino_model" / "dino_vitbase16_pretrain.pth") in out.stderr
    rec_path = next((tmp_path / "results" / "runs").rglob("*.json"))
    rec = json.loads(rec_path.read_text())
    frames = read_video(rec_path.with_suffix(".mp4")).astype(float)
    hand = (255 - np.abs(np.diff(frames, axis=0)).mean()) / 255  # decoded by imageio here, by cv2 in VBench
    assert rec["metrics"]["vbench_temporal_flickering"] == pytest.approx(hand, abs=2e-3)
    assert "vbench_subject_consistency" not in rec["metrics"] and rec["vbench"]["mode"] == "custom_input"
    ref_meta = json.loads(next((tmp_path / "results" / "references").glob("*.json")).read_text())
    assert rec["reference"]["metrics"]["vbench_temporal_flickering"] == \
        ref_meta["metrics"]["vbench_temporal_flickering"]
    table = cli("table", str(tmp_path / "results"), "--layout", "semcache", "-f", "csv")
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    score = float(rows[1]["VBench temporal_flickering"].rstrip("%")) / 100
    assert score == pytest.approx(rec["metrics"]["vbench_temporal_flickering"], abs=1e-4)
    again = cli("vbench", str(tmp_path / "results"))
    assert again.exit_code == 0 and "every video already has these dimensions" in again.stderr


def test_setup_commands(tmp_path):
    from sencache_bench.metrics.vbench import setup_commands

    cmds = setup_commands(tmp_path / "env", ["torch==2.14.1", "torchvision==0.29.1"], base_python="/usr/bin/python3")
    assert cmds[0] == ["/usr/bin/python3", "-m", "venv", str(tmp_path / "env")]
    assert cmds[1][-2:] == ["torch==2.14.1", "torchvision==0.29.1"]
    assert "vbench==0.1.5" in cmds[2] and cmds[2][-2:] == ["torch==2.14.1", "torchvision==0.29.1"]
    assert "import numpy, torch, torchvision, cv2, transformers, vbench" in cmds[3][-1]


STUB_VBENCH = '''#!{python}
"""A stand-in for the VBench environment's interpreter: scores each video by its place in the job."""
import json, sys
job = json.load(open(sys.argv[2]))  # opened from the worker's cwd: the job path must be absolute
parts = []
for batch in job["batches"]:
    per_video = {{v["id"]: {{"temporal_flickering": 0.9 + 0.01 * k}} for k, v in enumerate(batch["videos"])}}
    parts.append({{"per_video": per_video, "aggregate": {{"temporal_flickering": 0.5}}, "failed": {{}},
                  "unmatched": {{}}, "eval_results": []}})
json.dump({{"batches": parts}}, open(sys.argv[3], "w"))
'''


def test_scores_written_back_with_a_stub_vbench_and_a_relative_path(tiny_spec, tmp_path, monkeypatch, capsys):
    """`vbench results` as the README writes it (relative), VBench replaced by a stub process with known scores."""
    import sys

    stub = tmp_path / "stub-python"
    stub.write_text(STUB_VBENCH.format(python=sys.executable))
    stub.chmod(0o755)
    monkeypatch.setenv("SENCACHE_VBENCH_PYTHON", str(stub))
    monkeypatch.chdir(tmp_path)
    spec = tiny_spec(prompts=["a quiet library"], policy={"name": "static", "every": 2})
    spec["output"] = {"dir": "results"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    cli = lambda *a: CliRunner().invoke(app, list(a))  # noqa: E731
    assert cli("run", "spec.yaml", "-q").exit_code == 0
    out = cli("vbench", "results", "--device", "cpu")
    assert out.exit_code == 0, out.output
    rec_path = next((tmp_path / "results" / "runs").rglob("*.json"))
    rec = json.loads(rec_path.read_text())
    ref = json.loads(next((tmp_path / "results" / "references").glob("*.json")).read_text())
    # the job lists the run's video first (0.90), then its reference (0.91)
    assert rec["metrics"]["vbench_temporal_flickering"] == pytest.approx(0.90)
    assert ref["metrics"]["vbench_temporal_flickering"] == pytest.approx(0.91)
    assert rec["reference"]["metrics"]["vbench_temporal_flickering"] == pytest.approx(0.91)
    assert rec["vbench"]["dimensions"] == ["temporal_flickering"] and rec["vbench"]["mode"] == "custom_input"
    job = json.loads((tmp_path / "results" / "vbench" / "job.json").read_text())
    paths = [v["path"] for b in job["batches"] for v in b["videos"]] + [b["work"] for b in job["batches"]]
    assert all(p.startswith("/") for p in paths)
    assert "temporal_flickering 0.9000" in out.stdout

    # a damaged result file (a worker killed mid-write) is refused with one line; records keep their scores
    monkeypatch.setenv("SENCACHE_VBENCH_PYTHON", str(tmp_path / "truncating-python"))
    (tmp_path / "truncating-python").write_text(f"#!{sys.executable}\nimport sys\nopen(sys.argv[3], 'w').write('{{\"batch')\n")
    (tmp_path / "truncating-python").chmod(0o755)
    from sencache_bench.cli.app import main

    monkeypatch.setattr(sys, "argv", ["sencache-bench", "vbench", "results", "--device", "cpu", "--force"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    work = tmp_path / "results" / "vbench"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: VBench's result {work / 'result.json'} is unreadable (JSONDecodeError); full output in "
        f"{work / 'vbench.log'}; rerun the same command to score again")
    assert json.loads(rec_path.read_text())["metrics"]["vbench_temporal_flickering"] == pytest.approx(0.90)


# VBench's own scripts/constant.py (github.com/Vchitect/VBench), its names and numbers as published there.
VBENCH_NORMALIZE_DIC = {
    "subject consistency": {"Min": 0.1462, "Max": 1.0}, "background consistency": {"Min": 0.2615, "Max": 1.0},
    "temporal flickering": {"Min": 0.6293, "Max": 1.0}, "motion smoothness": {"Min": 0.706, "Max": 0.9975},
    "dynamic degree": {"Min": 0.0, "Max": 1.0}, "aesthetic quality": {"Min": 0.0, "Max": 1.0},
    "imaging quality": {"Min": 0.0, "Max": 1.0}, "object class": {"Min": 0.0, "Max": 1.0},
    "multiple objects": {"Min": 0.0, "Max": 1.0}, "human action": {"Min": 0.0, "Max": 1.0},
    "color": {"Min": 0.0, "Max": 1.0}, "spatial relationship": {"Min": 0.0, "Max": 1.0},
    "scene": {"Min": 0.0, "Max": 0.8222}, "appearance style": {"Min": 0.0009, "Max": 0.2855},
    "temporal style": {"Min": 0.0, "Max": 0.364}, "overall consistency": {"Min": 0.0, "Max": 0.364},
}
VBENCH_DIM_WEIGHT = {**{d: 1 for d in VBENCH_NORMALIZE_DIC}, "dynamic degree": 0.5}
VBENCH_SEMANTIC_WEIGHT, VBENCH_QUALITY_WEIGHT = 1, 4
VBENCH_QUALITY_LIST = ["subject consistency", "background consistency", "temporal flickering", "motion smoothness",
                       "aesthetic quality", "imaging quality", "dynamic degree"]
VBENCH_SEMANTIC_LIST = ["object class", "multiple objects", "human action", "color", "spatial relationship",
                        "scene", "appearance style", "temporal style", "overall consistency"]


def test_constants_equal_vbenchs_constant_py():
    from sencache_bench.metrics.vbench import QUALITY_WEIGHT, SEMANTIC_WEIGHT, WEIGHT

    name = lambda d: d.replace("_", " ")  # noqa: E731 - VBench's leaderboard names use spaces
    assert {name(d): {"Min": lo, "Max": hi} for d, (lo, hi) in NORMALIZE.items()} == VBENCH_NORMALIZE_DIC
    assert {name(d): w for d, w in WEIGHT.items()} == VBENCH_DIM_WEIGHT
    assert sorted(map(name, QUALITY)) == sorted(VBENCH_QUALITY_LIST)
    assert sorted(map(name, SEMANTIC)) == sorted(VBENCH_SEMANTIC_LIST)
    assert (QUALITY_WEIGHT, SEMANTIC_WEIGHT) == (VBENCH_QUALITY_WEIGHT, VBENCH_SEMANTIC_WEIGHT)
