"""Decisions near their threshold (issue 22): each trace entry's relative margin and the table's count."""

from __future__ import annotations

import json

import pytest

from sencache_bench.errors import BenchError
from sencache_bench.results.margins import near_threshold, relative_margin
from sencache_bench.results.tables import aggregate, render


def _rec(trace, policy="teacache"):
    return {"model": "m", "policy": policy, "setting": "s", "nfe": 4, "reference": {"nfe": 8, "flops": {"total": 1e15,
            "total_no_attn": 1e15}}, "flops": {"total": 5e14, "total_no_attn": 5e14}, "metrics": {}, "trace": trace}


def test_relative_margin_by_hand():
    assert relative_margin(0.0999, 0.1) == pytest.approx(1e-3, rel=1e-9)
    assert relative_margin(0.09, 0.1) == pytest.approx(0.1, rel=1e-9)
    assert relative_margin(0.2, -0.1) == pytest.approx(3.0)  # |threshold|: a negative (forced) threshold
    assert relative_margin(None, 0.1) is None and relative_margin(0.1, None) is None
    assert relative_margin(0.0, 0.0) is None  # threshold 0: undefined, left out
    assert relative_margin(float("nan"), 0.1) is None


def test_near_threshold_counts_within_the_margin_on_old_and_new_records():
    """0.0999 vs 0.1 is within 1e-3 (the bound is inclusive), 0.09 is not; a record made before margins were
    written (score and threshold only) counts the same; calls without a score or threshold are not decisions."""
    old = _rec([{"score": 0.0999, "threshold": 0.1}, {"score": 0.09, "threshold": 0.1},
                {"score": None, "threshold": 0.1}, {"threshold": 0.1}, {"score": 0.0, "threshold": 0.0}])
    new = _rec([{"score": 0.10005, "threshold": 0.1, "margin": relative_margin(0.10005, 0.1)},
                {"score": 0.5, "threshold": 0.1, "margin": 4.0}])
    assert near_threshold([old]) == {"decisions": 2, "near": 1, "margin": 1e-3, "share": 0.5}
    assert near_threshold([old, new]) == {"decisions": 4, "near": 2, "margin": 1e-3, "share": 0.5}
    assert near_threshold([old, new], margin=0.2)["near"] == 3
    assert near_threshold([_rec([{"score": 0.1, "threshold": 0.1}])], margin=0)["near"] == 1  # a tie is near
    assert near_threshold([_rec([])]) == {"decisions": 0, "near": 0, "margin": 1e-3, "share": None}
    with pytest.raises(BenchError, match="margin must be"):
        near_threshold([old], margin=-1)
    with pytest.raises(BenchError, match="margin must be"):
        near_threshold([old], margin=float("nan"))


def test_stored_margin_wins_over_score_and_threshold():
    """A record's own margin (computed at full precision when it was written) is the one counted."""
    rec = _rec([{"score": 0.09, "threshold": 0.1, "margin": 1e-4}])
    assert near_threshold([rec])["near"] == 1


def test_table_column_shows_near_over_decisions():
    recs = [_rec([{"score": 0.0999, "threshold": 0.1}, {"score": 0.09, "threshold": 0.1}]),
            _rec([{"score": 0.1, "threshold": 0.1}, {"score": 0.3, "threshold": 0.1}, {"score": None}]),
            _rec([{"branch": "cond", "computed": True}], policy="static")]
    rows = {r["policy"]: r for r in aggregate(recs)}
    assert rows["teacache"]["near_threshold"]["near"] == 2 and rows["teacache"]["near_threshold"]["decisions"] == 4
    md = render(list(rows.values()), "markdown")
    header = [c.strip() for c in md.splitlines()[0].strip("|").split("|")]
    col = header.index("near_threshold")
    cells = {line.split("|")[2].strip(): line.strip("|").split("|")[col].strip() for line in md.splitlines()[2:]}
    assert cells == {"teacache": "2/4", "static": ""}
    data = json.loads(render(list(rows.values()), "json"))
    # rows sorted: static (no decision with a margin), teacache; plain numbers for machines
    assert [(d["near_threshold"], d["decisions"]) for d in data] == [(None, None), (2, 4)]


@pytest.mark.parametrize("policy", [
    {"name": "sencache", "eps_main": 0.3, "max_reuse": 2},
    {"name": "teacache", "thresh": 0.2, "coefficients": "configs/calibrated/tiny-wan_teacache.json"},
    {"name": "magcache", "ratios": "configs/calibrated/tiny-wan_magcache.json"},
    {"name": "semcache"},
], ids=lambda p: p["name"])
def test_a_real_run_writes_each_decisions_margin(policy, tiny_spec):
    """tiny-wan through the runner: every trace entry with a score and a nonzero threshold carries
    margin == |score - threshold| / |threshold|, recomputed here from the trace's own numbers."""
    from sencache_bench.runner import Runner
    from sencache_bench.spec import resolve

    spec = resolve(tiny_spec(sampling={"steps": 6, "height": 32, "width": 32, "frames": 9, "guidance_scale": 5.0,
                                       "seeds": [0]}, prompts=["a red ball"], policy=policy))
    runner = Runner(spec)
    rec = json.loads(runner.run_item(*runner.items()[0]).read_text())
    scored = [c for c in rec["trace"] if c.get("score") is not None and c.get("threshold")]
    assert scored, "the run made decisions with a score"
    for c in rec["trace"]:
        if c in scored:
            assert c["margin"] == abs(c["score"] - c["threshold"]) / abs(c["threshold"])
        else:
            assert "margin" not in c
    counted = near_threshold([rec], margin=float("inf"))
    assert counted["decisions"] == len(scored)
    tight = min(c["margin"] for c in scored)
    assert near_threshold([rec], margin=tight)["near"] >= 1
    if tight > 0:
        assert near_threshold([rec], margin=tight * 0.99)["near"] == 0
