"""A full disk (ENOSPC) and an unwritable output folder (EACCES), injected at the system call that fails
first in each case: one line, exit 1, no half-written record; the rerun completes the table."""

from __future__ import annotations

import errno
import os
import tempfile

from sencache_bench.results import store
from sencache_bench.runner import Runner
from sencache_bench.spec import load_spec


def test_disk_full_while_writing_a_record(bench, monkeypatch):
    spec = bench.spec()
    runner = Runner(load_spec(spec))
    victim = runner.record_path(*runner.items()[1])
    real_fsync = os.fsync

    def fsync(fd):  # the data is in the temporary file; the disk fills before it is safely stored
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(victim.parent / f".{victim.name}.")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(store.os, "fsync", fsync)
    out = bench.cli("run", spec, "-q")
    monkeypatch.setattr(store.os, "fsync", real_fsync)
    assert out.code == 1
    assert out.err == [f"error: cannot write {victim}: No space left on device; free space or choose a writable "
                       f"output.dir, then rerun (finished records are kept)"]
    left = bench.files(bench.tmp / "results")
    assert not [f for f in left if f.endswith(".tmp")] and not victim.exists()
    assert len([f for f in left if f.startswith("runs/")]) == 1

    out = bench.cli("run", spec, "-q")
    assert out.code == 0 and out.err == []
    assert bench.table(bench.tmp / "results") == bench.undisturbed(())


def test_output_dir_not_writable(bench, monkeypatch):
    spec = bench.spec()
    runner = Runner(load_spec(spec))
    first = bench.tmp / "results" / "flops" / f"{runner.flops_key()}.json"  # the first file a run writes
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # what a read-only folder answers (root ignores chmod, so inject)
        if dir is not None and str(dir).startswith(str(bench.tmp / "results")):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(store.tempfile, "mkstemp", mkstemp)
    out = bench.cli("run", spec, "-q")
    monkeypatch.setattr(store.tempfile, "mkstemp", real_mkstemp)
    assert out.code == 1
    assert out.err == [f"error: cannot write {first}: Permission denied; free space or choose a writable "
                       f"output.dir, then rerun (finished records are kept)"]
    assert [f for f in bench.files(bench.tmp / "results")] == []

    out = bench.cli("run", spec, "-q")
    assert out.code == 0
    assert bench.table(bench.tmp / "results") == bench.undisturbed(())
