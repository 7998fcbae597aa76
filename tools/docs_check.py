"""Check every command the docs show: `python tools/docs_check.py [--run] [FILES...]`.

Reads the ```bash blocks of README.md and docs/*.md. Every `sencache-bench` command (also as `python -m
sencache_bench`, under `torchrun` or `srun`) is parsed by the real CLI (click's own option parsing, nothing
invoked): an option or command the CLI does not have fails the check. `make TARGET` must name a Makefile target,
`python SCRIPT.py` an existing script, and a `configs/...` path an existing file. A ```yaml block whose first line
is `# sencache-bench run PATH` must equal that config file.

With `--run` the commands that can run here also run, in order, in one scratch folder per page (configs/, prompts/
and baselines/ linked in): those on tiny configs or on results the page made before, `models`, `policies` and
`flops`. Commands that need weights, a GPU, the VBench environment, several processes or placeholders
(`SPEC.yaml`, `RESULTS_DIR`, `<hash>`) are parsed only, and the summary says so.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"(^|[/=])[A-Z][A-Z_]{2,}(\.[a-z]+)?$|<[^>]+>|\.\.\.|^DIR$")
CHEAP = {"models", "policies", "flops", "table", "plot", "compare", "score"}
RUNS = {"run", "sweep", "match", "calibrate", "check-policy"}


@dataclass
class Command:
    page: Path
    line: int
    text: str
    argv: list[str]


def blocks(page: Path, lang: str) -> list[tuple[int, list[str]]]:
    """The fenced blocks of one language: (line of the first content line, lines)."""
    out, current, start = [], None, 0
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if current is None and line.strip() == f"```{lang}":
            current, start = [], number + 1
        elif current is not None and line.strip() == "```":
            out.append((start, current))
            current = None
        elif current is not None:
            current.append(line)
    return out


def commands(page: Path) -> list[Command]:
    out = []
    for start, lines in blocks(page, "bash"):
        joined, first = "", start
        for offset, line in enumerate(lines):
            if not joined:
                first = start + offset
            joined += line.rstrip().removesuffix("\\") + " " if line.rstrip().endswith("\\") else line
            if line.rstrip().endswith("\\"):
                continue
            argv = shlex.split(joined, comments=True)
            if argv:
                out.append(Command(page, first, shlex.join(argv), argv))
            joined = ""
    return out


def cli_args(argv: list[str]) -> list[str] | None:
    """The arguments after the program when the line runs sencache-bench (directly, via python -m, torchrun
    or srun); None otherwise."""
    for i, word in enumerate(argv):
        if word.endswith("sencache-bench"):
            return argv[i + 1:]
        if word == "-m" and i + 1 < len(argv) and argv[i + 1] == "sencache_bench":
            return argv[i + 2:]
    return None


def parse_cli(args: list[str]) -> str | None:
    """Parse ``args`` with the real CLI without running anything; the problem, or None."""
    import typer

    from sencache_bench.cli.app import app

    group = typer.main.get_command(app)
    ctx = group.make_context("sencache-bench", list(args), resilient_parsing=False)
    try:
        protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
        name, cmd, rest = group.resolve_command(ctx, [*protected, *ctx.args])
        cmd.make_context(name, rest, parent=ctx)
    except Exception as err:  # typer vendors click: its UsageError family has format_message, Exit does not
        return err.format_message() if hasattr(err, "format_message") else None
    return None


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))


def check(cmd: Command) -> list[str]:
    """Static checks of one command: what is wrong with it (empty when nothing)."""
    problems = []
    args = cli_args(cmd.argv)
    for word in cmd.argv:
        value = word.split("=", 1)[-1]
        if value.startswith("configs/") and not PLACEHOLDER.search(value) and not (ROOT / value).exists():
            problems.append(f"no such file {value}")
    if args is not None:
        if (problem := parse_cli(args)) is not None:
            problems.append(problem)
    elif cmd.argv[0] == "make":
        problems += [f"no Makefile target {t!r}" for t in cmd.argv[1:] if "=" not in t and t not in makefile_targets()]
    elif cmd.argv[0].endswith("python") and len(cmd.argv) > 1 and cmd.argv[1].endswith(".py"):
        if not (ROOT / cmd.argv[1]).is_file():
            problems.append(f"no such script {cmd.argv[1]}")
    else:
        problems.append(f"unknown program {cmd.argv[0]!r}: teach tools/docs_check.py about it")
    return problems


def why_not_run(cmd: Command, made: set[str]) -> str | None:
    """Why ``--run`` leaves the command parsed only; None when it runs."""
    args = cli_args(cmd.argv)
    if args is None:
        return "not a sencache-bench command"
    if cmd.argv[0] in {"torchrun", "srun"}:
        return "several processes"
    if any(PLACEHOLDER.search(a) for a in args):
        return "placeholders"
    name = args[0] if args else ""
    missing = [a for a in args if a.endswith(".yaml") and not (ROOT / a).is_file()]
    if missing:
        return f"needs {missing[0]}"
    if name in RUNS:
        spec = next((a for a in args[1:] if a.endswith(".yaml")), "")
        return None if Path(spec).name.startswith("tiny_") else "a full-size or bench-t2v job"
    if name in CHEAP:
        folder = next((a for a in args[1:] if a.startswith("results/")), None)
        return None if folder is None or folder.split("/")[:2] == folder.split("/")[:2] and _made(folder, made) \
            else f"needs {folder} from elsewhere"
    return f"`{name}` is not run here"


def _made(folder: str, made: set[str]) -> bool:
    return any(folder == m or folder.startswith(m + "/") for m in made)


def outputs(args: list[str]) -> set[str]:
    """The results folders a run writes: its --set output.dir, else the spec's own."""
    for i, a in enumerate(args):
        if a == "--set" and args[i + 1].startswith("output.dir="):
            return {args[i + 1].split("=", 1)[1]}
    spec = next((a for a in args if a.endswith(".yaml") and (ROOT / a).is_file()), None)
    if spec:
        data = yaml.safe_load((ROOT / spec).read_text()) or {}
        if isinstance(data.get("output"), dict) and "dir" in data["output"]:
            return {data["output"]["dir"]}
    return set()


