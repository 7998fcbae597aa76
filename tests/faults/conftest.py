"""Fault injection helpers: the CLI in-process (its real entry point, exit codes and stderr lines), the
table of a results folder without its latency columns, and an undisturbed run's table to compare with.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sencache_bench.cli.app import main
from sencache_bench.results.speedup import untimed_note

PROMPTS = ["a red ball bouncing on grass", "a quiet library", "a dog running on a beach"]
SPEC = {"model": {"name": "tiny-wan"}, "sampling": {"steps": 4}, "prompts": PROMPTS,
        "policy": {"name": "static", "every": 2}, "metrics": ["psnr", "ssim"], "output": {"save_videos": False}}
# machine-noisy: not part of the comparison. The note is compared without its timing parts (untimed_note): what
# is left says whether the uncached baselines reproduced the stored references, which a rerun must not change
# a row's speedup flagged as disturbed (results/speedup.py warnings): machine noise as well, left out of stderr
TIMING_WARNING = re.compile(r"\(timing disturbed: rerun with --force on a quiet machine")
TIMED = ("latency_s", "latency_ref_s", "speedup", "speedup_lo", "speedup_hi", "speedup_bound")


@dataclass
class Out:
    code: int
    err: list[str]  # stderr lines
    out: str


class Bench:
    def __init__(self, tmp_path: Path, capsys, cache: dict, cache_dir: Path):
        self.tmp, self.capsys, self.cache, self.cache_dir = tmp_path, capsys, cache, cache_dir

    def spec(self, name: str = "results", root: Path | None = None, **sections) -> Path:
        spec = copy.deepcopy(SPEC)
        spec.update(sections)
        root = root or self.tmp
        spec["output"] = {**spec["output"], "dir": str(root / name)}
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    def cli(self, *args: str) -> Out:
        """``sencache-bench ARGS`` through the installed entry point, in this process."""
        self.capsys.readouterr()
        old = sys.argv
        sys.argv = ["sencache-bench", *map(str, args)]
        code = 0
        try:
            main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        finally:
            sys.argv = old
        got = self.capsys.readouterr()
        return Out(code, [line for line in got.err.splitlines() if line.strip() and not TIMING_WARNING.search(line)],
                   got.out)

    @staticmethod
    def files(root: Path) -> list[str]:
        """Every file under ``root`` (relative), temporaries and hidden files included."""
        return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())

    def table(self, results: Path) -> list[dict]:
        out = self.cli("table", results, "-f", "json")
        assert out.code == 0, out.err
        return [{**{k: v for k, v in row.items() if k not in TIMED}, "note": untimed_note(row["note"])}
                for row in json.loads(out.out)]

    def undisturbed(self, *runs: tuple[str, ...], beside: dict[str, str] | None = None, **sections) -> list[dict]:
        """The table of the same runs (each: extra ``run`` arguments) in a fresh folder, nothing injected;
        ``beside``: files (name -> text) put beside the spec first."""
        key = json.dumps([runs, sections, beside], sort_keys=True)
        if key not in self.cache:
            root = self.cache_dir / f"u{len(self.cache)}"
            root.mkdir()
            for name, text in (beside or {}).items():
                (root / name).write_text(text)
            spec = self.spec("results", root=root, **sections)
            for extra in runs:
                out = self.cli("run", spec, "-q", *extra)
                assert out.code == 0, out.err
            self.cache[key] = self.table(root / "results")
        return self.cache[key]


_UNDISTURBED: dict = {}


@pytest.fixture
def bench(tmp_path, capsys, tmp_path_factory) -> Bench:
    return Bench(tmp_path, capsys, _UNDISTURBED, tmp_path_factory.getbasetemp())
