"""The CLI as a user runs it: exit codes, one-line errors, nothing written on bad input, every output
format parsed. In-process (Typer's CliRunner, or the entry point ``main``) so each call does not pay the
torch import again; one test launches the real ``python -m sencache_bench`` process."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from sencache_bench.cli.app import app

DOCUMENTED = {"run", "table", "calibrate", "flops", "compare", "sweep", "score", "plot", "vbench",
              "train-bench-model", "models", "policies"}  # the README's command table


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _help_commands(text: str) -> set[str]:
    """Command names of the help's "Commands" panel: the first word of each of its rows."""
    panel = text[text.index("Commands"):]
    names = set()
    for line in panel.splitlines()[1:]:
        m = re.match(r"^[│|]\s+([a-z][a-z0-9-]*)\s", line)
        if m:
            names.add(m[1])
    return names


def test_help_lists_every_command():
    out = cli("--help")
    assert out.exit_code == 0
    registered = {c.name for c in app.registered_commands}
    assert DOCUMENTED <= registered
    assert _help_commands(out.stdout) == registered
    for name in registered:  # and each command's own help works
        assert cli(name, "--help").exit_code == 0, name


def _markdown(text):
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    assert set("".join(rows[1])) <= set("-: ")  # the separator row
    return [dict(zip(rows[0], r)) for r in rows[2:]]


def _latex(text):
    body = text[text.index("\\midrule") + len("\\midrule"):text.index("\\bottomrule")]
    head = text[text.index("\\toprule") + len("\\toprule"):text.index("\\midrule")]
    split = lambda ln: [c.strip().replace("\\_", "_") for c in ln.strip().removesuffix("\\\\").split(" & ")]  # noqa: E731
    headers = split(head.strip())
    return [dict(zip(headers, split(ln))) for ln in body.strip().splitlines() if ln.strip() != "\\midrule"]


def test_run_then_table_in_every_format(tiny_spec, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec()))
    out = cli("run", spec)
    assert out.exit_code == 0, out.output
    assert "tiny-wan" in out.stdout and "100.00" in out.stdout  # the table: none is identical (PSNR cap)
    out = cli("run", spec)
    assert out.exit_code == 0 and "2 of 2 videos already have records" in out.stderr
    results = tmp_path / "results"
    rows = list(csv.DictReader(io.StringIO(cli("table", results, "--format", "csv").stdout)))
    assert len(rows) == 1 and rows[0]["policy"] == "none" and rows[0]["nfe"] == "6.0" and float(rows[0]["ssim"]) == 1.0  # csv: plain numbers
    # csv has plain numbers; markdown and LaTeX print them and fold the speedup interval into its cell
    speedup, lo, hi = (float(rows[0][k]) for k in ("speedup", "speedup_lo", "speedup_hi"))
    expected = {"model": "tiny-wan", "policy": "none", "setting": "default", "videos": "2", "nfe": "6.0",
                "nfe_ref": "6.0", "ssim": "1.0000", "psnr": "100.00", "speedup": f"{speedup:.2f}x [{lo:.2f}, {hi:.2f}]"}
    for fmt, parse in (("markdown", _markdown), ("latex", _latex)):
        parsed = parse(cli("table", results, "-f", fmt).stdout)
        assert len(parsed) == 1 and {k: parsed[0][k] for k in expected} == expected, fmt
        for key, cell in parsed[0].items():  # every printed number is the csv's, rounded as shown
            plain = rows[0][key]
            if key in expected or key == "note" or not plain or not cell:
                continue
            shown = cell.rstrip("x")
            digits = len(shown.split(".")[1]) if "." in shown else 0
            assert float(shown) == pytest.approx(float(plain), abs=0.51 * 10 ** -digits, rel=5e-4), (fmt, key)
    data = json.loads(cli("table", results, "-f", "json").stdout)
    assert len(data) == 1 and list(data[0]) == list(rows[0])  # json and csv: the same plain columns
    assert data[0]["nfe"] == 6.0 and data[0]["videos"] == 2 and data[0]["psnr"] == 100.0 and data[0]["ssim"] == 1.0
    assert data[0]["pflops"] == data[0]["pflops_ref"] > 0


