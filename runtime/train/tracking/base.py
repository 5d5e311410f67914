"""The interface every tracker implements, and what a tracker is told about a run."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

# What a run's epoch records hold besides metrics (the epoch is the tracker's step).
NOT_METRICS = ("epoch",)
PARAM_VALUE_LIMIT = 6000  # MLflow's limit on a parameter value; longer ones are cut


@dataclass(frozen=True)
class TrackedRun:
    """A training run as trackers see it."""

    run_dir: Path
    experiment: str
    """The spec's name: MLflow's experiment, W&B's default project."""
    name: str
    """The run's name (its directory, `lr=0.1/seed0` inside a sweep)."""
    params: dict
    """The flattened resolved spec and the run's options (see `flatten_params`)."""
    spec_file: Path


class Tracker(ABC):
    """One experiment tracker, used by rank 0 only. A tracker opens its run in `start`, which
    returns what to keep in the run directory's `tracking.json` to reopen the same run later
    (on `--resume`, and for `nnspec export` to add the ONNX file)."""

    name: ClassVar[str]
    requires: ClassVar[str | None] = None
    """The package the tracker needs (`pip install "nnspec[tracking]"` brings it)."""

    def __init__(self, target: str | None):
        self.target = target
        """What followed `--track NAME:` (a tracking URI, a project), or None."""

    @abstractmethod
    def start(self, run: TrackedRun, stored: dict | None) -> dict:
        """Open the tracker's run, or reopen the one `stored` (a previous `start`'s result)
        names; return the record to store. Its `epoch` says how far the tracker's history
        goes (0 for a new run): later epochs are replayed from metrics.jsonl."""

    @abstractmethod
    def log_epoch(self, record: dict) -> None:
        """One epoch's metrics, at step = epoch."""

    @abstractmethod
    def log_final(self, final: dict) -> None:
        """The run's final metrics (final.json)."""

    @abstractmethod
    def log_artifact(self, path: Path) -> None:
        """A file that belongs to the run (the exported ONNX model, final.json)."""

    @abstractmethod
    def finish(self, status: str) -> None:
        """Close the run: `status` is finished, failed or killed."""

    def describe(self, record: dict) -> str:
        """Where the run went, for the log (`record` is what `start` returned)."""
        return ""

    @classmethod
    def reopen(cls, stored: dict) -> Tracker | None:
        """The tracker of a finished run (from its stored record) for adding files to it, or
        None for a tracker that keeps no files."""
        return None

    def release(self) -> None:  # noqa: B027 (most trackers hold nothing to let go of)
        """Let go of a reopened run, leaving its status as it was."""


def metrics_of(record: dict) -> dict[str, float]:
    """The numeric entries of a record, as floats (what trackers chart)."""
    return {
        key: float(value)
        for key, value in record.items()
        if key not in NOT_METRICS
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    }


def flatten_params(resolved_spec: dict, options: dict) -> dict:
    """The resolved spec and the options as one flat mapping of dotted keys to scalars.

    Nested mappings and lists of mappings (the network) flatten by key and index
    (`network.3.conv.out`); lists of scalars (shapes, labels) stay one value; options go under
    `options.`. Keys keep only the characters MLflow accepts.
    """
    flat: dict = {}
    _flatten(resolved_spec, "", flat)
    _flatten({"options": options}, "", flat)
    return flat


def _flatten(value, prefix: str, out: dict) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}{_clean_key(str(key))}.", out)
    elif isinstance(value, (list, tuple)) and value and any(
        isinstance(v, (dict, list, tuple)) for v in value
    ):
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}{index}.", out)
    else:
        if isinstance(value, (list, tuple, dict)):
            value = str(list(value) if not isinstance(value, dict) else value)
        elif isinstance(value, Path):
            value = str(value)
        if isinstance(value, str) and len(value) > PARAM_VALUE_LIMIT:
            value = value[: PARAM_VALUE_LIMIT - 3] + "..."
        out[prefix[:-1]] = value


def _clean_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", key)
