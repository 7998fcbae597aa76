"""The CLI as a user runs it: a subprocess, exit codes, one-line errors, nothing written on bad input."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import yaml

CLI = [sys.executable, "-m", "sencache_bench"]


def cli(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_help_lists_every_command():
    out = cli("--help")
    assert out.returncode == 0
    for command in ("run", "table", "flops", "models", "policies"):
        assert f" {command} " in out.stdout


def test_run_then_table(tiny_spec, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec()))
    out = cli("run", str(spec))
    assert out.returncode == 0, out.stderr
    assert "tiny-wan" in out.stdout and "100.00" in out.stdout  # the table: none is identical (PSNR cap)
    out = cli("run", str(spec))
    assert out.returncode == 0 and "2 of 2 videos already have records" in out.stderr
    table = cli("table", str(tmp_path / "results"), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert len(rows) == 1 and rows[0]["policy"] == "none" and rows[0]["nfe"] == "6.0" and rows[0]["ssim"] == "1.0000"
    for fmt in ("markdown", "latex", "json"):
        assert cli("table", str(tmp_path / "results"), "-f", fmt).returncode == 0


def test_bad_spec_one_line_exit_2_nothing_written(tiny_spec, tmp_path):
    bad = tiny_spec(sampling={"steps": 6, "height": 40})
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(bad))
    out = cli("run", str(spec))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: sampling.height: must be a multiple of 16 for wan, got 40 (nearest: 32)"]
    assert "Traceback" not in out.stderr and not (tmp_path / "results").exists()
    missing = cli("run", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "not found" in missing.stderr and "Traceback" not in missing.stderr
    empty = cli("table", str(tmp_path / "empty"))
    assert empty.returncode == 1 and "not found" in empty.stderr
