"""A guard for tests that talk to worker processes: fail instead of hanging.

pytest-timeout is not installed; ``signal.alarm`` does the same for one block of the main
thread (POSIX only, which is where subprocess vector envs run in these tests).
"""

from __future__ import annotations

import contextlib
import signal


@contextlib.contextmanager
def time_limit(seconds: int):
    """Raise ``TimeoutError`` in the block if it runs longer than ``seconds``."""
    def expire(signum, frame):
        raise TimeoutError(f"worker processes did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
