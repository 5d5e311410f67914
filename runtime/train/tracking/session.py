"""The trackers of one run, driven together, and the `tracking.json` that lets them resume.

Per epoch the trainer writes the checkpoint, then metrics.jsonl, then calls `log_epoch`, which
logs to every tracker and then records the epoch in `tracking.json`. A run killed anywhere in
between resumes from the checkpoint's epoch; each tracker reopens its run and gets the epochs
of metrics.jsonl after the last one it holds, so no epoch is lost or logged twice (TensorBoard
purges events after that epoch; MLflow is asked for its history).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from nnspec.compiler.errors import UsageError
from nnspec.compiler.suggest import did_you_mean
from nnspec.runtime.train.checkpoint import write_json_atomic
from nnspec.runtime.train.run_dir import read_history, read_json, run_name
from nnspec.runtime.train.tracking.base import TrackedRun, Tracker, flatten_params

TRACKING_FILE = "tracking.json"
TRACKERS: dict[str, str] = {
    "tensorboard": "tensorboard:TensorBoardTracker",
    "mlflow": "mlflow:MlflowTracker",
    "wandb": "wandb:WandbTracker",
}
ALWAYS = ("tensorboard",)


def parse_track(items: Iterable[str]) -> dict[str, str | None]:
    """`--track` values (`mlflow`, `mlflow:http://host:5000`, `wandb:team/project`) as
    {tracker: target or None}; TensorBoard is always on and needs no flag.

    Raises:
        UsageError: an unknown tracker (with the known ones), or one given twice.
    """
    chosen: dict[str, str | None] = {}
    for item in items:
        name, _, target = item.partition(":")
        name = name.strip().lower()
        if name not in TRACKERS:
            raise UsageError(
                f"--track {item!r}: unknown tracker {name!r}{did_you_mean(name, TRACKERS)}; "
                f"choose {', '.join(n for n in TRACKERS if n not in ALWAYS)} "
                "(TensorBoard is always on)",
            )
        if name in chosen:
            raise UsageError(f"--track {name} is given twice")
        needed = tracker_class(name).requires
        if needed and importlib.util.find_spec(needed) is None:
            raise UsageError(
                f"--track {name} needs the {needed} package\n    hint: pip install "
                '"nnspec[tracking]" (or pip install ' + needed + ")",
            )
        if name not in ALWAYS:
            chosen[name] = target or None
    return chosen


def tracker_class(name: str) -> type[Tracker]:
    module, _, cls = TRACKERS[name].partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


class TrackingSession:
    """Every tracker of one run: the ones `--track` names, those an earlier session of the
    run used (when resuming), and TensorBoard."""

    def __init__(self, run_dir: Path, track: dict[str, str | None], resume: bool):
        self.path = Path(run_dir) / TRACKING_FILE
        self.stored: dict = _read(self.path) if resume else {}
        for name, target in track.items():
            earlier = self.stored.get(name, {}).get("target")
            if name in self.stored and target not in (None, earlier):
                raise UsageError(
                    f"--track {name}:{target}: this run was tracked with {name}:{earlier}\n    "
                    "hint: resume with the same --track value (or without it)",
                )
        names = [*ALWAYS, *track, *(n for n in self.stored if n not in track and n not in ALWAYS)]
        self.trackers = {
            n: tracker_class(n)(track.get(n) or self.stored.get(n, {}).get("target"))
            for n in names
        }

    def start(self, run: TrackedRun, history: Sequence[dict], log: Callable[[str], None]) -> None:
        """Open every tracker's run and replay the epochs of `history` it does not hold."""
        for name, tracker in self.trackers.items():
            stored = self.stored.get(name)
            record = tracker.start(run, stored.get("run") if stored else None)
            self.stored[name] = {"target": tracker.target, "run": record}
            missing = [r for r in history if r["epoch"] > record["epoch"]]
            for epoch_record in missing:
                tracker.log_epoch(epoch_record)
            if missing:
                record["epoch"] = missing[-1]["epoch"]
            if name not in ALWAYS:
                log(f"tracking with {name}: {tracker.describe(record)}")
        self._save()

    def log_epoch(self, record: dict) -> None:
        for name, tracker in self.trackers.items():
            tracker.log_epoch(record)
            self.stored[name]["run"]["epoch"] = record["epoch"]
        self._save()

    def log_final(self, final: dict, files: Sequence[Path] = ()) -> None:
        for tracker in self.trackers.values():
            tracker.log_final(final)
            for path in files:
                tracker.log_artifact(path)

    def finish(self, status: str) -> None:
        for tracker in self.trackers.values():
            tracker.finish(status)

    def _save(self) -> None:
        write_json_atomic(self.path, self.stored)


def start_tracking(
    run_dir: Path, experiment: str, resolved: dict, options, epoch: int, log: Callable[[str], None]
) -> TrackingSession:
    """Open the trackers of a run whose checkpoint is at `epoch` (0: a new run): the resolved
    spec (as written to spec.yaml) and the TrainOptions become the tracked parameters."""
    values = {
        f.name: getattr(options, f.name)
        for f in dataclasses.fields(options)
        if f.name not in ("resume", "progress")
    }
    run = TrackedRun(
        run_dir=Path(run_dir),
        experiment=experiment,
        name=run_name(run_dir),
        params=flatten_params(resolved, values),
        spec_file=Path(run_dir) / "spec.yaml",
    )
    session = TrackingSession(run_dir, parse_track(options.track), options.resume)
    session.start(run, read_history(run_dir, epoch), log)
    return session


def log_run_artifact(run_dir: Path, path: Path) -> list[str]:
    """Add `path` (an exported model) to every tracker run of `run_dir` that keeps files;
    return the trackers' names."""
    stored = _read(Path(run_dir) / TRACKING_FILE)
    names = []
    for name, entry in stored.items():
        tracker = tracker_class(name).reopen(entry["run"])
        if tracker is not None:
            tracker.log_artifact(Path(path))
            tracker.release()
            names.append(name)
    return names


def _read(path: Path) -> dict:
    """A run's tracking.json ({} when it has none), checked before anything trusts it.

    Raises:
        UsageError: not a record of known trackers' runs.
    """
    if not path.is_file():
        return {}
    stored = read_json(path)
    for name, entry in stored.items():
        if name not in TRACKERS or not isinstance(entry, dict) or not isinstance(
            entry.get("run"), dict
        ):
            raise UsageError(
                f"{path} cannot be read: {name!r} is not a tracker record\n    hint: restore "
                "the file, or delete it to track the rest of the run in new tracker runs",
            )
    return stored

