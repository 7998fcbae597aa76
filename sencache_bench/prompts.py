"""Prompt sets: inline lists, or YAML files of prompts in named groups (static / neutral / dynamic).

File format (documented in the README)::

    name: vbench-mini
    source: where the prompts come from
    groups:
      static:  ["a quiet library", ...]
      dynamic: ["a red ball bouncing on grass", ...]

A ``.txt`` file is one prompt per line (``#`` starts a comment), all in group ``default``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import SpecError


@dataclass(frozen=True)
class Prompt:
    index: int
    text: str
    group: str = "default"


def _find(name: str, search: list[Path]) -> Path:
    p = Path(name)
    if p.is_absolute():
        if p.is_file():
            return p
    else:
        for base in search:
            for cand in (base / p, base / "prompts" / p):
                if cand.is_file():
                    return cand
    raise SpecError(f"prompts: file {name!r} not found (looked in {', '.join(str(b) for b in search)} "
                    f"and their prompts/ folders); give a path or an inline list")


def read_prompt_file(path: Path) -> list[tuple[str, str]]:
    """(text, group) pairs of a prompt file."""
    if path.suffix == ".txt":
        lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
        return [(ln, "default") for ln in lines if ln]
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"prompts: {path} is not valid YAML: {err}") from None
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, dict) or not groups:
        raise SpecError(f"prompts: {path} must have a 'groups' mapping of group name -> list of prompts")
    out = []
    for group, items in groups.items():
        if not isinstance(items, list) or not all(isinstance(t, str) and t.strip() for t in items):
            raise SpecError(f"prompts: {path}: group {group!r} must be a list of non-empty strings")
        out += [(t.strip(), str(group)) for t in items]
    return out


def load_prompts(spec, search: list[Path]) -> list[Prompt]:
    """Resolve the spec's ``prompts`` field (a path, an inline list, or {file, groups, limit})."""
    if isinstance(spec, list):
        if not spec:
            raise SpecError("prompts: the list is empty; give at least one prompt")
        for i, text in enumerate(spec):
            if not text.strip():
                raise SpecError(f"prompts[{i}]: empty prompt")
        return [Prompt(i, t.strip()) for i, t in enumerate(spec)]
    file, groups, limit = (spec, None, None) if isinstance(spec, str) else (spec.file, spec.groups, spec.limit)
    pairs = read_prompt_file(_find(file, search))
    if groups:
        known = sorted({g for _, g in pairs})
        unknown = [g for g in groups if g not in known]
        if unknown:
            raise SpecError(f"prompts.groups: unknown group {unknown[0]!r} in {file} (valid: {', '.join(known)})")
        pairs = [(t, g) for t, g in pairs if g in groups]
    if limit:
        pairs = pairs[:limit]
    if not pairs:
        raise SpecError(f"prompts: {file} holds no prompts")
    return [Prompt(i, t, g) for i, (t, g) in enumerate(pairs)]
