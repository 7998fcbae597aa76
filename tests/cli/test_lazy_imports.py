"""`sencache-bench --help` stays fast: the CLI imports torch and diffusers only in the commands that need them."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_app_imports_no_torch():
    code = ("import sys; import sencache_bench.cli.app; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
