"""SenCache calibration: the secant / forward-difference estimates, profiles on tiny models, and their checks."""

from __future__ import annotations

import hashlib

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
import yaml
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from typer.testing import CliRunner

from sencache_bench.calibration import CALIBRATORS
from sencache_bench.calibration.profile import SensitivityProfile, check_profile, load_profile
from sencache_bench.calibration.sencache import calibrate, measure, summarize
from sencache_bench.errors import BenchError
from sencache_bench.models import MODELS
from sencache_bench.results.store import read_json
from sencache_bench.runner import Runner
from sencache_bench.spec import load_spec, resolve


class Log(list):
    def __call__(self, line: str) -> None:
        self.append(line)

    def says(self, text: str) -> bool:
        return any(text in line for line in self)


# -- the estimator on a synthetic denoiser ---------------------------------------------------------
def _flow():
    s = FlowMatchEulerDiscreteScheduler(shift=3.0)
    s.set_timesteps(12)
    return s


def _unipc_flow():
    s = UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0)
    s.set_timesteps(12)
    return s


def _ddim():
    s = DDIMScheduler(timestep_spacing="trailing")
    s.set_timesteps(12)
    return s


@pytest.mark.parametrize("make_scheduler", [_flow, _unipc_flow, _ddim], ids=["flowmatch-euler", "unipc-flow", "ddim"])
def test_synthetic_denoiser_recovers_its_known_jx_and_jt(make_scheduler):
    """f(x, t) = a*x + b*t*v: Jx = a and Jt = b*||v|| at every timestep; the estimates within 1%."""
    a, b = 0.7, 0.003
    v = torch.linspace(-1, 1, 2 * 4 * 3 * 5).view(1, 2, 4, 3, 5)
    f = lambda x, t, s: a * x + b * t * v  # noqa: E731
    g = torch.Generator().manual_seed(0)
    clean = [torch.randn(1, 2, 4, 3, 5, generator=g) for _ in range(3)]
    scheduler = make_scheduler()
    timesteps, jx, jt = measure(f, scheduler, clean, seed=0)
    assert timesteps == [float(t) for t in scheduler.timesteps] and jx.shape == jt.shape == (3, 12)
    np.testing.assert_allclose(jx, a, rtol=0.01)
    np.testing.assert_allclose(jt, b * float(v.norm()), rtol=0.01)
    profile = summarize(timesteps, jx, jt, model="synthetic", family="wan", schedule={})
    assert profile.counts == (3,) * 12
    np.testing.assert_allclose(profile.jx, a, rtol=0.01)
    assert len(profile.meta["per_sample"]["Jx"]) == 3


def test_nonlinear_denoiser_secant_follows_the_step():
    """f(x, t) = x**3 / 3: the secant over [x_t, x_next] is mean of x^2-ish, not a constant: checked directly."""
    f = lambda x, t, s: x ** 3 / 3  # noqa: E731
    clean = [torch.full((1, 1, 2, 2, 2), 0.5)]
    scheduler = _flow()
    timesteps, jx, jt = measure(f, scheduler, clean, seed=0)
    # recompute the first timestep by hand with the same noise
    g = torch.Generator("cpu").manual_seed(0)
    noise = torch.randn(clean[0].shape, generator=g)
    s0, s1 = float(scheduler.sigmas[0]), float(scheduler.sigmas[1])
    x_t = (1 - s0) * clean[0] + s0 * noise
    x_next = x_t + (s1 - s0) * f(x_t, 0, 0)
    expected = float((f(x_next, 0, 0) - f(x_t, 0, 0)).norm() / (x_next - x_t).norm())
    assert jx[0, 0] == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(jt, 0.0, atol=1e-12)  # f does not depend on t


# -- profiles on tiny pipelines ---------------------------------------------------------------------
STEPS = 6


def tiny(tmp_path: Path, model: str = "tiny-wan", steps: int = STEPS, **policy) -> dict:
    return {"model": {"name": model}, "prompts": ["a red ball bouncing on grass"],
            "sampling": {"steps": steps, "height": 32, "width": 32, "frames": 9, "guidance_scale": 5.0},
            "policy": {"name": "sencache", "eps_main": 0.3, "max_reuse": 2, **policy}, "metrics": ["psnr"],
            "output": {"dir": str(tmp_path / "results"), "save_videos": False}}


@pytest.mark.parametrize("name", [n for n in MODELS if n.startswith("tiny-")
                                  and MODELS.get(n).image != "required"  # I2V: test_sencache_condition.py
                                  and "refused" not in MODELS.get(n).family.adapters.get("sencache", {})])
