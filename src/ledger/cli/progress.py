"""A progress bar for long jobs on a terminal: done/total, events/s, ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Redraws one line (on a terminal) or prints a line every few seconds (in a log)."""

    def __init__(self, label: str, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.label = label
        self.stream = stream
        self.width = width
        self.started = time.monotonic()
        self._last_line = 0.0
        self.tty = stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.tty and now - self._last_line < 5 and done < total:
            return
        self._last_line = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        share = done / total if total else 1.0
        eta = (total - done) / rate if rate > 0 else 0.0
        filled = int(self.width * share)
        bar = "#" * filled + "." * (self.width - filled)
        line = (
            f"{self.label} [{bar}] {share:6.1%} {done:,}/{total:,} events "
            f"{rate:,.0f} ev/s ETA {eta:,.0f} s"
        )
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()

    def finish(self) -> float:
        elapsed = time.monotonic() - self.started
        if self.tty:
            self.stream.write("\n")
        return elapsed