def test_bad_spec_one_line_exit_2_nothing_written(tiny_spec, tmp_path):
    """The installed entry point in its own process: exit codes and stderr exactly as a shell sees them."""
    bad = tiny_spec(sampling={"steps": 6, "height": 40})
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(bad))
    code = ("import sys; from sencache_bench.cli.app import main\n"
            "for args in sys.argv[1:]:\n"
            "    sys.argv = ['sencache-bench', *args.split('|')]\n"
            "    try: main()\n"
            "    except SystemExit as e: print('exit', e.code, file=sys.stderr)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    calls = [f"run|{spec}", f"run|{tmp_path / 'nope.yaml'}", f"table|{tmp_path / 'empty'}"]
    out = subprocess.run([sys.executable, "-c", code, *calls], capture_output=True, text=True, env=env, timeout=300)
    assert out.stderr.strip().splitlines() == [
        "error: sampling.height: must be a multiple of 16 for wan, got 40 (nearest: 32)", "exit 2",
        f"error: spec file {tmp_path / 'nope.yaml'} not found: give the path of a YAML spec (see configs/)", "exit 2",
        f"error: results directory {tmp_path / 'empty'} not found: run `sencache-bench run SPEC.yaml` first", "exit 1"]
    assert not (tmp_path / "results").exists()
    entry = subprocess.run([sys.executable, "-m", "sencache_bench", "--version"], capture_output=True, text=True,
                           env=env, timeout=300)
    assert entry.returncode == 0 and entry.stdout.startswith("sencache-bench ")


REUSE_FIRST_PLUGIN = '''
from typing import Literal

from sencache_bench.plugins import register_policy
from sencache_bench.policy import CachePolicy, Decision, PolicyConfig


class ReuseFirst(CachePolicy):
    name = "reuse-first"
    reuse = "output"

    def decide(self, state, call):
        return Decision(compute=call.index > 0)


@register_policy("reuse-first")
class ReuseFirstConfig(PolicyConfig):
    name: Literal["reuse-first"] = "reuse-first"

    def make_policy(self):
        return ReuseFirst()
'''


def test_a_policy_reusing_before_computing_ends_run_with_one_line(tiny_spec, tmp_path):
    """A broken plugin policy (reuses call 0) stops `run` with the framework's one line and exit 1, no traceback:
    before, output reuse handed None to the scheduler and the user got a TypeError from deep in diffusers."""
    (tmp_path / "reuse_first_plugin.py").write_text(REUSE_FIRST_PLUGIN)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**tiny_spec(sampling={"steps": 2, "seeds": [0]}, prompts=["a red ball"],
                                                 policy={"name": "reuse-first"}),
                                    "plugins": ["reuse_first_plugin"]}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250", "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "sencache_bench", "run", str(spec), "-q"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "error: policy 'reuse-first' reused call 0 of branch 'cond' before any call was computed: a policy must "
        "compute the first call of each branch")


RAISING_PLUGIN = '''
from typing import Literal

from sencache_bench.plugins import register_policy
from sencache_bench.policy import CachePolicy, Decision, PolicyConfig


class Boom(CachePolicy):
    name = "{name}"

    def decide(self, state, call):
        if call.index == 1:
            raise ValueError(f"boom at step {{call.index}}")
        return Decision(compute=True)


@register_policy("{name}")
class BoomConfig(PolicyConfig):
    name: Literal["{name}"] = "{name}"

    def make_policy(self):
        return Boom()
'''


def _raising_plugin(folder, name: str) -> str:
    """A plugin module ``<name>_plugin.py`` in ``folder`` whose policy raises ValueError in decide() at step 1;
    the expected ``(file:line)`` of that raise, counted in the source text."""
    source = RAISING_PLUGIN.format(name=name)
    (folder / f"{name.replace('-', '_')}_plugin.py").write_text(source)
    line = 1 + source.splitlines().index('            raise ValueError(f"boom at step {call.index}")')
    return f"{name.replace('-', '_')}_plugin.py:{line}"


def test_a_policy_raising_in_decide_ends_run_with_one_line_naming_the_call_and_line(tiny_spec, tmp_path):
    """Before: an 86-line traceback through diffusers. Now one line: the policy, the call (branch, step), the
    file:line of the policy's own raise and its message; exit 1."""
    where = _raising_plugin(tmp_path, "boom-run")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**tiny_spec(sampling={"steps": 3, "seeds": [0]}, prompts=["a red ball"],
                                                 policy={"name": "boom-run"}), "plugins": ["boom_run_plugin"]}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}
    out = subprocess.run([sys.executable, "-m", "sencache_bench", "run", str(spec), "-q"], capture_output=True,
                         text=True, env=env, timeout=300, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error: policy 'boom-run' raised ValueError in decide() at step 1 of branch 'cond' ({where}): boom at "
        f"step 1"]


def test_check_policy_imports_a_plugin_from_the_working_directory_and_names_the_raise(tmp_path, monkeypatch):
    """`check-policy NAME --plugin MODULE` as docs/writing-a-policy.md shows it, from the plugin's folder. The
    console script's sys.path holds its bin/ folder, not the working directory, so here neither is on it (the
    module was not importable before). The checks that generate then fail on one line with the file:line."""
    from sencache_bench.policies import POLICIES

    where = _raising_plugin(tmp_path, "boom-check")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    try:
        out = cli("check-policy", "boom-check", "--plugin", "boom_check_plugin", "--steps", "2")
    finally:
        POLICIES.remove("boom-check")
        sys.modules.pop("boom_check_plugin", None)
    assert not isinstance(out.exception, Exception), repr(out.exception)  # before: plugins[0]: import failed
    assert out.exit_code == 1, out.output
    lines = out.output.strip().splitlines()
    assert lines[0] == "boom-check on tiny-wan:"
    line = (f"policy 'boom-check' raised ValueError in decide() at step 1 of branch 'cond' ({where}): boom at "
            f"step 1")
    assert lines[1] == f"  FAIL never-reuse reproduces the reference bit for bit: raised PolicyError: {line}"
    assert lines[2] == "  FAIL the first call of every branch computes: the same error as above"  # named once
    assert lines[-2] == "  SKIP the knob is monotone: no knob declared (PolicyConfig.knob): match refuses this policy"
    assert lines[-1] == "  SKIP a fixed schedule is fixed: not declared (its calls may depend on the inputs)"


def test_policies_lists_each_built_in_with_its_method_source():
    from sencache_bench.policies import METHODS, POLICIES

    assert sorted(METHODS) == sorted(n for n in POLICIES if POLICIES.source(n) == "built-in")
    out = CliRunner().invoke(app, ["policies"], terminal_width=400)
    assert out.exit_code == 0, out.output
    for name in ("easycache", "seacache", "dicache", "dpcache", "adacache"):
        line = next(x for x in out.stdout.splitlines() if f" {name} " in x)
        assert METHODS[name].split(" (")[0] in line
    assert "EasyCache (arXiv 2507.02860" in out.stdout
