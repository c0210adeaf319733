"""Progress lines of long commands: on stderr, so stdout stays the command's JSON."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """A one-line progress bar on stderr (``label [####....] k/n  elapsed``).

    On a terminal it redraws in place; otherwise (logs, CI) it prints a line per
    update, so a log shows how far a run got.
    """

    def __init__(self, total: int, label: str, enabled: bool = True, width: int = 30) -> None:
        self.total, self.label, self.enabled, self.width = total, label, enabled, width
        self.done = 0
        self.start = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self._draw()

    def advance(self, count: int = 1, note: str = "") -> None:
        self.done += count
        self._draw(note)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr, flush=True)

    def _draw(self, note: str = "") -> None:
        if not self.enabled:
            return
        filled = self.width * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        line = f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:6.1f} s {note}".rstrip()
        if self.tty:
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)
