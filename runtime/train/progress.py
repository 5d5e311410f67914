"""The per-epoch progress bar: tqdm on a terminal (rate, elapsed and ETA), nothing elsewhere,
where the trainer's plain per-epoch lines are the log."""

from __future__ import annotations

import sys
from typing import TextIO


class ProgressBar:
    """`epoch 3/12  45%|####5     | 18/40 [00:02<00:02, 8.1batch/s, loss 0.4123]`, redrawn
    in place and cleared when the epoch ends; a no-op unless `enabled`."""

    def __init__(
        self,
        total: int,
        label: str,
        enabled: bool,
        stream: TextIO = sys.stderr,
        min_interval: float = 0.25,
    ):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=label,
                file=stream,
                leave=False,
                unit="batch",
                dynamic_ncols=True,
                mininterval=min_interval,
            )

    @staticmethod
    def wanted(stream: TextIO = sys.stderr) -> bool:
        """True when `stream` is a terminal (bars would litter logs and pipes)."""
        return hasattr(stream, "isatty") and stream.isatty()

    def update(self, steps: int = 1, note: str = "") -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(note, refresh=False)
            self.bar.update(steps)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
