"""Calibrators: offline measurements a policy needs before it can run on a model.

Each entry is a function ``calibrate(runner: Runner, samples: int, out: Path, log, **options) -> Path``
that measures with the runner's loaded pipeline and writes one profile file (JSON) at ``out``.
"""

from __future__ import annotations

from ..registry import Registry

CALIBRATORS = Registry("calibrator")
for _name, _target in [
    ("sencache", "sencache_bench.calibration.sencache:calibrate"),
    ("teacache", "sencache_bench.calibration.teacache:calibrate"),
    ("magcache", "sencache_bench.calibration.magcache:calibrate"),
    ("sencache-global", "sencache_bench.calibration.sencache_global:calibrate"),
    ("lemica", "sencache_bench.calibration.lemica:calibrate"),
    ("dpcache", "sencache_bench.calibration.dpcache:calibrate"),
]:
    CALIBRATORS.add(_name, _target)
