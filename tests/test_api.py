"""The Python API: run / load_results / table / flops against the CLI and hand-computed values; docs/api.md runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import sencache_bench as sb
from sencache_bench import api

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "sencache_bench", *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "results"
    spec = {"model": {"name": "tiny-wan"}, "sampling": {"steps": 4, "seeds": [0, 1]}, "prompts": ["a red ball"],
            "policy": {"name": "static", "every": 2}, "metrics": ["psnr", "ssim"], "output": {"dir": str(out)}}
    first = api.run(spec)
    again = api.run(json.dumps(spec))  # JSON is a YAML string: same spec, records kept (resumed, not recomputed)
    other = api.run(spec, overrides={"policy.every": 3, "sampling.seeds": [0]})
    return out, first, again, other


def test_root_reexports_the_api_lazily():
    assert sb.run is api.run and sb.table is api.table and sb.load_results is api.load_results
    code = "import sys, sencache_bench; print(sorted(m for m in ('torch', 'pandas', 'diffusers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert out.strip() == "[]"


def test_run_returns_the_records_of_every_item(results):
    out, first, again, other = results
    assert [(r["policy"], r["seed"]) for r in first] == [("static", 0), ("static", 1)]
    # static every=2 on 4 steps computes steps 0 and 2 of each branch; every=3 computes 0 and 3
    assert [r["nfe_per_branch"] for r in first] == [{"cond": 2, "uncond": 2}] * 2
    assert [c["computed"] for c in other[0]["trace"] if c["branch"] == "cond"] == [True, False, False, True]
    assert [r["created"] for r in again] == [r["created"] for r in first]
    assert all(Path(r["_path"]).is_file() for r in first + other)


def test_load_results_is_one_row_per_record(results):
    out, first, _, other = results
    df = sb.load_results(out)
    assert len(df) == 3
    by_key = {(r["setting"], r["seed"]): r for r in first + other}
    for _, row in df.iterrows():
        rec = by_key[(row["setting"], row["seed"])]
        assert row["metrics.psnr"] == rec["metrics"]["psnr"] and row["flops.total"] == rec["flops"]["total"]
        assert row["nfe_per_branch.cond"] == rec["nfe_per_branch"]["cond"] and row["trace"] == rec["trace"]


def test_table_rows_and_the_cli_rendering(results):
    out, first, _, other = results
    rows = sb.table(out)
    assert [(r["setting"], r["videos"]) for r in rows] == [("every=2,reuse=residual", 2), ("every=3,reuse=residual", 1)]
    assert rows[0]["psnr"] == pytest.approx((first[0]["metrics"]["psnr"] + first[1]["metrics"]["psnr"]) / 2)
    assert rows[0]["nfe"] == 2 and rows[1]["nfe"] == 2
    assert sb.table(out, format="csv") == _cli("table", str(out), "-f", "csv").stdout
    paper = sb.table(out, layout="sencache")
    # SenCache's Table 1 layout: the uncached row first, then one row per setting
    assert [r["method"] for r in paper] == ["Uncached", "static (every=2)", "static (every=3)"]
    assert [r["nfe"] for r in paper] == [4.0, 2.0, 2.0] and all("best" in r for r in paper)


def test_flops_matches_the_cli_and_its_own_sum():
    f = sb.flops("wan2.1-t2v-1.3b", height=480, width=832, frames=81, steps=10, nfe=4)
    cli = json.loads(_cli("flops", "--model", "wan2.1-t2v-1.3b", "--height", "480", "--width", "832", "--frames",
                          "81", "--steps", "10", "--nfe", "4", "--format", "json").stdout)
    f.pop("seconds"), cli.pop("seconds")
    assert f == cli
    assert f["calls"] == 20 and f["transformer_loop"]["flops"] == 20 * f["transformer_call"]["flops"]
    # the cached run: 4 of 10 calls per branch, text encoder and VAE unchanged
    cached = f["total"]["flops"] - 12 * f["transformer_call"]["flops"]
    assert f["policy"]["total"]["flops"] == cached
    assert f["policy"]["reduction"] == pytest.approx(1 - cached / f["total"]["flops"])


def test_errors_are_one_line_bench_errors(tmp_path):
    from sencache_bench.errors import BenchError, SpecError

    with pytest.raises(SpecError, match="expected a path, a YAML mapping or a dict"):
        api.load_spec("- just\n- a list\n")
    with pytest.raises(SpecError, match="not found"):
        api.load_spec(tmp_path / "missing.yaml")
    with pytest.raises(BenchError, match="not found: run `sencache-bench run SPEC.yaml` first"):
        sb.load_results(tmp_path / "nothing")
    with pytest.raises(BenchError, match="give either a model name or a spec"):
        sb.flops()


def test_the_notebook_in_docs_api_md_runs(tmp_path, monkeypatch):
    """Every python block of docs/api.md, in order, in one namespace, in a fresh folder."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), flags=re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)  # noqa: S102 - the documentation's own code
    df = namespace["df"]
    assert sorted(df["policy"]) == ["none", "static", "static"] and (tmp_path / "results" / "api-demo").is_dir()
    assert sorted(df["nfe"]) == [1, 2, 4]  # every=4: step 0 only; every=2: 0 and 2; none: all 4


def test_match_returns_the_matched_records(tiny_spec, tmp_path):
    """static tuned to half of tiny-wan's 6 steps: every = 2 gives exactly 3 computed calls per branch. The spec
    and the overrides are dicts, as ``run`` takes them (before: ``Path(dict)``, a TypeError)."""
    spec = tiny_spec(policy={"name": "static", "every": 3}, prompts=["a quiet library"])
    tune = tmp_path / "tune.txt"
    tune.write_text("a cat walking on a fence\n")
    records = sb.match([spec], nfe=[0.5], overrides={"sampling.seeds": [1]}, tune_file=tune, log=lambda s: None)
    assert len(records) == 1
    rec = records[0]
    assert rec["match"]["knob"] == "every" and rec["match"]["value"] == 2 and rec["nfe"] == 3
    assert rec["match"]["target_nfe"] == 3.0
    assert rec["seed"] == 1 and rec["match"]["tune_prompts"]["seeds"] == [1]  # the dict override, a list kept


def test_match_twice_in_one_process(tmp_path):
    """``sencache_bench.match`` stays the API function after a first call (before: the first call imported the
    submodule ``sencache_bench.match``, which then shadowed it: "'module' object is not callable")."""
    from sencache_bench.errors import SpecError

    for _ in range(2):
        assert callable(sb.match)
        with pytest.raises(SpecError, match="not found"):
            sb.match([tmp_path / "missing.yaml"], nfe=[0.5])
    # no submodule may take the name of an API function of the package's lazy re-export
    package = ROOT / "sencache_bench"
    assert [n for n in sb._API if (package / f"{n}.py").exists() or (package / n).is_dir()] == []
