"""Peak memory of one generation, not of the process's lifetime.

``ru_maxrss`` only ever grows, so after the first video it says nothing about the next one. On CPU a
background thread samples the resident set size (``/proc/self/statm``) every few milliseconds while the
generation runs, and reports the peak and how far it rose above the level at the start; on CUDA the
allocator's peak counter is reset per generation (``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import os
import resource
import threading

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = "/proc/self/statm"


def rss_mb() -> float | None:
    """The process's resident set size now, in MiB (None where /proc is not there)."""
    try:
        with open(_STATM) as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except OSError:
        return None


class PeakMemory:
    """``with PeakMemory(device) as mem: ...``; then ``mem.peak_mb``, ``mem.above_start_mb``, ``mem.kind``."""

    def __init__(self, device: str, interval_s: float = 0.005):
        self.cuda = device.startswith("cuda")
        self.interval_s = interval_s
        self.peak_mb = self.start_mb = 0.0
        self.kind = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.start_mb = torch.cuda.memory_allocated() / 2**20
            self.kind = "cuda_max_allocated"
            return self
        start = rss_mb()
        if start is None:  # no /proc: fall back to the lifetime peak, and say so
            self.kind = "process_lifetime_peak_rss"
            return self
        self.start_mb = self.peak_mb = start
        self.kind = "rss_sampled_peak"
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            now = rss_mb()
            if now is not None and now > self.peak_mb:
                self.peak_mb = now

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        if self._thread is None:
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        now = rss_mb()
        if now is not None:
            self.peak_mb = max(self.peak_mb, now)

    @property
    def above_start_mb(self) -> float:
        return max(0.0, self.peak_mb - self.start_mb)
