"""Spec files: the YAML read (size, encoding and syntax checked: one line per problem), ``--set`` overrides, and
pydantic's validation errors as one line per field (path, what was expected, what was found)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from .errors import SpecError


def _fmt_loc(prefix: str, loc: tuple) -> str:
    parts = [prefix] if prefix else []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        elif item in ("list[str]", "str", "PromptFileSpec", "function-after[_one_schedule()]"):
            continue  # union-branch and validator names are noise in a user's message
        else:
            parts.append(str(item))
    return ".".join(parts) or "(top level)"


def format_validation_error(err: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """One line per field: path, what was expected, what was found."""
    lines, seen = [], set()
    for e in err.errors():
        loc = _fmt_loc(prefix, e["loc"])
        if e["type"] == "extra_forbidden":
            valid = _valid_keys(model, e["loc"][:-1]) if model else []
            hint = f" (valid keys: {', '.join(valid)})" if valid else ""
            msg = f"{loc}: unknown key{hint}"
        elif e["type"] == "missing":
            msg = f"{loc}: required field is missing"
        else:
            found = e.get("input")
            found_s = "" if isinstance(found, dict) else f" (found {found!r})"
            msg = f"{loc}: {e['msg'].removeprefix('Value error, ')}{found_s}"
        if msg not in seen:
            seen.add(msg)
            lines.append(msg)
    return "\n".join(lines)


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for item in loc:
        field = model.model_fields.get(item) if isinstance(item, str) else None
        if field is None:
            return []
        ann = field.annotation
        candidates = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            return []
        model = candidates[0]
    return list(model.model_fields)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``--set a.b=value`` (value parsed as YAML) on a copy of the spec."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. --set sampling.steps=10")
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            if not isinstance(node.setdefault(p, {}), dict):
                raise SpecError(f"--set {key}: {p} is not a section")
            node = node[p]
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            problem = " ".join(str(getattr(err, "problem", None) or err).split())
            raise SpecError(f"--set {key}: {value!r} is not a YAML value ({problem}); quote a string") from None
    return data


MAX_SPEC_BYTES = 1 << 20  # a spec is a page of YAML; anything this big is not one (and YAML could balloon)


def read_yaml(path: Path) -> dict:
    """The spec file as a mapping, or one SpecError line: missing, a directory, unreadable, too big, not
    UTF-8 text, empty, not YAML, or YAML that is not a mapping."""
    if path.is_dir():
        raise SpecError(f"spec file {path} is a directory: give the path of a YAML spec inside it (see configs/)")
    if not path.is_file():
        raise SpecError(f"spec file {path} not found: give the path of a YAML spec (see configs/)")
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"spec file {path} is {size} bytes (most {MAX_SPEC_BYTES}): not a spec; "
                            f"give the path of a YAML spec (see configs/)")
        raw = path.read_bytes()
    except OSError as err:
        raise SpecError(f"spec file {path} cannot be read ({os.strerror(err.errno) if err.errno else err}): "
                        f"check its permissions") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text (byte {err.start}): save the spec as UTF-8 YAML") from None
    if not text.strip():
        raise SpecError(f"{path}: the file is empty; a spec needs at least model and prompts (see configs/)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to be a spec") from None
    if data is None:
        raise SpecError(f"{path}: holds no YAML values (only comments?); a spec needs at least model and prompts")
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping with sections model, prompts, ... (found {type(data).__name__})")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise SpecError(f"{path}: section names must be text (found {bad[0]!r})")
    return data
