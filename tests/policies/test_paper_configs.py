"""The shipped Wan paper configs sample on the schedule the published settings were fitted on (issue 13, item 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sencache_bench.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
WAN_CONFIGS = sorted((ROOT / "configs" / "paper").glob("*wan*.yaml")) + [ROOT / "configs" / "wan_sencache.yaml"]


def test_every_wan_paper_config_is_found():
    names = {p.name for p in WAN_CONFIGS}
    assert {f"{p}_wan_{s}.yaml" for p in ("sencache", "teacache", "magcache") for s in ("slow", "fast")} <= names


@pytest.mark.parametrize("path", WAN_CONFIGS, ids=lambda p: p.name)
def test_wan_paper_configs_sample_at_the_wan_repositorys_shift(path):
    """The official SenCache, TeaCache and MagCache Wan 2.1 scripts sample at shift 5.0 (the Wan repository's),
    not diffusers' 3.0: TeaCache's coefficients and MagCache's curves were fitted on that schedule."""
    spec = load_spec(path)
    assert spec.model_name.startswith("wan2.1-t2v") and spec.sampling.shift == 5.0
    assert spec.entry.defaults.shift == 3.0  # the registered default stays diffusers'; the configs set 5.0