def test_every_tiny_family_calibrates(name, tmp_path):
    """The family adapters: conditioning of the conditional call; VAE-encoded videos in the transformer's layout."""
    spec = resolve({"model": {"name": name}, "prompts": ["a cat"], "sampling": {"steps": 4},
                    "output": {"dir": str(tmp_path)}})
    runner = Runner(spec)
    path = calibrate(runner, samples=1, log=lambda s: None)
    profile = load_profile(path)
    assert profile.model == name and profile.family == spec.family.name
    assert len(profile.timesteps) == 4 and profile.counts == (1,) * 4
    assert all(v > 0 for v in profile.jx + profile.jt)
    s, pipe = spec.sampling, runner.session.pipe
    video = torch.rand(1, 3, s.frames, s.height, s.width) * 2 - 1
    with torch.no_grad():
        encoded = spec.family.adapters["sencache"]["encode_video"](pipe, video, spec.call_kwargs())
        kwargs = {**spec.call_kwargs(), "num_inference_steps": 1}
        generated = pipe(prompt="a cat", output_type="latent", **kwargs).frames
    assert encoded.shape == generated.shape


def test_profile_file_contents(tmp_path):
    spec = resolve(tiny(tmp_path))
    log = Log()
    path = calibrate(Runner(spec, log=log), samples=2, log=log, prompts=["a cat", "a dog"])
    assert path.parent == tmp_path / "results" / "profiles" and path.name.startswith("sencache-")
    data = read_json(path)
    assert data["kind"] == "sensitivity-profile" and data["method"] == "secant-forward-difference"
    assert data["model"] == "tiny-wan" and data["family"] == "wan" and data["samples"] == 2
    assert data["schedule"]["steps"] == STEPS and data["schedule"]["shift"] == 7.0
    assert data["schedule"]["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    assert data["timesteps"] == data["schedule"]["timesteps"] and len(data["timesteps"]) == STEPS
    assert data["counts"] == [2] * STEPS and data["prompts"] == ["a cat", "a dog"]
    assert np.allclose(np.mean(data["per_sample"]["Jx"], 0), data["Jx"])
    assert np.allclose(np.mean(data["per_sample"]["Jt"], 0), data["Jt"])
    assert data["spec_hash"] == spec.hash and data["source"] == "generated"
    assert log.says("wrote")


def test_run_without_profile_calibrates_once_then_reuses(tmp_path):
    spec = resolve(tiny(tmp_path))
    log = Log()
    runner = Runner(spec, log=log)
    record = read_json(runner.run_item(*runner.items()[0]))
    profiles = list((tmp_path / "results" / "profiles").glob("sencache-*.json"))
    assert len(profiles) == 1 and log.says("calibrating one first") and log.says(str(profiles[0]))
    assert read_json(profiles[0])["samples"] == 8
    # the record names the profile the spec left out, with the file's hash
    digest = hashlib.sha256(profiles[0].read_bytes()).hexdigest()
    assert record["policy_inputs"] == {"profile": {"path": str(profiles[0]), "sha256": digest,
                                                   "calibration_source": "generated"}}  # tiny-wan has no clips
    assert record["policy_params"]["profile"] is None
    trace = record["trace"]
    assert trace[0]["computed"] and all("threshold" in c for c in trace)
    assert all("score" in c for c in trace if c["step"] > 0)
    stamp = profiles[0].stat().st_mtime_ns

    log2 = Log()
    runner2 = Runner(resolve(tiny(tmp_path)), force=True, log=log2)
    record2 = read_json(runner2.run_item(*runner2.items()[0]))
    assert log2.says("calibrated earlier") and not log2.says("calibrating")
    assert profiles[0].stat().st_mtime_ns == stamp
    assert [c["computed"] for c in record2["trace"]] == [c["computed"] for c in trace]


def test_spec_profile_is_checked_against_model_and_schedule(tmp_path):
    path = calibrate(Runner(resolve(tiny(tmp_path))), samples=2, log=lambda s: None)

    # same model and schedule: used as is
    log = Log()
    runner = Runner(resolve(tiny(tmp_path, profile=str(path))), log=log)
    runner.prepare_policy()
    assert log.says(f"using sensitivity profile {path}") and not log.says("remapped")
    assert runner.spec.policy._profile.timesteps == load_profile(path).timesteps

    # another step count: remapped by nearest timestep, and said so; the run uses it
    log = Log()
    runner = Runner(resolve(tiny(tmp_path, steps=9, profile=str(path))), log=log)
    record = read_json(runner.run_item(*runner.items()[0]))
    assert log.says("measured on 6 steps, this run has 9") and log.says("remapped")
    used = runner.spec.policy._profile
    assert len(used.timesteps) == 9 and used.remapped_from == 6
    assert len([c for c in record["trace"] if c["branch"] == "cond"]) == 9

    # another model: refused
    with pytest.raises(BenchError, match="measured on tiny-wan, not tiny-hunyuanvideo"):
        Runner(resolve(tiny(tmp_path, model="tiny-hunyuanvideo", profile=str(path)))).prepare_policy()

    # another shift (same model, same step count): refused
    other = tiny(tmp_path, profile=str(path))
    other["sampling"]["shift"] = 3.0
    with pytest.raises(BenchError, match="shift 7.0, this run uses 3.0"):
        Runner(resolve(other)).prepare_policy()


def test_profile_checks_without_a_model(tmp_path):
    ts = (1000.0, 750.0, 500.0, 250.0)
    profile = SensitivityProfile(timesteps=ts, jx=(1.0, 2.0, 3.0, 4.0), jt=(0.1, 0.2, 0.3, 0.4), counts=(8,) * 4,
                                 model="m", family="wan", schedule={"steps": 4, "shift": 5.0, "scheduler": "S",
                                                                    "timesteps": list(ts)})
    path = profile.save(tmp_path / "p.json")
    assert load_profile(path).jx == profile.jx
    same = {"steps": 4, "shift": 5.0, "scheduler": "S", "timesteps": list(ts)}
    assert check_profile(load_profile(path), model="m", schedule=same).jx == profile.jx
    finer = {**same, "steps": 8, "timesteps": [1000.0 - 125 * i for i in range(8)]}
    remapped = check_profile(profile, model="m", schedule=finer, log=lambda s: None)
    assert remapped.jx == (1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0)  # ties go to the noisier timestep
    with pytest.raises(BenchError, match="other timesteps"):
        check_profile(profile, model="m", schedule={**same, "timesteps": [990.0, 750.0, 500.0, 250.0]})
    with pytest.raises(BenchError, match="scheduler S"):
        check_profile(profile, model="m", schedule={**same, "scheduler": "T"})
    (tmp_path / "bad.json").write_text(json.dumps({"kind": "run"}))
    with pytest.raises(BenchError, match="not a sensitivity profile"):
        load_profile(tmp_path / "bad.json")
    with pytest.raises(BenchError, match="not found"):
        load_profile(tmp_path / "missing.json")


def test_a_missing_profile_file_is_refused(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny(tmp_path, profile="nowhere.json")))
    with pytest.raises(BenchError, match="nowhere.json.* not found"):  # a SpecError when the spec is loaded
        Runner(load_spec(spec)).prepare_policy()


