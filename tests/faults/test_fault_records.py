"""An unreadable run record: `table` names it and how to repair it, the next run redoes it."""

from __future__ import annotations

import json

import pytest

from sencache_bench.runner import Runner
from sencache_bench.spec import load_spec


@pytest.mark.parametrize("fault", ["truncated", "incomplete"])
def test_unreadable_record_is_reported_and_redone(bench, fault):
    spec = bench.spec()
    assert bench.cli("run", spec, "-q").code == 0
    runner = Runner(load_spec(spec))
    record = runner.record_path(*runner.items()[1])
    if fault == "truncated":
        record.write_bytes(record.read_bytes()[:100])
        why = "unreadable (JSONDecodeError)"
    else:  # valid JSON, but not a finished record (a hand edit, another tool)
        rec = json.loads(record.read_text())
        del rec["metrics"], rec["flops"]
        record.write_text(json.dumps(rec))
        why = "incomplete (no flops, metrics)"

    out = bench.cli("table", bench.tmp / "results", "-f", "json")
    assert out.code == 0
    assert out.err == [f"warning: {record}: {why}, skipped; rerun its spec to redo it"]
    assert [row["videos"] for row in json.loads(out.out)] == [2]  # the other two videos are still tabulated

    out = bench.cli("run", spec, "-q")
    assert out.code == 0 and out.err == []
    assert json.loads(record.read_text())["metrics"]["psnr"] > 0
    assert bench.table(bench.tmp / "results") == bench.undisturbed(())
