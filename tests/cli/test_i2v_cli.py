"""Image-to-video through the CLI: the shipped configs/tiny_i2v.yaml on each tiny I2V model (`run`, then `table`),
and `match` of two policies at half the steps on tiny-hunyuanvideo15-i2v from a bench-t2v first frame."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sencache_bench.cli.app import app

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "tiny_i2v.yaml"


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.mark.parametrize("model", ["tiny-wan-i2v", "tiny-wan22-ti2v", "tiny-hunyuanvideo15-i2v"])
def test_shipped_config_runs_on_each_image_to_video_model(model, tmp_path):
    out = cli("run", CONFIG, "--set", f"model.name={model}", "--set", "sampling.steps=4",
              "--set", f"output.dir={tmp_path / 'results'}", "--set", "output.save_videos=false")
    assert out.exit_code == 0, out.output
    rows = json.loads(cli("table", tmp_path / "results", "-f", "json").stdout)
    assert len(rows) == 1 and rows[0]["model"] == model and rows[0]["policy"] == "static"
    assert rows[0]["nfe"] == 2.0 and rows[0]["nfe_ref"] == 4.0 and rows[0]["pflops"] < rows[0]["pflops_ref"]


def test_match_two_policies_on_hunyuanvideo15_i2v(tmp_path):
    spec = yaml.safe_load(CONFIG.read_text())
    spec["model"]["name"] = "tiny-hunyuanvideo15-i2v"
    spec["sampling"].update(steps=6, image=str(REPO / "configs" / "images" / "p002.png"))
    spec["output"] = {"dir": str(tmp_path / "results"), "save_videos": False}
    paths = []
    for name, policy in (("sencache", {"name": "sencache", "eps_main": 0.1, "max_reuse": 2}),
                         ("easycache", {"name": "easycache"})):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**spec, "policy": policy}))
        paths.append(path)
    out = cli("match", *paths, "--nfe", "0.5")
    assert out.exit_code == 0, out.output
    rows = json.loads(cli("table", tmp_path / "results", "--layout", "matched", "-f", "json").stdout)
    assert {r["policy"] for r in rows} == {"sencache", "easycache"}
    for row in rows:  # tuned within one step of 3 of 6 computed steps per branch
        assert row["target_fraction"] == 0.5 and abs(row["nfe"] - 3.0) <= 1.0
