"""Spec files as a user may hand them over: every bad one is exit 2 with error lines, never a traceback.

The property test mutates valid specs (types, keys, values, nesting, encodings) and asserts for
every case: a SpecError whose every line is a sentence (no traceback, nothing written), or a spec
that validates.
"""

from __future__ import annotations

import copy
import os
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sencache_bench.cli.app import main
from sencache_bench.errors import SpecError
from sencache_bench.spec import ResolvedSpec, load_spec
from sencache_bench.spec_files import MAX_SPEC_BYTES


def run_main(args, capsys) -> tuple[int, list[str]]:
    """The installed entry point in-process: (exit code, stderr lines)."""
    old = sys.argv
    sys.argv = ["sencache-bench", *args]
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:
        sys.argv = old
    return exit_.value.code, capsys.readouterr().err.strip().splitlines()


def _bad_files(tmp_path, valid):
    yield "directory", tmp_path / "a_dir", "spec file {p} is a directory: give the path of a YAML spec inside it (see configs/)"
    (tmp_path / "a_dir").mkdir()
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("model: {name: tiny-wan}\nprompts: [\"caf\xe9\"]\n".encode("latin-1"))
    yield "not UTF-8", latin, "{p}: not UTF-8 text (byte 38): save the spec as UTF-8 YAML"
    empty = tmp_path / "empty.yaml"
    empty.write_text("   \n")
    yield "empty", empty, "{p}: the file is empty; a spec needs at least model and prompts (see configs/)"
    comments = tmp_path / "comments.yaml"
    comments.write_text("# nothing but a comment\n")
    yield "comments only", comments, ("{p}: holds no YAML values (only comments?); a spec needs at least model "
                                      "and prompts")
    listy = tmp_path / "list.yaml"
    listy.write_text("- model\n- prompts\n")
    yield "not a mapping", listy, "{p}: expected a mapping with sections model, prompts, ... (found list)"
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"#" * (MAX_SPEC_BYTES + 1))
    yield "huge", huge, (f"spec file {{p}} is {MAX_SPEC_BYTES + 1} bytes (most {MAX_SPEC_BYTES}): not a spec; "
                         "give the path of a YAML spec (see configs/)")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: {name: tiny-wan\n")
    yield "bad YAML", bad_yaml, None
    if os.geteuid() != 0:  # root reads any file
        locked = tmp_path / "locked.yaml"
        locked.write_text(yaml.safe_dump(valid))
        locked.chmod(0)
        yield "unreadable", locked, "spec file {p} cannot be read (Permission denied): check its permissions"


def test_every_bad_spec_file_is_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, tiny_spec):
    monkeypatch.chdir(tmp_path)
    cases = list(_bad_files(tmp_path, tiny_spec()))
    before = set(tmp_path.rglob("*"))
    assert len(cases) >= 7
    for what, path, line in cases:
        code, err = run_main(["run", str(path)], capsys)
        assert code == 2, what
        assert len(err) == 1 and err[0].startswith("error: "), (what, err)
        if line is not None:
            assert err[0] == "error: " + line.format(p=path), what
        else:
            assert err[0].startswith(f"error: {path}: not valid YAML at line 2, column 1: "), err
    assert set(tmp_path.rglob("*")) == before, "nothing written"


# -- the property test ------------------------------------------------------------------------------
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.binary(max_size=6).map(lambda b: b.decode("latin-1")))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
KEYS = st.sampled_from(["model", "sampling", "prompts", "policy", "metrics", "output", "vbench", "extra",
                        "name", "steps", "seeds", "dir", "every", "file", "groups", "limit", "dtype", "device",
                        "shift", "eps_main", "profile", "coefficients", "ratios", "thresh"])


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _get(node, path):
    for p in path:
        node = node[p]
    return node


@st.composite
def mutated_spec(draw, base):
    """A valid spec (the issue's, with one of the bundled policies) after 1-3 random edits."""
    spec = copy.deepcopy(base)
    spec["policy"] = draw(st.sampled_from([{"name": "none"}, {"name": "static", "every": 2},
                                           {"name": "sencache", "eps_main": 0.1, "profile": "missing.json"},
                                           {"name": "teacache", "coefficients": [1, 0, 0, 0, 0], "thresh": 0.1},
                                           {"name": "magcache"}]))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(spec)]
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["set", "add", "drop", "wrap"]))
        if not path:
            if action == "wrap":
                spec = {"spec": spec}
            continue
        parent, leaf = _get(spec, path[:-1]), path[-1]
        if action == "set":
            parent[leaf] = draw(VALUES)
        elif action == "add" and isinstance(parent[leaf], dict):
            parent[leaf][draw(KEYS)] = draw(VALUES)
        elif action == "drop":
            del parent[leaf]
        elif action == "wrap":
            parent[leaf] = draw(st.sampled_from([[parent[leaf]], {"value": parent[leaf]}]))
    return spec


ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252", "truncate", "nul"])


def _encode(text: str, how: str) -> bytes:
    if how == "truncate":
        raw = text.encode()
        return raw[: len(raw) * 2 // 3]
    if how == "nul":
        return text.encode().replace(b":", b"\x00:", 1)
    return text.encode(how, errors="replace")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), how=ENCODINGS)
def test_mutated_specs_validate_or_fail_with_lines(data, how, tmp_path, tiny_spec):
    spec = data.draw(mutated_spec(tiny_spec()))
    path = tmp_path / "spec.yaml"
    path.write_bytes(_encode(yaml.safe_dump(spec, allow_unicode=True), how))
    try:
        resolved = load_spec(path)
    except SpecError as err:
        lines = str(err).splitlines()
        assert lines and all(line.strip() for line in lines), repr(str(err))
        assert "Traceback" not in str(err) and len(lines) <= 20
    else:
        assert isinstance(resolved, ResolvedSpec)


def test_property_reaches_both_outcomes(tmp_path, tiny_spec):
    """The property is not vacuous: the unmutated spec validates, and a known mutation fails."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec()))
    assert isinstance(load_spec(path), ResolvedSpec)
    path.write_bytes(_encode(yaml.safe_dump(tiny_spec()), "utf-16"))
    with pytest.raises(SpecError, match="not UTF-8 text"):
        load_spec(path)


def test_a_set_value_that_is_not_yaml_is_one_line(tiny_spec, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec()))
    with pytest.raises(SpecError) as err:
        load_spec(path, ["sampling.steps=[1,"])
    assert str(err.value).startswith("--set sampling.steps: '[1,' is not a YAML value (")
