"""The VBench worker without VBench: a fake ``vbench`` package whose ``VBench.evaluate`` fails, is interrupted, or
calls sys.exit in one dimension. An ordinary error skips that dimension only; Ctrl-C and SystemExit stop the
worker at once (it used to catch them per dimension and go on evaluating the rest)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest

from sencache_bench.errors import BenchError
from sencache_bench.metrics import vbench_worker
from sencache_bench.metrics.vbench import Video, run_vbench

DIMS = ["temporal_flickering", "subject_consistency", "motion_smoothness"]


class FakeVBench:
    """VBench's constructor and ``evaluate``: writes the eval_results file VBench writes, unless told to fail.

    ``fail``: dimension -> what evaluate raises for it (an exception instance). ``calls``: dimensions evaluated."""

    fail: ClassVar[dict] = {}
    calls: ClassVar[list] = []

    def __init__(self, device, full_info, output_path):
        self.out = Path(output_path)

    def evaluate(self, videos_path, name, dimension_list, local, mode, **kwargs):
        (dim,) = dimension_list
        type(self).calls.append(dim)
        if dim in self.fail:
            raise self.fail[dim]
        videos = sorted(Path(videos_path).iterdir())
        per_video = [{"video_path": str(v), "video_results": 0.5} for v in videos]
        (self.out / f"{name}_eval_results.json").write_text(json.dumps({dim: [0.5, per_video]}))


@pytest.fixture
def fake_vbench(monkeypatch, tmp_path):
    """``import vbench`` inside the worker finds this module; ``fail`` says what each dimension raises."""
    module = types.ModuleType("vbench")
    module.__file__ = str(tmp_path / "vbench" / "__init__.py")
    module.VBench = type("VBench", (FakeVBench,), {"fail": {}, "calls": []})
    monkeypatch.setitem(sys.modules, "vbench", module)
    return module.VBench


def _job(tmp_path: Path) -> tuple[Path, Path]:
    video = tmp_path / "a.mp4"
    video.write_bytes(b"not decoded by the fake")
    job = {"name": "t", "mode": "custom_input", "device": "cpu", "dimensions": DIMS,
           "batches": [{"work": str(tmp_path / "work"), "videos": [{"id": "run-1", "path": str(video),
                                                                      "prompt": "a red ball", "index": 0}]}]}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    return path, tmp_path / "result.json"


def test_an_error_in_one_dimension_skips_only_that_dimension(fake_vbench, tmp_path, capsys):
    fake_vbench.fail = {"subject_consistency": RuntimeError("CUDA out of memory")}
    job, out = _job(tmp_path)
    assert vbench_worker.main(str(job), str(out)) == 0
    batch = json.loads(out.read_text())["batches"][0]
    assert fake_vbench.calls == DIMS  # the dimensions after the failing one still ran
    assert batch["failed"] == {"subject_consistency": "RuntimeError: CUDA out of memory"}
    assert batch["aggregate"] == {"temporal_flickering": 0.5, "motion_smoothness": 0.5}
    assert batch["per_video"] == {"run-1": {"temporal_flickering": 0.5, "motion_smoothness": 0.5}}


@pytest.mark.parametrize("raised, code, what", [
    (KeyboardInterrupt(), 130, "interrupted"),
    (SystemExit(3), 3, "VBench called sys.exit(3)"),
    (SystemExit(0), 1, "VBench called sys.exit(0)"),  # a clean exit mid-evaluation is still no result
])
def test_ctrl_c_or_sys_exit_stops_the_worker_at_once(fake_vbench, tmp_path, capsys, raised, code, what):
    fake_vbench.fail = {"subject_consistency": raised}
    job, out = _job(tmp_path)
    assert vbench_worker.main(str(job), str(out)) == code
    assert fake_vbench.calls == DIMS[:2]  # nothing evaluated after the interrupt
    assert not out.exists()  # no result that looks complete
    err = capsys.readouterr().err
    assert err.splitlines() == [(f"vbench worker: {what} during dimension 'subject_consistency': stopped, "
                                 "no result written")]


def test_the_stop_reaches_the_user_as_one_line(tmp_path):
    """Through run_vbench and the worker's own process: the caller's error names the worker's line."""
    package = tmp_path / "fakepkg" / "vbench"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "class VBench:\n"
        "    def __init__(self, *a):\n        pass\n"
        "    def evaluate(self, dimension_list, **kw):\n        raise KeyboardInterrupt\n")
    python = tmp_path / "python-with-fake-vbench"  # the worker's environment strips PYTHONPATH: add it here
    python.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.path.insert(0, {str(package.parent)!r})\n"
                      f"sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n")
    python.chmod(0o755)
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    with pytest.raises(BenchError) as err:
        run_vbench([Video("run-1", str(video), "a red ball")], ["temporal_flickering"], tmp_path / "work",
                   python=python, device="cpu")
    assert str(err.value).startswith("VBench exited 130 without a result (vbench worker: interrupted during "
                                     "dimension 'temporal_flickering': stopped, no result written); full output in ")
