"""A damaged reference is remade with one warning line and never scored against; the table then equals an
undisturbed run's."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from sencache_bench.runner import Runner
from sencache_bench.spec import load_spec


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _other_frames(path):  # a complete, valid npz of other frames: only the sha256 tells
    buf = io.BytesIO()
    np.savez_compressed(buf, frames=np.zeros((9, 32, 32, 3), np.uint8))
    path.write_bytes(buf.getvalue())


def _edit_shape(meta_path):
    meta = json.loads(meta_path.read_text())
    meta["frames_file"]["shape"] = [9, 32, 32, 4]
    meta_path.write_text(json.dumps(meta))


DAMAGE = {  # fault -> (what to do to (json, npz), the parenthesis of the warning line)
    "truncated npz": (lambda j, n: _truncate(n), "{k}.npz does not match the sha256 its JSON records"),
    "truncated json": (lambda j, n: _truncate(j), "{k}.json is unreadable (JSONDecodeError)"),
    "json not UTF-8": (lambda j, n: j.write_bytes(b"\xff\xfe{"), "{k}.json is unreadable (UnicodeDecodeError)"),
    "other frames": (lambda j, n: _other_frames(n), "{k}.npz does not match the sha256 its JSON records"),
    "shape edited": (lambda j, n: _edit_shape(j), "{k}.npz has shape (9, 32, 32, 3), its JSON records (9, 32, 32, 4)"),
    "npz missing": (lambda j, n: n.unlink(), "{k}.npz is missing"),
}


@pytest.mark.parametrize("fault", list(DAMAGE))
def test_damaged_reference_is_remade_with_one_warning(bench, fault):
    spec = bench.spec()
    assert bench.cli("run", spec, "-q", "--set", "policy.every=3").code == 0  # makes the references
    runner = Runner(load_spec(spec))
    key = runner.reference_key(*runner.items()[1])
    refs = bench.tmp / "results" / "references"
    damage, why = DAMAGE[fault]
    damage(refs / f"{key}.json", refs / f"{key}.npz")

    out = bench.cli("run", spec, "-q")
    assert out.code == 0, out.err
    assert out.err == [f"warning: reference {key} is damaged ({why.format(k=key)}): remaking it"]
    meta = json.loads((refs / f"{key}.json").read_text())
    assert meta["frames_file"]["shape"] == [9, 32, 32, 3]  # remade, and checkable again
    assert bench.cli("run", spec, "-q", "--force").err == []  # and now it checks out
    assert bench.table(bench.tmp / "results") == bench.undisturbed(("--set", "policy.every=3"), ())
