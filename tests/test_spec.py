"""Spec validation: defaults, resolution, and one clear line per error naming the field path."""

from __future__ import annotations

import pytest
import yaml

from sencache_bench.errors import SpecError
from sencache_bench.spec import load_spec, resolve


def test_issue_spec_resolves_exactly(tiny_spec):
    spec = resolve(tiny_spec())
    s = spec.sampling
    assert (s.steps, s.height, s.width, s.frames, s.guidance_scale, s.seeds) == (6, 32, 32, 9, 5.0, (0,))
    assert [p.text for p in spec.prompts] == ["a red ball bouncing on grass", "a quiet library"]
    assert spec.policy.name == "none" and spec.metrics == ["psnr", "ssim"]
    assert spec.family.name == "wan" and spec.device == "cpu" and spec.dtype == "float32"


def test_registered_model_supplies_sampling_defaults(tiny_spec):
    spec = resolve({**tiny_spec(), "sampling": {"steps": 4}})
    assert spec.sampling.steps == 4 and (spec.sampling.height, spec.sampling.frames) == (32, 9)
    del_sampling = {k: v for k, v in tiny_spec().items() if k != "sampling"}
    assert resolve(del_sampling).sampling.steps == 6


def test_full_size_defaults_are_the_papers():
    spec = resolve({"model": {"name": "wan2.1-t2v-1.3b"}, "prompts": ["x"]})
    s = spec.sampling
    assert (s.width, s.height, s.frames, s.steps, s.guidance_scale) == (832, 480, 81, 50, 5.0)
    assert spec.source == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"


@pytest.mark.parametrize("section, value, expected", [
    ("sampling", {"steps": 0}, "sampling.steps: Input should be greater than or equal to 1 (found 0)"),
    ("sampling", {"steps": "many"}, "sampling.steps: Input should be a valid integer"),
    ("sampling", {"stepz": 3}, "sampling.stepz: unknown key (valid keys: steps, height"),
    ("sampling", {"height": 44}, "sampling.height: must be a multiple of 16 for wan, got 44 (nearest: 48)"),
    ("sampling", {"frames": 10}, "sampling.frames: must be 4k+1 for wan, got 10"),
    ("model", {"name": "tiny-wann"}, "model.name: unknown model 'tiny-wann'. Did you mean 'tiny-wan'? Valid: "),
    ("policy", {"name": "sencash"}, "policy.name: unknown policy 'sencash'"),
    ("policy", {"name": "static"}, "policy: give exactly one of 'every'"),
    ("policy", {"name": "static", "every": 2, "bogus": 1}, "policy.bogus: unknown key (valid keys: name, every, steps, reuse)"),
    ("metrics", ["psnr", "fvd"], "metrics[1]: unknown metric 'fvd' (valid: psnr, psnr_pooled, ssim, ssim_torchmetrics, lpips, lpips_vgg, vbench)"),
    ("prompts", "no_such_prompts.yaml", "prompts: file 'no_such_prompts.yaml' not found"),
    ("prompts", [], "prompts: the list is empty"),
    ("model", {"name": "tiny-wan", "device": "tpu"}, "model.device: expected auto, cpu, cuda or cuda:N (found 'tpu')"),
])
def test_errors_name_the_field(tiny_spec, section, value, expected):
    with pytest.raises(SpecError) as err:
        resolve(tiny_spec(**{section: value}))
    assert expected in str(err.value)
    assert err.value.exit_code == 2


def test_unknown_top_level_key_and_missing_section(tiny_spec):
    with pytest.raises(SpecError, match=r"polcy: unknown key \(valid keys: model, sampling, prompts"):
        resolve({**tiny_spec(), "polcy": {}})
    with pytest.raises(SpecError, match="prompts: required field is missing"):
        resolve({k: v for k, v in tiny_spec().items() if k != "prompts"})


def test_unknown_family_for_hub_id(tiny_spec):
    with pytest.raises(SpecError, match="model.family: required for hub id 'someone/some-model'"):
        resolve(tiny_spec(model={"name": "someone/some-model"}))


def test_overrides_and_yaml_errors(tmp_path, tiny_spec):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec()))
    spec = load_spec(path, ["sampling.steps=3", "policy={name: static, every: 2}"])
    assert spec.sampling.steps == 3 and spec.policy.every == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: tiny-wan\nprompts: [x]\n")
    with pytest.raises(SpecError, match="not valid YAML at line"):
        load_spec(bad)
    with pytest.raises(SpecError, match="spec file .* not found"):
        load_spec(tmp_path / "missing.yaml")
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        load_spec(path, ["sampling.steps"])


def test_prompt_file_groups_and_limit(tiny_spec):
    spec = resolve(tiny_spec(prompts={"file": "vbench_mini.yaml", "groups": ["static", "dynamic"], "limit": 7}))
    assert len(spec.prompts) == 7
    assert {p.group for p in spec.prompts} == {"static", "dynamic"}
    assert [p.index for p in spec.prompts] == list(range(7))
    with pytest.raises(SpecError, match="prompts.groups: unknown group 'fast'"):
        resolve(tiny_spec(prompts={"file": "vbench_mini.yaml", "groups": ["fast"]}))


def test_every_shipped_config_validates():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "configs"
    configs = sorted(root.rglob("*.yaml"))
    assert configs
    for path in configs:
        text = path.read_text()
        assert text.startswith("#") and "sencache-bench" in text.splitlines()[0], f"{path}: first line must show how to run it"
        load_spec(path)
