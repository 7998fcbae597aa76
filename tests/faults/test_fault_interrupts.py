"""SIGINT and SIGTERM mid-video: one line, exit 130 / 143, no partial files; the rerun resumes.

The signal is a real one, sent to this process from inside the second video's denoising loop (the step
callback), so it lands mid-generation: while the reference is made (SIGTERM) or the policy run (SIGINT).
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from sencache_bench.runner import Runner


@pytest.mark.parametrize("sig, code, during", [(signal.SIGINT, 130, "policy run"), (signal.SIGTERM, 143, "reference")])
def test_signal_mid_run_then_rerun_resumes(bench, monkeypatch, sig, code, during):
    original = Runner.run_item
    videos, step2 = [], []

    def run_item(self, prompt, seed, on_step=None):
        videos.append(prompt.index)

        def step(i, n):
            if on_step is not None:
                on_step(i, n)
            if len(videos) == 2 and i == 2:
                step2.append(i)  # the 1st time: the reference's loop, the 2nd: the policy run's
                if len(step2) == (1 if during == "reference" else 2):
                    os.kill(os.getpid(), sig)

        return original(self, prompt, seed, on_step=step)

    monkeypatch.setattr(Runner, "run_item", run_item)
    spec = bench.spec()
    out = bench.cli("run", spec)
    monkeypatch.setattr(Runner, "run_item", original)
    assert out.code == code
    assert out.err[-1] == "interrupted after 1 of 3 videos; rerun to resume"
    assert "Traceback" not in "\n".join(out.err)
    results = bench.tmp / "results"
    left = bench.files(results)
    assert not [f for f in left if f.endswith(".tmp") or "/." in f], left  # no temporaries
    assert len([f for f in left if f.startswith("runs/")]) == 1
    assert len([f for f in left if f.startswith("references/") and f.endswith(".json")]) == \
        (1 if during == "reference" else 2)
    for f in left:
        if f.endswith(".json"):
            json.loads((results / f).read_text())  # every file there is complete

    out = bench.cli("run", spec, "-q")
    assert out.code == 0 and out.err == []
    assert bench.table(results) == bench.undisturbed(())
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers are put back