def test_cli_calibrates_on_videos(tmp_path):
    """`calibrate SPEC --videos DIR`: mp4 files VAE-encoded; a .txt beside a video is its prompt."""
    from sencache_bench.cli.calibrate import calibrate as calibrate_cmd
    from sencache_bench.metrics.video_io import write_mp4

    videos = tmp_path / "videos"
    g = np.random.default_rng(0)
    for k in range(2):
        write_mp4(videos / f"clip{k}.mp4", g.integers(0, 255, (12, 48, 64, 3), dtype=np.uint8), fps=8)
    (videos / "clip0.txt").write_text("a dog running on a beach")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny(tmp_path)))
    app = typer.Typer()
    app.command()(calibrate_cmd)
    app.command("other")(lambda: None)  # two commands: the calibrate command keeps its name
    out = tmp_path / "profile.json"
    result = CliRunner().invoke(app, ["calibrate", str(spec), "--videos", str(videos), "--samples", "3",
                                      "--out", str(out), "--set", "sampling.steps=4"])
    assert result.exit_code == 0, result.output
    data = read_json(out)
    assert data["source"] == "videos" and data["inputs"] == ["clip0.mp4", "clip1.mp4"] and data["samples"] == 2
    assert data["prompts"][0] == "a dog running on a beach" and len(data["timesteps"]) == 4
    assert data["counts"] == [2] * 4
    assert "sencache" in CALIBRATORS and CALIBRATORS.get("sencache") is calibrate


def test_bench_model_calibrates_on_prompts_of_its_own_grammar(tmp_path):
    """bench-t2v's tokenizer knows only the grammar's words: its calibration prompts parse, none is an
    evaluation prompt or shows a held-out combination; other models keep the generic set."""
    from sencache_bench.bench.data import is_held_out, parse_prompt
    from sencache_bench.calibration.sencache import CALIBRATION_PROMPTS, calibration_prompts

    bench = resolve({"model": {"name": "bench-t2v"}, "prompts": "bench.yaml", "policy": {"name": "none"}})
    own = calibration_prompts(bench)
    assert len(own) == 8 and own != CALIBRATION_PROMPTS
    assert not any(is_held_out(parse_prompt(p)) for p in own)
    assert len(bench.prompts) == 15 and not set(own) & {p.text for p in bench.prompts}
    assert calibration_prompts(resolve(tiny(tmp_path))) == CALIBRATION_PROMPTS


