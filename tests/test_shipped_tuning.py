"""The tuning file `make run` and `make reproduce-bench` read (``TUNED``) still matches the specs they run.

Its entries are keyed by a hash of the model identity, sampling, the policy's other fields and the tuning prompts
(matching.TuningStore). A key that no longer matches (a new policy field, a checkout at another path: the key once
held the absolute path of bench-t2v's weights, so on a fresh clone nothing matched and `make run` re-tuned every
policy) silently costs the full tuning again; here it fails instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sencache_bench.matching import TuningStore, read_tuning, resolve_specs, tuning_prompts
from sencache_bench.spec import REPO_ROOT


def _make_var(name: str) -> list[str]:
    text = (REPO_ROOT / "Makefile").read_text().replace("\\\n", " ")
    values = re.search(rf"^{name} \?=(.*)$", text, re.M).group(1).split()
    return [v for token in values for v in (_make_var(token[2:-1]) if token.startswith("$(") else [token])]


def _key(path: str, sets: list[str]) -> str:
    [(_, spec, knob)] = resolve_specs([path], sets)
    prompts, source = tuning_prompts(spec, None)
    meta = {"source": source, "count": len(prompts), "seeds": [spec.sampling.seeds[0]], "prompts": prompts}
    return TuningStore(spec, knob, meta).key


def test_the_shipped_tuning_file_has_every_make_run_spec():
    tuned = read_tuning(REPO_ROOT / _make_var("TUNED")[0])
    missing = [p for p in _make_var("RUN_SPECS") if _key(p, []) not in tuned]
    assert not missing, f"not in the shipped tuning file (remake it: `make run TUNED=`): {missing}"


def test_the_key_does_not_hold_the_checkout_path():
    """bench-t2v's weights are named relative to the repository, so a clone elsewhere computes the same keys."""
    [(_, spec, _)] = resolve_specs(["configs/bench_static.yaml"], [])
    assert Path(spec.source).is_absolute() and spec.model_identity()["source"] == "sencache_bench/bench/weights"


@pytest.mark.parametrize("spec", ["configs/bench_sencache.yaml", "configs/bench_magcache.yaml"])
def test_the_capped_reproduce_bench_specs_are_kept(spec):
    """reproduce-bench's 0.42 run of MATCH_CAPPED sets max_reuse=3: those keys are in the file as well."""
    assert _key(spec, ["policy.max_reuse=3"]) in read_tuning(REPO_ROOT / _make_var("TUNED")[0])
