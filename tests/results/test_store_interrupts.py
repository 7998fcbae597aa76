"""An interrupt in the middle of a result-file write (Ctrl-C, or the SIGTERM that interrupts.py turns into a
BaseException) must leave the old file or none, no temporary file, and keep propagating. The ENOSPC tests only
raise OSError, so a writer whose cleanup catches ``Exception`` instead of ``BaseException`` passed them all."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from sencache_bench.interrupts import Interrupted
from sencache_bench.metrics import video_io
from sencache_bench.results import store

FRAMES = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)

# every writer of results/store.py (write_json, write_frames go through atomic_write_bytes; each is checked, so a
# writer that stops using it is still covered), with the bytes it would write
WRITERS = {
    "atomic_write_bytes": lambda path: store.atomic_write_bytes(path, b"new contents\n"),
    "write_json": lambda path: store.write_json(path, {"kind": "run", "new": True}),
    "write_frames": lambda path: store.write_frames(path, FRAMES),
}
# where the interrupt lands: while the data goes into the temporary file, at its fsync, at the rename
POINTS = ["write", "fsync", "replace"]
INTERRUPTS = {"ctrl-c": KeyboardInterrupt, "sigterm": lambda: Interrupted(signal.SIGTERM)}


class _FileThatIsInterrupted:
    """The temporary file object: its first write is interrupted (the data is half on its way)."""

    def __init__(self, f, exc):
        self._f, self._exc = f, exc

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        raise self._exc()

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def _interrupt_at(monkeypatch, module, point: str, exc) -> None:
    def raise_(*args, **kwargs):
        raise exc()

    if point == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(module.os, "fdopen", lambda *a, **k: _FileThatIsInterrupted(real_fdopen(*a, **k), exc))
    else:
        monkeypatch.setattr(module.os, point, raise_)


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or ".tmp." in p.name)


@pytest.mark.parametrize("interrupt", sorted(INTERRUPTS))
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("old", [True, False], ids=["over-old-file", "new-file"])
def test_interrupted_write_leaves_old_file_or_none_and_no_temp_file(tmp_path, monkeypatch, writer, point,
                                                                     interrupt, old):
    path = tmp_path / "out" / "file.bin"
    path.parent.mkdir()
    if old:
        path.write_bytes(b"old contents\n")
    exc = INTERRUPTS[interrupt]
    expected = KeyboardInterrupt if exc is KeyboardInterrupt else Interrupted
    _interrupt_at(monkeypatch, store, point, exc)
    with pytest.raises(expected):  # propagates as itself: not swallowed, not turned into a BenchError line
        WRITERS[writer](path)
    monkeypatch.undo()
    assert _leftovers(path.parent) == []
    if old:
        assert path.read_bytes() == b"old contents\n"
    else:
        assert not path.exists()
    WRITERS[writer](path)  # and the next write (the rerun) works
    assert _leftovers(path.parent) == []


def test_interrupted_json_write_then_read_back(tmp_path, monkeypatch):
    """What a rerun reads after Ctrl-C at the fsync of a record that existed: the old record, whole."""
    path = tmp_path / "rec.json"
    store.write_json(path, {"kind": "run", "n": 1})
    _interrupt_at(monkeypatch, store, "fsync", KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        store.write_json(path, {"kind": "run", "n": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"kind": "run", "n": 1}


class _WriterInterruptedAtFrame:
    """imageio's ffmpeg writer whose second frame is interrupted (ffmpeg is mid-encode)."""

    def __init__(self, writer, exc):
        self._w, self._exc, self._n = writer, exc, 0

    def append_data(self, frame):
        self._n += 1
        if self._n == 2:
            raise self._exc()
        self._w.append_data(frame)

    def __getattr__(self, name):
        return getattr(self._w, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)  # imageio's own: skips close() when the block raised


@pytest.mark.parametrize("point", ["frame", "replace"])
@pytest.mark.parametrize("old", [True, False], ids=["over-old-file", "new-file"])
def test_interrupted_mp4_write_leaves_old_file_or_none(tmp_path, monkeypatch, point, old):
    """write_mp4 (metrics/video_io.py), the other result writer: the same promise for the saved videos."""
    video = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    path = tmp_path / "clip.mp4"
    if old:
        path.write_bytes(b"old mp4")
    if point == "frame":
        real = video_io.iio.get_writer
        monkeypatch.setattr(video_io.iio, "get_writer",
                            lambda *a, **k: _WriterInterruptedAtFrame(real(*a, **k), KeyboardInterrupt))
    else:
        monkeypatch.setattr(video_io.os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        video_io.write_mp4(path, video)
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []
    if old:
        assert path.read_bytes() == b"old mp4"
    else:
        assert not path.exists()
