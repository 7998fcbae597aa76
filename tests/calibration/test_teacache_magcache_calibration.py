"""TeaCache / MagCache calibration on tiny-wan: the files they write, checked independently, then used by a run."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from sencache_bench.calibration import CALIBRATORS
from sencache_bench.errors import BenchError, SpecError
from sencache_bench.policies.magcache import simulate
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve

STEPS = 6


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """One runner (the spec names files that do not exist yet, as the paper configs do) and both files."""
    tmp = tmp_path_factory.mktemp("calibration")
    spec = {"model": {"name": "tiny-wan"}, "sampling": {"steps": STEPS}, "prompts": ["a red ball"],
            "metrics": ["psnr"], "output": {"dir": str(tmp / "results")},
            "policy": {"name": "magcache", "ratios": str(tmp / "ratios.json")}}
    runner = Runner(resolve(spec), log=lambda msg: None)
    ratios = CALIBRATORS.get("magcache")(runner, samples=1, out=tmp / "ratios.json", log=lambda m: None)
    coefficients = CALIBRATORS.get("teacache")(runner, samples=1, out=tmp / "coefficients.json", log=lambda m: None)
    return spec, runner, ratios, coefficients


def test_magcache_ratios_match_diffusers_own_calibration(calibrated, capsys):
    """diffusers' MagCacheConfig(calibrate=True) measures the same mean(||r_t|| / ||r_t-1||): same numbers."""
    from diffusers.hooks import MagCacheConfig

    from sencache_bench.calibration.sencache import CALIBRATION_PROMPTS

    _, runner, path, _ = calibrated
    data = json.loads(path.read_text())
    assert (data["kind"], data["model"], data["family"], data["steps"]) == ("magcache_ratios", "tiny-wan", "wan", STEPS)
    assert set(data["branches"]) == {"cond", "uncond"} and data["prompts"] == [CALIBRATION_PROMPTS[0]]
    session = runner.session
    session.transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=STEPS))
    capsys.readouterr()
    try:
        session._call(CALIBRATION_PROMPTS[0], seed=0)
    finally:
        session.transformer.disable_cache()
    out = capsys.readouterr().out
    printed = [json.loads(m) for m in re.findall(r"\[MagCache\] Calibration Complete.*?\n(\[.*?\])", out, re.S)]
    assert len(printed) == 2  # cond, then uncond, at their last step
    for theirs, branch in zip(printed, ("cond", "uncond")):
        np.testing.assert_allclose(data["branches"][branch], theirs, atol=2e-6)


def test_teacache_fit_is_a_degree_4_polyfit_of_the_indicator_changes(calibrated):
    _, runner, _, path = calibrated
    data = json.loads(path.read_text())
    assert (data["kind"], data["indicator"], data["degree"], data["samples"]) == ("teacache_coefficients", "e", 4, 1)
    x, y = np.array(data["points"]["x"]), np.array(data["points"]["y"])
    assert len(x) == 2 * (STEPS - 1)  # branches x consecutive pairs
    np.testing.assert_allclose(np.polyfit(x, y, 4), data["coefficients"], rtol=1e-9)
    # x: the time embedding's relative change between consecutive steps of the schedule, recomputed here
    tr = runner.session.transformer
    runner.session.pipe.scheduler.set_timesteps(STEPS)
    ts = runner.session.pipe.scheduler.timesteps
    with torch.no_grad():
        e = [tr.condition_embedder(ts[i:i + 1], torch.zeros(1, 4, 32))[0] for i in range(STEPS)]
    expected = [float((e[i] - e[i - 1]).abs().mean() / e[i - 1].abs().mean()) for i in range(1, STEPS)]
    cond = [xi for xi, b in zip(x, data["points"]["branch"]) if b == "cond"][:STEPS - 1]
    np.testing.assert_allclose(cond, expected, rtol=1e-5)


def test_runs_use_the_calibrated_files(calibrated):
    spec, runner, ratios, coefficients = calibrated
    session = runner.session
    mag = resolve(dict(spec, policy={"name": "magcache", "ratios": str(ratios)})).policy
    gen = session.generate("a red ball", seed=0, policy=mag)
    curves = json.loads(ratios.read_text())["branches"]
    for branch in ("cond", "uncond"):
        expected = simulate(curves[branch], 0.12, 2, 0.2, branch=branch)
        assert [c.computed for c in gen.calls if c.branch == branch] == expected
    tea = resolve(dict(spec, policy={"name": "teacache", "thresh": 0.2, "coefficients": str(coefficients)})).policy
    gen = session.generate("a red ball", seed=0, policy=tea)
    poly = np.poly1d(json.loads(coefficients.read_text())["coefficients"])
    cond = [c for c in gen.calls if c.branch == "cond"]
    assert cond[0].computed and cond[-1].computed and cond[1].score == pytest.approx(
        float(poly(json.loads(coefficients.read_text())["points"]["x"][0])), rel=1e-4)
    assert [c.computed for c in gen.calls if c.branch == "uncond"] == [c.computed for c in cond]


def test_missing_and_foreign_files(calibrated, tmp_path):
    spec, runner, ratios, coefficients = calibrated
    missing = resolve(dict(spec, policy={"name": "magcache", "ratios": str(tmp_path / "nope.json")})).policy
    with pytest.raises(BenchError, match="nope.json' not found.*calibrate SPEC.yaml --policy magcache"):
        missing.make_policy()
    other = dict(spec, model={"name": "tiny-cogvideox"})
    with pytest.raises(SpecError, match="for the wan family"):
        resolve(dict(other, policy={"name": "teacache", "thresh": 0.1, "coefficients": str(coefficients)}))
    with pytest.raises(SpecError, match="for the wan family"):
        resolve(dict(other, policy={"name": "magcache", "ratios": str(ratios)}))