# -- real videos by default where the model has them (issue 13, item 5) -------------------------------
def test_bench_model_calibrates_on_its_ground_truth_clips_by_default(tmp_path):
    """bench-t2v's default source is its procedural ground-truth clips (real videos, as the paper): each sample's
    Jx, Jt equal the estimator run on the VAE-encoded clip of its prompt (seed + k), rebuilt here by hand."""
    from sencache_bench.bench.data import render_prompt
    from sencache_bench.calibration.sencache import calibration_prompts, capture_scheduler

    spec = resolve({"model": {"name": "bench-t2v"}, "prompts": ["a red square moving left"],
                    "sampling": {"steps": 3}, "output": {"dir": str(tmp_path)}})
    log = Log()
    runner = Runner(spec, log=log)
    data = read_json(calibrate(runner, samples=2, log=log))
    assert data["calibration_source"] == data["source"] == "clips" and log.says("ground-truth clip")
    prompts = list(calibration_prompts(spec)[:2])
    assert data["prompts"] == prompts

    pipe, adapter, kwargs = runner.session.pipe, spec.family.adapters["sencache"], spec.call_kwargs()
    clean, conds = [], []
    with torch.no_grad():
        for k, prompt in enumerate(prompts):
            frames = render_prompt(prompt, seed=k).frames  # (17, 64, 64, 3) uint8, the spec's size
            video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
            clean.append(adapter["encode_video"](pipe, video, kwargs).float())
            conds.append(adapter["conditioning"](pipe, prompt, kwargs, clean[-1]))
    tr = pipe.transformer

    def denoise(x, t, s):
        return tr(hidden_states=x, timestep=torch.tensor([t]), **conds[s], return_dict=False)[0]

    _, jx, jt = measure(denoise, capture_scheduler(runner, prompts[0]), clean, seed=0)
    np.testing.assert_allclose(data["per_sample"]["Jx"], jx, rtol=1e-4)
    np.testing.assert_allclose(data["per_sample"]["Jt"], jt, rtol=1e-4)
    generated = read_json(calibrate(runner, samples=2, log=log, source="generated"))
    assert generated["calibration_source"] == "generated" and generated["Jx"] != data["Jx"]


def test_a_model_without_clips_calibrates_on_generations_and_says_so(tmp_path):
    spec = resolve(tiny(tmp_path))
    log = Log()
    data = read_json(calibrate(Runner(spec, log=log), samples=1, log=log))
    assert data["calibration_source"] == "generated" and log.says("not real videos")
    with pytest.raises(BenchError, match="tiny-wan has no ground-truth clips"):
        calibrate(Runner(spec), samples=1, log=lambda s: None, source="clips")


def test_shipped_bench_profile_is_calibrated_on_clips_with_relative_paths():
    """configs/calibrated/bench-t2v_sencache.json: made from the ground-truth clips; no absolute path inside; the
    record of a run with it names the source in its policy inputs."""
    root = Path(__file__).resolve().parents[2]
    path = root / "configs" / "calibrated" / "bench-t2v_sencache.json"
    data = read_json(path)
    assert data["calibration_source"] == "clips" and data["samples"] == 8
    assert data["model_identity"]["source"] == "sencache_bench/bench/weights"

    def strings(x):
        if isinstance(x, dict):
            return [s for v in x.values() for s in strings(v)]
        if isinstance(x, list):
            return [s for v in x for s in strings(v)]
        return [x] if isinstance(x, str) else []

    assert not [s for s in strings(data) if s.startswith("/")]
    spec = load_spec(root / "configs" / "bench_sencache.yaml")
    runner = Runner(spec, log=lambda s: None)
    runner.prepare_policy()
    assert spec.policy.inputs()["profile"]["calibration_source"] == "clips"


def test_portable_identity_writes_repository_paths_relative(tmp_path):
    from sencache_bench.spec import REPO_ROOT, portable_identity

    inside = {"model": "m", "source": str(REPO_ROOT / "sencache_bench" / "bench" / "weights")}
    assert portable_identity(inside)["source"] == "sencache_bench/bench/weights"
    outside = {"model": "m", "source": str(tmp_path)}
    assert portable_identity(outside) == outside
    assert portable_identity({"model": "m", "source": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"})["source"] == \
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
