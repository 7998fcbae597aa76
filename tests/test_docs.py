"""The docs' commands against the real CLI (`tools/docs_check.py`; `make docs-check` also runs them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("docs_check", ROOT / "tools" / "docs_check.py")
docs_check = sys.modules["docs_check"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(docs_check)


def test_every_documented_command_parses(capsys):
    assert docs_check.main([]) == 0, capsys.readouterr().err


def test_a_wrong_option_or_missing_config_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\nsencache-bench table results/demo --layuot sencache\n"
                    "sencache-bench run configs/no_such.yaml\nmake no-such-target\n```\n"
                    "```yaml\n# sencache-bench run configs/tiny_wan.yaml\nmodel: {name: tiny-cogvideox}\n```\n")
    cmds = docs_check.commands(page)
    assert [c.argv[1] for c in cmds] == ["table", "run", "no-such-target"]
    problems = [docs_check.check(c) for c in cmds]
    assert "No such option: --layuot" in problems[0][0]
    assert problems[1] == ["no such file configs/no_such.yaml"]
    assert problems[2] == ["no Makefile target 'no-such-target'"]
    page.rename(ROOT / "docs" / "zz-docs-check-test.md")  # yaml check reports paths relative to the project
    try:
        assert "differs from configs/tiny_wan.yaml" in docs_check.check_yaml_blocks(ROOT / "docs" / "zz-docs-check-test.md")[0]
    finally:
        (ROOT / "docs" / "zz-docs-check-test.md").unlink()


def test_continuation_lines_join_and_comments_drop(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("```bash\nsencache-bench sweep configs/tiny_sencache.yaml \\\n    --set policy.eps_main=0.1  # c\n```\n")
    (cmd,) = docs_check.commands(page)
    assert cmd.argv == ["sencache-bench", "sweep", "configs/tiny_sencache.yaml", "--set", "policy.eps_main=0.1"]
