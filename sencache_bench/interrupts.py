"""Clean stops: SIGINT and SIGTERM become one exception the commands turn into one line and 128 + signal.

Inside :func:`stop_on_signals` both signals raise :class:`Interrupted` in the main thread (SIGINT
would otherwise be a KeyboardInterrupt that click turns into "Aborted!" and exit 1; SIGTERM would
end the process without a word). Every result file is written atomically (results/store.py), so an
interrupted video leaves nothing behind and a rerun of the same command resumes (130 = 128 + SIGINT,
143 = 128 + SIGTERM, the shell's convention).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(BaseException):
    """A BaseException, like KeyboardInterrupt: no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum, frame) -> None:
    raise Interrupted(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, _raise) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def interrupted_line(done: int, total: int) -> str:
    return f"interrupted after {done} of {total} videos; rerun to resume"
