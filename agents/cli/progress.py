"""Progress for the long steps: a live bar on a terminal, a few plain lines elsewhere.

A bar redrawn with carriage returns is unreadable in a log file or a CI job, and noise in
tests, so on anything that is not a terminal the bar becomes a plain line at most every
``interval`` seconds (and none at all for steps shorter than that).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


class Progress:
    """A counter with a description and a live status text (e.g. the best result so far).

    Args:
        description: what is running, e.g. ``"search uniform"``.
        total: the count at completion, or None when unknown.
        unit: what is counted (``"eval"``, ``"step"``).
        stream: where to write (default stderr, so stdout stays the result).
        interval: seconds between plain lines when ``stream`` is not a terminal.
    """

    def __init__(self, description: str, total: int | None = None, unit: str = "it",
                 stream: TextIO | None = None, interval: float = 30.0):
        self.stream = stream if stream is not None else sys.stderr
        self.description = description
        self.total = total
        self.unit = unit
        self.interval = interval
        self.count = 0
        self.status = ""
        self._start = self._last = time.perf_counter()
        terminal = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = tqdm(total=total, desc=description, unit=unit, file=self.stream,
                         dynamic_ncols=True, leave=True) if terminal else None

    def update(self, count: int, status: str = "") -> None:
        """Set the count reached (absolute, not an increment) and the status text."""
        self.count, self.status = count, status
        if self._bar is not None:
            self._bar.update(count - self._bar.n)
            if status:
                self._bar.set_postfix_str(status, refresh=False)
            return
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._line()

    def _line(self) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        status = f"  {self.status}" if self.status else ""
        print(f"{self.description}: {self.count}{of} {self.unit}{status} "
              f"({time.perf_counter() - self._start:.0f} s)", file=self.stream, flush=True)

    def close(self) -> None:
        """End the bar (a final plain line if a step took longer than ``interval``)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif time.perf_counter() - self._start >= self.interval:
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
