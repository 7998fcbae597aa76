"""Damaged calibration files (TeaCache coefficients, MagCache ratios, a SenCache profile): refused with one
line naming the file and the command that remakes it, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

CALIBRATED = Path(__file__).resolve().parents[2] / "configs" / "calibrated"
CASES = {  # policy: (spec, shipped good file, exit code)
    "teacache": ({"name": "teacache", "coefficients": "calibrated.json", "thresh": 0.2}, "tiny-wan_teacache.json", 2),
    "magcache": ({"name": "magcache", "ratios": "calibrated.json", "thresh": 0.2}, "tiny-wan_magcache.json", 2),
}


@pytest.mark.parametrize("policy", list(CASES))
@pytest.mark.parametrize("damage", ["truncated", "binary"])
def test_damaged_calibration_file_refused_then_remade(bench, policy, damage):
    spec_policy, good_name, code = CASES[policy]
    good = (CALIBRATED / good_name).read_text()
    path = bench.tmp / "calibrated.json"
    path.write_bytes(good.encode()[:200] if damage == "truncated" else b"\x89PNG\r\n\x1a\n\x00\x00")
    spec = bench.spec(policy=spec_policy)

    out = bench.cli("run", spec, "-q")
    assert out.code == code
    why = "JSONDecodeError" if damage == "truncated" else "UnicodeDecodeError"
    assert out.err == [f"error: policy: {path}: not a readable JSON file ({why}): remake it with "
                       f"`sencache-bench calibrate SPEC.yaml --policy {policy}`"]
    assert not (bench.tmp / "results").exists()

    path.write_text(good)  # what `calibrate` would write; here the shipped file for tiny-wan
    assert bench.cli("run", spec, "-q").code == 0
    assert bench.table(bench.tmp / "results") == bench.undisturbed((), policy=spec_policy,
                                                                   beside={"calibrated.json": good})


def test_damaged_sensitivity_profile_refused(bench):
    path = bench.tmp / "profile.json"
    path.write_text('{"kind": "sencache_profile", "Jx": [0.1, ')
    spec = bench.spec(policy={"name": "sencache", "profile": str(path), "preset": "fast"})
    out = bench.cli("run", spec, "-q")
    assert out.code == 1
    assert out.err == [f"error: sensitivity profile {path} is unreadable (JSONDecodeError): remake it with "
                       f"`sencache-bench calibrate SPEC.yaml --policy sencache`"]
    assert not (bench.tmp / "results").exists()
