"""`match`: the knob search on synthetic measures worked out by hand, and equal budgets on the tiny model."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from typer.testing import CliRunner

from sencache_bench.cli.app import app
from sencache_bench.errors import BenchError, SpecError
from sencache_bench.matching import (MatchPoint, Search, Target, normal_prompt, pick, run_match, search_knob, summary,
                                     tuning_prompts, yaml_number)
from sencache_bench.policies.base import Knob
from sencache_bench.results.store import load_records, write_json
from sencache_bench.spec import resolve

STEPS = 30


def threshold_nfe(v: float) -> float:
    """A synthetic monotone policy: a threshold v in [0, 2] skips more as it grows; NFE = 30 at 0, 10 at 2, a step
    function (its levels are the integers 10..30, each held over an interval of width 0.1)."""
    return float(max(10, 30 - math.floor(10 * v)))


def test_bisection_on_a_synthetic_monotone_threshold():
    knob = Knob("thresh", "lower", 0.0, 2.0)
    calls = []
    found = search_knob(knob, lambda v: calls.append(v) or threshold_nfe(v), 15.0, max_evals=20)
    # the level 15 is held on [1.5, 1.6): the value found is in it, so NFE = target exactly
    assert found.achieved == 15.0 and 1.5 <= found.value < 1.6 and found.monotone and not found.note
    assert len(calls) <= 20 and len(set(calls)) == len(calls)  # no value measured twice
    # 0.42 x 30 = 12.6: levels 12 and 13 are reachable; 13 is nearer (0.4 vs 0.6) and within one step
    memo = {}
    first = search_knob(knob, threshold_nfe, 12.6, memo=memo, max_evals=20)
    assert first.achieved == 13.0 and 1.7 <= first.value < 1.8
    # a second target reuses what was measured: the ends are not measured again
    again = []
    search_knob(knob, lambda v: again.append(v) or threshold_nfe(v), 20.0, memo=memo, max_evals=20)
    assert 0.0 not in again and 2.0 not in again


def test_integer_knob_and_one_step_rule():
    knob = Knob("every", "lower", 1, 64, integer=True)
    nfe = lambda k: float(math.ceil(STEPS / k))  # noqa: E731 - static's NFE
    found = search_knob(knob, nfe, 15.0)
    assert (found.value, found.achieved) == (2, 15.0)
    # 12.6: every=2 gives 15 (2.4 over: more than one step), every=3 gives 10: 10 it is
    found = search_knob(knob, nfe, 12.6, max_evals=20)
    assert (found.value, found.achieved) == (3, 10.0)
    # the rule itself: nearest under g <= target + 1; a tie goes below the target
    assert pick(knob, {2: 15.0, 3: 10.0, 4: 8.0}, 14.5) == (2, 15.0)
    assert pick(knob, {2: 14.0, 3: 13.0}, 13.5) == (3, 13.0)


def test_one_step_means_one_step_not_more():
    """A value 1.2 over the target (inside a looser rule of 1.35) is refused even where it is the nearest, in
    pick and in the search with its default step; exactly one step over is allowed."""
    knob = Knob("thresh", "lower", 0.0, 1.0)
    assert pick(knob, {0.3: 13.8, 0.6: 11.0}, 12.6) == (0.6, 11.0)  # 13.8 is nearer (1.2 vs 1.6) but too far over
    assert pick(knob, {0.3: 13.6, 0.6: 11.0}, 12.6) == (0.3, 13.6)  # one step over exactly: allowed, and nearer
    assert pick(knob, {0.3: 13.8}, 12.6) is None
    step = lambda v: 30.0 if v == 0.0 else 13.8 if v < 0.5 else 11.0  # noqa: E731 - levels 30, 13.8, 11
    found = search_knob(knob, step, 12.6, max_evals=30)
    assert (found.achieved, found.value >= 0.5) == (11.0, True)
    capped = search_knob(knob, lambda v: 30.0 if v == 0.0 else 13.8, 12.6)  # never within one step: unreachable
    assert capped.value is None and "unreachable" in capped.note


def test_unreachable_and_not_monotone_are_said():
    knob = Knob("thresh", "lower", 0.0, 1.0)
    capped = search_knob(knob, lambda v: max(14.0, 30 - 40 * v), 12.6)  # a cap (max_reuse) holds NFE at 14
    assert capped.value is None and "unreachable" in capped.note and "14.00" in capped.note
    bumpy = search_knob(knob, lambda v: {0.0: 30.0, 1.0: 10.0, 0.5: 25.0, 0.75: 28.0}.get(v, 20.0), 26.0)
    assert not bumpy.monotone and "not monotone in thresh" in bumpy.note
    assert bumpy.achieved == 25.0  # still the nearest value tried
    scanned = search_knob(Knob("x", "higher", 0.0, 1.0, monotone=False), lambda v: 10 + 20 * v, 20.0, scan=5)
    assert scanned.value == 0.5 and "scanned 5 values" in scanned.note


def test_yaml_number_reads_back():
    for v in (1e-05, 0.25, 2.0, 3, 1.5e20):
        assert yaml.safe_load(yaml_number(v)) == v


def write(tmp_path, name, spec):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_match_on_the_tiny_model(tiny_spec, tmp_path):
    """Static and TeaCache tuned to 0.5 and 0.34 of 6 steps: within one step, records carry the match."""
    static = write(tmp_path, "static", tiny_spec(policy={"name": "static", "every": 2}))
    tea = write(tmp_path, "tea", tiny_spec(policy={"name": "teacache", "thresh": 0.2,
                                                   "coefficients": "configs/calibrated/tiny-wan_teacache.json"}))
    tune = tmp_path / "tune.txt"
    tune.write_text("a cat walking on a fence\na city street at night\n")
    targets = [Target("nfe", 0.5), Target("nfe", 0.34)]
    points = run_match([static, tea], targets, tune_file=tune, log=lambda s: None)
    assert [(p.policy, p.target.fraction) for p in points] == [("static", 0.5), ("static", 0.34),
                                                                ("teacache", 0.5), ("teacache", 0.34)]
    for p in points:
        assert p.search.value is not None and p.search.achieved <= p.search.target + 1
        assert abs(p.search.achieved - p.search.target) <= 1  # within one step of F x 6
    assert points[0].search.value == 2 and points[1].search.value in (3, 4)  # ceil(6/3) = ceil(6/4) = 2 <= 2.04
    records, _ = load_records(tmp_path / "results")
    assert len(records) == 8  # 2 policies x 2 targets x 2 evaluation prompts
    for rec in records:
        m = rec["match"]
        assert rec["policy_params"][m["knob"]] == m["value"]
        assert m["tune_prompts"]["prompts"] == ["a cat walking on a fence", "a city street at night"]
        assert m["target_nfe"] in (3.0, pytest.approx(2.04))
        if rec["policy"] == "static":  # static's NFE does not depend on the prompt: evaluation = tuning
            assert rec["nfe"] == m["tuned_nfe"]
    # a rerun tunes from the kept values and finds every record written
    again = run_match([static, tea], targets, tune_file=tune, log=lambda s: None)
    assert [p.search.value for p in again] == [p.search.value for p in points]
    assert all(not p.records for p in again)
    # the summary reads the kept evaluation records too: static at 0.5 evaluates at 3.0 = its target, no warning
    assert all(len(p.evaluation) == 2 and all(path.is_file() for path in p.evaluation) for p in again)
    lines = summary(again)
    assert lines[0].startswith("static @ nfe 0.5 (target 3.00): every=2") and not lines[1].startswith("warning")
    # the matched table
    out = CliRunner().invoke(app, ["table", str(tmp_path / "results"), "--layout", "matched", "-f", "json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert {(r["policy"], r["target_fraction"]) for r in rows} == {(p.policy, p.target.fraction) for p in points}
    assert all(r["psnr_lo"] <= r["psnr"] <= r["psnr_hi"] for r in rows)


def test_refusals_before_anything_runs(tiny_spec, tmp_path):
    none = write(tmp_path, "none", tiny_spec(policy={"name": "none"}))
    with pytest.raises(BenchError, match="policy none declares no budget knob"):
        run_match([none], [Target("nfe", 0.5)], log=lambda s: None)
    static = write(tmp_path, "static", tiny_spec(policy={"name": "static", "every": 2}))
    overlap = tmp_path / "tune.txt"
    overlap.write_text("a quiet library\n")  # one of the evaluation prompts
    with pytest.raises(SpecError, match="also evaluation prompts"):
        run_match([static], [Target("nfe", 0.5)], tune_file=overlap, log=lambda s: None)
    other = write(tmp_path, "other", tiny_spec(policy={"name": "static", "every": 3}, sampling={"steps": 8}))
    with pytest.raises(BenchError, match="model or sampling differs"):
        run_match([static, other], [Target("nfe", 0.5)], log=lambda s: None)
    res = CliRunner().invoke(app, ["match", str(static), "--nfe", "1.5"])
    assert res.exit_code == 1 and "in (0, 1]" in str(res.exception)
    assert not (tmp_path / "results").exists()


def test_tuning_prompts_that_are_evaluation_prompts_up_to_case_spaces_and_full_stop_are_refused(tiny_spec, tmp_path):
    """The evaluation prompts are "a red ball bouncing on grass" and "a quiet library": a tuning file writing one
    with other case, spaces or a trailing full stop tunes on it all the same, and is refused in one line."""
    spec = resolve(tiny_spec())
    assert normal_prompt("  A  Quiet\tLIBRARY. ") == "a quiet library" == normal_prompt("a quiet library?!")
    for variant in ("A Quiet Library", "a  quiet   library", "a quiet library.", " A red ball bouncing on grass! "):
        tune = tmp_path / "tune.txt"
        tune.write_text(f"a cat walking on a fence\n{variant}\n")
        with pytest.raises(SpecError, match="1 tuning prompt\\(s\\) are also evaluation prompts") as err:
            tuning_prompts(spec, tune)
        assert "\n" not in str(err.value) and repr(variant.strip()) in str(err.value)
    tune.write_text("a quiet library at night\na red ball\n")  # other words: not an evaluation prompt
    assert tuning_prompts(spec, tune)[0] == ["a quiet library at night", "a red ball"]


def _point(tiny_spec, tmp_path, name: str, by: str, fraction: float, steps: int, values: list[float]) -> MatchPoint:
    """A matched point at F x steps whose evaluation records on disk measure ``values`` (NFE; for a FLOPs target
    steps x transformer FLOPs / uncached)."""
    spec = resolve(tiny_spec(policy={"name": "static", "every": 2}))
    paths = []
    for i, value in enumerate(values):
        path = tmp_path / name / f"{i}.json"
        write_json(path, {"nfe": value, "sampling": {"steps": steps}, "flops": {"transformer_no_attn": value},
                          "reference": {"flops": {"transformer_no_attn": float(steps)}}})
        paths.append(path)
    target = fraction * steps
    return MatchPoint(tmp_path / "static.yaml", "static", Target(by, fraction), Search(target, 2, target, [], True),
                      spec=spec, evaluation=paths)


def test_summary_warns_when_the_evaluation_nfe_is_more_than_one_step_off(tiny_spec, tmp_path):
    """The README's 0.42 group: static evaluated at 10.0 calls against 0.42 x 30 = 12.6 is not at that budget, nor
    a point 1.1 over on average; a warning line each says so. 0.9 off, or a FLOPs point within one step, do not."""
    lines = summary([_point(tiny_spec, tmp_path, "far", "nfe", 0.42, 30, [10.0, 10.0]),
                     _point(tiny_spec, tmp_path, "near", "nfe", 0.42, 30, [11.4, 12.0]),
                     _point(tiny_spec, tmp_path, "above", "nfe", 0.5, 6, [4.0, 4.2]),
                     _point(tiny_spec, tmp_path, "flops", "flops", 0.5, 6, [3.5, 3.9])])
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings == [
        "warning: static @ nfe 0.42: evaluation mean NFE 10.00 over 2 video(s) is -2.60 from the target 12.60, "
        "more than one step: its rows do not compare at that budget",
        "warning: static @ nfe 0.5: evaluation mean NFE 4.10 over 2 video(s) is +1.10 from the target 3.00, "
        "more than one step: its rows do not compare at that budget"]
    assert len(lines) == 6 and lines.index(warnings[0]) == 1  # right after its point's line
    far_flops = _point(tiny_spec, tmp_path, "far-flops", "flops", 0.5, 6, [1.5, 1.9])
    assert summary([far_flops])[1].startswith("warning: static @ flops 0.5: evaluation mean FLOPs in steps 1.70")


def test_cli_match_by_flops(tiny_spec, tmp_path):
    """--flops: the tuned value is 6 x transformer FLOPs / uncached transformer FLOPs, the ratio the runner's own
    pricing gives the record (static's FLOPs do not depend on the prompt)."""
    static = write(tmp_path, "static", tiny_spec(policy={"name": "static", "every": 2}, prompts=["a quiet library"]))
    tune = tmp_path / "tune.txt"
    tune.write_text("a cat walking on a fence\n")
    res = CliRunner().invoke(app, ["match", str(static), "--flops", "0.5", "--tune-prompts", str(tune)])
    assert res.exit_code == 0, res.output
    (rec,), _ = load_records(tmp_path / "results")
    m = rec["match"]
    assert m["by"] == "flops" and m["target_nfe"] == 3.0 and abs(m["tuned_nfe"] - 3.0) <= 1
    ours, ref = rec["flops"]["transformer_no_attn"], rec["reference"]["flops"]["transformer_no_attn"]
    assert m["tuned_nfe"] == pytest.approx(6 * ours / ref)
    assert m["tuned_nfe"] > 6 / m["value"]  # residual reuse still runs the embeddings and the output head
    assert "Equal-budget comparison" in res.stdout


def test_tune_only_then_a_kept_tuning_file_measures_nothing_again(tiny_spec, tmp_path):
    """--tune-only writes the tuning file and no record; static (a fixed schedule) is tuned on one video, TeaCache
    on both; a second match elsewhere given that file (--tuned) measures no value again and its records say so."""
    static = write(tmp_path, "static", tiny_spec(policy={"name": "static", "every": 2}))
    tea = write(tmp_path, "tea", tiny_spec(policy={"name": "teacache", "thresh": 0.2,
                                                   "coefficients": "configs/calibrated/tiny-wan_teacache.json"}))
    tune = tmp_path / "tune.txt"
    tune.write_text("a cat walking on a fence\na city street at night\n")
    logs: list[str] = []
    first = run_match([static, tea], [Target("nfe", 0.5)], tune_file=tune, log=logs.append, tune_only=True)
    assert not (tmp_path / "results" / "runs").exists()
    assert any(line.startswith("static: tuning every") and "on 1 tuning video(s)" in line for line in logs)
    assert any(line.startswith("teacache: tuning thresh") and "on 2 tuning video(s)" in line for line in logs)
    assert any(line.startswith("  ") for line in logs)  # values measured
    kept = tmp_path / "kept.json"
    kept.write_bytes((tmp_path / "results" / "match" / "tuning.json").read_bytes())

    logs2: list[str] = []
    other = ["output.dir=" + str(tmp_path / "elsewhere")]
    again = run_match([static, tea], [Target("nfe", 0.5)], other, tune_file=tune, log=logs2.append, tuned=kept)
    assert not any(line.startswith("  ") for line in logs2)  # nothing measured: every value came from the file
    assert [p.search.value for p in again] == [p.search.value for p in first]
    records, _ = load_records(tmp_path / "elsewhere")
    assert len(records) == 4 and all(r["match"]["tuned_from"] == str(kept) for r in records)


def test_a_damaged_tuning_file_is_one_line(tiny_spec, tmp_path):
    static = write(tmp_path, "static", tiny_spec(policy={"name": "static", "every": 2}))
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    with pytest.raises(BenchError, match="--tuned .*bad.json: unreadable"):
        run_match([static], [Target("nfe", 0.5)], log=lambda s: None, tuned=bad)
    with pytest.raises(BenchError, match="no such file"):
        run_match([static], [Target("nfe", 0.5)], log=lambda s: None, tuned=tmp_path / "none.json")


def test_progress_counts_every_tuning_generation_and_evaluation_video(tiny_spec, tmp_path):
    tea = write(tmp_path, "tea", tiny_spec(policy={"name": "teacache", "thresh": 0.2,
                                                   "coefficients": "configs/calibrated/tiny-wan_teacache.json"}))
    tune = tmp_path / "tune.txt"
    tune.write_text("a cat walking on a fence\na city street at night\n")
    seen: list[tuple] = []
    logs: list[str] = []
    (point,) = run_match([tea], [Target("nfe", 0.5)], tune_file=tune, log=logs.append,
                         progress=lambda *a: seen.append(a))
    tuning = [s for s in seen if s[1] == "tuning"]
    values = sum(line.startswith("  thresh=") for line in logs)  # each value measured on the 2 tuning videos
    assert tuning[0] == ("teacache @ nfe 0.5", "tuning", 0, None)
    assert [s[2] for s in tuning[1:-1]] == list(range(1, 2 * values + 1)) and all(s[3] is None for s in tuning[1:-1])
    assert tuning[-1] == ("teacache @ nfe 0.5", "tuning", 2 * values, 2 * values)
    evaluation = [s for s in seen if s[1] == "evaluation"]
    assert [(s[2], s[3]) for s in evaluation] == [(0, 2), (1, 2), (2, 2)]  # the spec's two evaluation prompts
    assert len(point.records) == 2
