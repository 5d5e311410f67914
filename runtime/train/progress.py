"""A one-line progress bar for terminals; silent elsewhere, where callers print plain lines."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """`[#####.....] 12/40 loss 0.41 3.2 it/s`, redrawn in place; a no-op unless `enabled`."""

    def __init__(self, total: int, label: str, enabled: bool, stream: TextIO = sys.stderr):
        self.total, self.label, self.enabled, self.stream = total, label, enabled, stream
        self.done = 0
        self.started = time.perf_counter()

    @staticmethod
    def wanted(stream: TextIO = sys.stderr) -> bool:
        """True when `stream` is a terminal (bars would litter logs and pipes)."""
        return hasattr(stream, "isatty") and stream.isatty()

    def update(self, steps: int = 1, note: str = "") -> None:
        self.done += steps
        if not self.enabled:
            return
        width = 24
        filled = width * self.done // max(self.total, 1)
        rate = self.done / max(time.perf_counter() - self.started, 1e-9)
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {self.done}/{self.total} {note} {rate:.1f} it/s\x1b[K"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
