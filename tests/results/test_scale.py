"""Speed work on big result folders changes no result: the vectorised speedup bootstrap draws the very resamples
``random.choices`` drew, and loading with the cyclic collector paused returns what plain parsing returns."""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import random
from pathlib import Path
from statistics import fmean

import pytest

from sencache_bench.results.speedup import bootstrap_geomean, python_random
from sencache_bench.results.store import load_records, record_problem

ROOT = Path(__file__).resolve().parents[2]


def reference_bootstrap(values, seed=0, samples=2000, level=0.95):
    """The interval as it was computed before (pure Python, random.choices): the second method."""
    rng = random.Random(seed)
    logs = [math.log(v) for v in values]
    means = sorted(fmean(rng.choices(logs, k=len(logs))) for _ in range(samples))
    return (math.exp(means[int(math.floor((1 - level) / 2 * (samples - 1)))]),
            math.exp(means[int(math.ceil((1 + level) / 2 * (samples - 1)))]))


def test_numpy_stream_is_pythons():
    for seed in (0, 1, 2**32 - 1, 2**40 + 3):
        r = random.Random(seed)
        assert python_random(seed).random_sample(50).tolist() == [r.random() for _ in range(50)]


@pytest.mark.parametrize("n", [2, 3, 17, 400])
@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3])
def test_bootstrap_matches_random_choices(n, seed):
    """Same resamples, so the same order statistics (up to the last bits of a float sum)."""
    rng = random.Random(n * 31 + seed)
    values = [rng.uniform(0.5, 3.0) for _ in range(n)]
    got, want = bootstrap_geomean(values, seed=seed), reference_bootstrap(values, seed=seed)
    assert got == (pytest.approx(want[0], rel=1e-12), pytest.approx(want[1], rel=1e-12))


def test_bootstrap_in_chunks_is_one_stream():
    """More resamples than one chunk holds (2**22 draws): still the random.choices resamples."""
    values = [1.0 + (i % 13) / 10 for i in range(3000)]
    got, want = bootstrap_geomean(values, samples=1500), reference_bootstrap(values, samples=1500)
    assert got == (pytest.approx(want[0], rel=1e-12), pytest.approx(want[1], rel=1e-12))


def _table_scale():
    spec = importlib.util.spec_from_file_location("table_scale", ROOT / "benchmarks" / "table_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_records_are_complete_and_load_as_parsed(tmp_path):
    """table_scale's synthetic campaign: every record is a complete record of this schema, one file per
    (setting, prompt, seed); load_records returns exactly what json.loads does, and leaves the collector on."""
    template = {"kind": "run", "schema_version": 2, "model": "m", "policy": "static", "setting": "every=2",
                "nfe": 15.0, "flops": {"total": 1}, "latency": {"total_s": 1.0}, "metrics": {"psnr": 30.0},
                "reference": {"key": "k"}, "timing": {"policy_s": [1.0], "baseline_s": [1.6, 1.7], "speedup": 1.65},
                "baseline": {"latency_s": 1.65}}
    ts = _table_scale()
    ts.write(tmp_path, [template], 95)
    paths = sorted(tmp_path.rglob("*.json"))
    assert len(paths) == 95
    parsed = [json.loads(p.read_bytes()) for p in paths]
    assert all(record_problem(r) is None for r in parsed)
    assert len({(r["setting"], r["prompt_index"], r["seed"]) for r in parsed}) == 95
    gc.enable()
    records, problems = load_records(tmp_path)
    assert gc.isenabled() and not problems
    assert [{k: v for k, v in r.items() if k != "_path"} for r in records] == parsed
    gc.unfreeze()

