"""SIGINT and SIGTERM mid-video: one line, exit 130 / 143, no partial files; the rerun resumes.

The signal is a real one, sent to this process from inside the second video's denoising loop (the step
callback), so it lands mid-generation: while the reference is made (SIGTERM) or the policy run (SIGINT).
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from sencache_bench.runner import Session

SECOND_PROMPT = "a quiet library"  # the bench fixture's (tests/faults/conftest.py) second prompt


@pytest.mark.parametrize("sig, code, during", [(signal.SIGINT, 130, "policy run"), (signal.SIGTERM, 143, "reference")])
def test_signal_mid_run_then_rerun_resumes(bench, monkeypatch, sig, code, during):
    """A run makes every reference first, then times the chain B0 P0 B1 P1 ...: the signal lands in the second
    reference's loop (no record yet) or in the second policy generation (the first video's record is written)."""
    original = Session.generate
    seen, fired = [], []

    def generate(self, prompt, seed, policy=None, on_step=None, purpose="other"):
        kind = "policy run" if policy is not None else "reference"  # the 2nd uncached one is the 2nd reference
        seen.append(kind)

        def step(i, n):
            if on_step is not None:
                on_step(i, n)
            # the 2nd reference (references come first, one per video), or the 2nd video's policy run (an unsteady
            # first segment may time the 1st video's policy run again first: counting videos, not generations)
            second = seen.count(kind) == 2 if kind == "reference" else prompt == SECOND_PROMPT
            if i == 2 and kind == during and second and not fired:
                fired.append(True)
                os.kill(os.getpid(), sig)

        return original(self, prompt, seed, policy=policy, on_step=step, purpose=purpose)

    monkeypatch.setattr(Session, "generate", generate)
    spec = bench.spec()
    out = bench.cli("run", spec)
    monkeypatch.setattr(Session, "generate", original)
    assert out.code == code
    finished = 0 if during == "reference" else 1
    assert out.err[-1] == f"interrupted after {finished} of 3 videos; rerun to resume"
    assert "Traceback" not in "\n".join(out.err)
    results = bench.tmp / "results"
    left = bench.files(results)
    assert not [f for f in left if f.endswith(".tmp") or "/." in f], left  # no temporaries
    assert len([f for f in left if f.startswith("runs/")]) == finished
    assert len([f for f in left if f.startswith("references/") and f.endswith(".json")]) == \
        (1 if during == "reference" else 3)
    for f in left:
        if f.endswith(".json"):
            json.loads((results / f).read_text())  # every file there is complete

    out = bench.cli("run", spec, "-q")
    assert out.code == 0 and out.err == []
    assert bench.table(results) == bench.undisturbed(())
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers are put back
