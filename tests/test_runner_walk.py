"""The route of a spec through ``run`` (issue 26): the runner orders stages and the route does not keep climbing
back into modules it already passed through.

A walk is traced with :func:`sys.setprofile` over a real one-item run on tiny-wan. A module *comes back* when one
of the package's modules calls into it directly while a frame of it is still on the stack (runner -> stage ->
runner, a scheduler calling its caller's closures). Counted per module: the distinct modules it comes back from
(a loop over steps or items is one route, not many). Calls made inside the transformer's forward (policy hooks and
the call recorder, run by torch's hooks) and torch's dispatch callbacks (FLOP counting) are the model's work, not
the run's route, and are left out. The unsplit runner came back to runner.py from two modules on a SemCache run (the timing schedule's
closures, SemCache's pricing reading ``runner.session``); the staged one from one.
"""

from __future__ import annotations

import sys
from collections import defaultdict

import pytest

from sencache_bench import api

PACKAGE = "sencache_bench"
FORWARD = "<forward>"
MOST = 2  # issue 26: a walk comes back to the same module at most twice


class Walk:
    """Module-level re-entries seen by a profile function: {module: {caller module: example edge}}."""

    def __init__(self):
        self.stack: list[tuple[str | None, str]] = []
        self.back: dict[str, dict[str, str]] = defaultdict(dict)

    def __call__(self, frame, event, arg):
        if event == "call":
            module = frame.f_globals.get("__name__", "")
            name = frame.f_code.co_qualname
            mine = module if module.startswith(PACKAGE) else None
            if module.startswith("torch") and name == "Module._call_impl":
                mine = FORWARD
            if mine not in (None, FORWARD) and self.stack:
                caller = self.stack[-1][0]
                in_forward = any(m == FORWARD for m, _ in self.stack)
                if caller not in (None, FORWARD, mine) and not in_forward \
                        and any(m == mine for m, _ in self.stack):
                    self.back[mine].setdefault(caller, f"{caller}.{self.stack[-1][1]} -> {mine}.{name}")
            self.stack.append((mine, name))
        elif event == "return" and self.stack:
            self.stack.pop()


def walk_of(spec: str, tmp_path, *overrides: str) -> Walk:
    walk = Walk()
    sys.setprofile(walk)
    try:
        api.run(spec, overrides=[f"output.dir={tmp_path}", 'prompts=["a red ball"]', "metrics=[psnr]", *overrides],
                log=lambda line: None)
    finally:
        sys.setprofile(None)
    return walk


def test_walk_counts_a_module_coming_back():
    """The tracer on a hand-made route: a.start -> b.middle -> a.leaf comes back to a from b (once, though b calls
    it three times); a -> b alone is not a return; calls from outside the package are not either."""
    ns_a: dict = {"__name__": f"{PACKAGE}.a"}
    ns_b: dict = {"__name__": f"{PACKAGE}.b"}
    exec("def leaf():\n    return 1\n", ns_a)
    exec("def middle(f):\n    return [f() for _ in range(3)]\n", ns_b)
    exec("def start(middle):\n    return middle(leaf)\n", ns_a)
    walk = Walk()
    sys.setprofile(walk)
    try:
        ns_a["start"](ns_b["middle"])
        ns_b["middle"](ns_a["leaf"])  # from this test module: a is not on the stack
    finally:
        sys.setprofile(None)
    # the list comprehension is b's own frame (middle.<locals>.<listcomp> on 3.11), still module b
    assert set(walk.back) == {f"{PACKAGE}.a"}
    assert list(walk.back[f"{PACKAGE}.a"]) == [f"{PACKAGE}.b"]
    assert walk.back[f"{PACKAGE}.a"][f"{PACKAGE}.b"].endswith(f"-> {PACKAGE}.a.leaf")


@pytest.mark.parametrize("spec,overrides", [
    ("configs/tiny_wan_static.yaml", ()),
    ("configs/tiny_teacache.yaml", ()),
    ("configs/tiny_semcache.yaml", ()),
])
def test_run_comes_back_to_no_module_more_than_twice(spec, overrides, tmp_path):
    walk = walk_of(spec, tmp_path, *overrides)
    over = {module: sorted(back.values()) for module, back in walk.back.items() if len(back) > MOST}
    assert not over, f"modules the route of `run` comes back to more than {MOST} times: {over}"
    # the runner orders the stages: entered from the API, it comes back only from the timed chain (each record is
    # written as its timing segment closes); the unsplit runner also came back from SemCache's pricing
    back = walk.back.get(f"{PACKAGE}.runner", {})
    assert list(back) == [f"{PACKAGE}.stages.policy_runs"], sorted(back.values())