def check_yaml_blocks(page: Path) -> list[str]:
    problems = []
    for start, lines in blocks(page, "yaml"):
        m = re.match(r"#\s*sencache-bench run (\S+)", lines[0]) if lines else None
        if m:
            shown, shipped = yaml.safe_load("\n".join(lines)), yaml.safe_load((ROOT / m.group(1)).read_text())
            if shown != shipped:
                problems.append(f"{page.relative_to(ROOT)}:{start}: the spec shown differs from {m.group(1)}")
    return problems


def run_page(cmds: list[Command], timeout: int) -> tuple[list[str], list[str]]:
    """Run what can run, in order, in a scratch folder; (failures, skipped notes)."""
    failures, skipped, made = [], [], set()
    with tempfile.TemporaryDirectory(prefix="docs-check-") as tmp:
        for name in ("configs", "prompts", "baselines"):
            (Path(tmp) / name).symlink_to(ROOT / name)
        for cmd in cmds:
            reason = why_not_run(cmd, made)
            where = f"{cmd.page.relative_to(ROOT)}:{cmd.line}"
            if reason:
                skipped.append(f"{where}: parsed only ({reason}): {cmd.text}")
                continue
            args = cli_args(cmd.argv)
            proc = subprocess.run([sys.executable, "-m", "sencache_bench", *args], cwd=tmp, capture_output=True,
                                  text=True, timeout=timeout)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
                failures.append(f"{where}: exit {proc.returncode}: {cmd.text}: {tail[0]}")
            else:
                print(f"ran {where}: {cmd.text}", flush=True)
            made |= outputs(args)
    return failures, skipped


def pages(names: list[str]) -> list[Path]:
    if names:
        return [Path(n).resolve() for n in names]
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*")
    parser.add_argument("--run", action="store_true", help="also run the commands that can run here")
    parser.add_argument("--timeout", type=int, default=600)
    opts = parser.parse_args(argv)
    failures, skipped, count = [], [], 0
    for page in pages(opts.files):
        cmds = commands(page)
        count += len(cmds)
        failures += check_yaml_blocks(page)
        for cmd in cmds:
            failures += [f"{cmd.page.relative_to(ROOT)}:{cmd.line}: {p}: {cmd.text}" for p in check(cmd)]
        if opts.run:
            f, s = run_page(cmds, opts.timeout)
            failures += f
            skipped += s
    for line in skipped:
        print(line)
    for line in failures:
        print(f"FAIL {line}", file=sys.stderr)
    print(f"{count} commands checked, {len(failures)} failing" + (f", {len(skipped)} parsed only" if opts.run else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
