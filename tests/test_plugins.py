"""Plugins: the example package's policy through both discovery paths, sources, and one-line plugin problems.

The entry-point path needs no pip install: a ``<name>.dist-info/`` folder (METADATA + entry_points.txt) on
a subprocess's PYTHONPATH is what an installed distribution looks like to importlib.metadata.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sencache_bench.errors import BenchError, SpecError
from sencache_bench.models import MODELS
from sencache_bench.plugins import register_model, register_policy
from sencache_bench.policies import POLICIES
from sencache_bench.spec import resolve

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin"
SPEC = {"model": {"name": "tiny-wan"}, "sampling": {"steps": 4, "seeds": [0]}, "prompts": ["a red ball"],
        "policy": {"name": "latent-drift", "threshold": 0.5, "max_reuse": 2}, "metrics": ["psnr"]}


def cli(*args, paths=(), cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *map(str, paths)])}
    return subprocess.run([sys.executable, "-m", "sencache_bench", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=300)


def dist_info(folder: Path, name: str, entry_points: dict[str, dict[str, str]]) -> Path:
    """A minimal installed-distribution record: what pip would write, minus the files list."""
    info = folder / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for group, eps in entry_points.items()))
    return folder


def run_and_table(spec: dict, tmp_path: Path, paths=()) -> list[dict]:
    spec = {**spec, "output": {"dir": str(tmp_path / "results")}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = cli("run", str(path), "-q", paths=paths)
    assert out.returncode == 0, out.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").rglob("*.json")]
    assert [r["policy"] for r in records] == ["latent-drift"]
    table = cli("table", str(tmp_path / "results"), "-f", "csv", paths=paths)
    assert table.returncode == 0, table.stderr
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert [(r["policy"], r["setting"]) for r in rows] == [("latent-drift", "threshold=0.5,max_reuse=2")]
    return records


def test_example_policy_via_the_spec_plugins_key(tmp_path):
    records = run_and_table({**SPEC, "plugins": ["sencache_example_plugin"]}, tmp_path, paths=[EXAMPLE])
    rec = records[0]
    assert rec["spec"]["plugins"] == ["sencache_example_plugin"]
    cond = [c for c in rec["trace"] if c["branch"] == "cond"]
    assert cond[0]["computed"] and rec["nfe"] <= 4
    # the trace's scores are the rule's: a reuse had drift below the threshold
    assert all(c["score"] < 0.5 for c in cond if not c["computed"])


def test_example_policy_via_an_entry_point(tmp_path):
    site = dist_info(tmp_path / "site", "sencache-example-plugin",
                     {"sencache_bench.policies": {"latent-drift": "sencache_example_plugin:LatentDriftConfig"}})
    run_and_table(SPEC, tmp_path, paths=[site, EXAMPLE])
    listing = cli("policies", paths=[site, EXAMPLE])
    assert listing.returncode == 0, listing.stderr
    line = next(l for l in listing.stdout.splitlines() if "latent-drift" in l)
    assert "threshold=0.1" in line and "entry point 'latent-drift' of sencache-example-plugin 0.1.0" in line
    assert "│ built-in" in next(l for l in listing.stdout.splitlines() if l.startswith("│ static "))


def test_the_example_spec_file_finds_its_plugin_next_to_it(tmp_path):
    """examples/plugin/spec.yaml lists the module; the spec's own folder is searched, so no PYTHONPATH."""
    out = cli("run", str(EXAMPLE / "spec.yaml"), "-q", "--set", f"output.dir={tmp_path}", "--set",
              "sampling.steps=3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "runs").rglob("*.json"))) == 1


def test_broken_plugins_cost_one_line_each_and_the_rest_works(tmp_path):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "empty_plugin.py").write_text("x = 1\n")
    (mods / "raising_plugin.py").write_text("import no_such_dependency_xyz\n")
    site = dist_info(tmp_path / "site", "bad-plugins", {
        "sencache_bench.policies": {"clash": "sencache_example_plugin:LatentDriftConfig",
                                    "static": "sencache_example_plugin:LatentDriftConfig",
                                    "empty": "empty_plugin", "raising": "raising_plugin",
                                    "missing": "no_such_module_abc:Config"},
        "sencache_bench.models": {"raising": "raising_plugin"}})
    out = cli("policies", paths=[site, mods, EXAMPLE])
    assert out.returncode == 0, out.stderr
    warnings = [l for l in out.stderr.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 4, out.stderr
    text = "\n".join(warnings)
    assert ("plugin sencache_example_plugin:LatentDriftConfig (entry point 'static' of bad-plugins 0.1.0): "
            "policy 'static' is registered twice (already by built-in)") in text
    assert "plugin empty_plugin (entry point 'empty' of bad-plugins 0.1.0): registers nothing" in text
    assert ("plugin raising_plugin (entry point 'raising' of bad-plugins 0.1.0): import failed "
            "(ModuleNotFoundError: No module named 'no_such_dependency_xyz')") in text
    assert "'missing'" in text and "could not load no_such_module_abc:Config" in text  # lazy: found at use
    names = [l.split("│")[1].strip() for l in out.stdout.splitlines() if l.startswith("│")]
    assert "clash" in names and "sencache" in names and "missing" not in names
    models = cli("models", paths=[site, mods])
    assert models.returncode == 0 and "tiny-wan" in models.stdout
    assert "plugin raising_plugin (entry point 'raising' of bad-plugins 0.1.0): import failed" in models.stderr
    assert "Traceback" not in out.stderr + models.stderr


def test_spec_plugin_import_error_is_one_spec_error(tmp_path):
    spec = {**SPEC, "plugins": ["no_such_plugin_module"], "output": {"dir": str(tmp_path / "r")}}
    with pytest.raises(SpecError, match=r"^plugins\[0\]: plugin no_such_plugin_module \(spec plugins\[0\]\): "
                                        r"import failed \(ModuleNotFoundError"):
        resolve(spec)
    with pytest.raises(SpecError, match="plugins: expected a list of importable module names"):
        resolve({**spec, "plugins": "sencache_example_plugin"})


@pytest.fixture
def cleanup():
    added = []
    yield added
    for registry, name in added:
        registry.remove(name)


def test_register_policy_and_model_as_decorators(tmp_path, cleanup):
    from typing import Literal

    from sencache_bench.models.wan import TINY_WAN
    from sencache_bench.policies.static import StaticConfig

    @register_policy("every-third", aliases=("third",))
    class EveryThird(StaticConfig):
        name: Literal["every-third"] = "every-third"
        every: int = 3

    @register_model("tiny-wan-copy")
    def entry():
        return dataclasses.replace(TINY_WAN, name="tiny-wan-copy")

    cleanup += [(POLICIES, "every-third"), (MODELS, "tiny-wan-copy")]
    assert POLICIES.source("third") == f"module {__name__}" and MODELS.source("tiny-wan-copy") == f"module {__name__}"
    spec = resolve({**SPEC, "model": {"name": "tiny-wan-copy"}, "policy": {"name": "third"},
                    "output": {"dir": str(tmp_path)}})
    assert spec.model_name == "tiny-wan-copy" and isinstance(spec.policy, EveryThird) and spec.policy.every == 3
    with pytest.raises(BenchError, match=r"policy 'static' is registered twice \(already by built-in\)"):
        register_policy("static", EveryThird)
    with pytest.raises(BenchError, match="expected a PolicyConfig subclass"):
        register_policy("not-a-config", dict)
    with pytest.raises(BenchError, match="the entry is named 'tiny-wan'; use the same name"):
        register_model("other-name", TINY_WAN)


def test_spec_plugins_change_no_existing_hash(tmp_path):
    """Specs without plugins keep the hash (and record folders) they had before the key existed."""
    base = {**SPEC, "policy": {"name": "none"}, "output": {"dir": str(tmp_path)}}
    assert "plugins" not in resolve(base).raw
    assert resolve(base).hash == resolve({**base, "plugins": []}).hash


def test_a_module_an_entry_point_already_loaded_registers_its_names_without_a_warning(tmp_path):
    """A lazy entry point (``module:attr``) imports the module at first use; a later spec listing the same module in
    ``plugins:`` finds it imported already. Its names are the ones it registered then: no "registers nothing"
    warning (before: the second import ran nothing, so the spec's plugin looked empty). A module that really
    registers nothing still gets the line."""
    site = dist_info(tmp_path / "site", "sencache-example-plugin",
                     {"sencache_bench.policies": {"latent-drift": "sencache_example_plugin:LatentDriftConfig"}})
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "empty_plugin.py").write_text("x = 1\n")
    code = ("import sencache_bench as sb\n"
            "from sencache_bench.plugins import problems\n"
            "base = {'model': {'name': 'tiny-wan'}, 'prompts': ['a'], 'policy': {'name': 'latent-drift'}}\n"
            "first = sb.load_spec(base)\n"  # the entry point imports the module
            "second = sb.load_spec({**base, 'plugins': ['sencache_example_plugin']})\n"
            "print(type(first.policy).__name__, type(second.policy).__name__)\n"
            "import empty_plugin\n"
            "sb.load_spec({**base, 'plugins': ['empty_plugin']})\n"
            "print(problems())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [ROOT, site, EXAMPLE, mods]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "LatentDriftConfig LatentDriftConfig",
        "['plugin empty_plugin (spec plugins[0]): registers nothing (call sencache_bench.plugins.register_policy "
        "or register_model when the module is imported)']"]
    assert [line for line in out.stderr.splitlines() if line.startswith("warning:")] == [
        "warning: plugin empty_plugin (spec plugins[0]): registers nothing (call "
        "sencache_bench.plugins.register_policy or register_model when the module is imported)"]
