"""A run directory: where it lives (`--out`, or `runs/NAME`, `runs/NAME-2`, ...) and the small
JSON files in it that other stages read (`run.json`, `metrics.jsonl`, `final.json`)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from nnspec.compiler.errors import UsageError
from nnspec.compiler.files import UnreadableFile, read_text_capped
from nnspec.compiler.paths import child_path
from nnspec.runtime.train.checkpoint import MAX_RECORD_BYTES, checkpoint_exists, write_text_atomic
from nnspec.runtime.train.options import TrainOptions

METRICS_FILE = "metrics.jsonl"


def choose_run_dir(name: str, options: TrainOptions) -> Path:
    """`--out` as given; else `runs/NAME`, numbered `runs/NAME-2`, ... for each new run, and
    the newest of them for `--resume`."""
    if options.out is not None:
        path = Path(options.out)
        has_run = checkpoint_exists(path / "checkpoints", "last")
        if options.resume and not has_run:
            raise UsageError(f"--resume: {path} holds no checkpoint to resume from")
        # A run killed before its first checkpoint has nothing to keep: start it afresh.
        if not options.resume and has_run:
            raise UsageError(
                f"{path} already holds a run\n    hint: add --resume to continue it, or choose "
                "another --out",
            )
        return path
    child_path("runs", name, "the spec name")
    numbered = (Path("runs") / (name if k == 1 else f"{name}-{k}") for k in itertools.count(1))
    existing = list(itertools.takewhile(Path.exists, numbered))
    if not options.resume:
        return Path("runs") / (name if not existing else f"{name}-{len(existing) + 1}")
    if not existing or not checkpoint_exists(existing[-1] / "checkpoints", "last"):
        raise UsageError(f"--resume: no run of {name!r} with a checkpoint under runs/")
    return existing[-1]


def reconcile_metrics(run_dir: Path, epoch: int, record: dict) -> None:
    """Make metrics.jsonl end with the checkpoint's epoch: a kill between the checkpoint
    and the metrics line lost that line (it is in the checkpoint), and lines of epochs the
    resumed run will redo must go."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    records = [r for r in map(parse_record, lines) if r and r["epoch"] <= epoch]
    if not records or records[-1]["epoch"] < epoch:
        records.append(record)
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def parse_record(line: str) -> dict | None:
    """A metrics.jsonl line, or None for the torn last line a kill mid-write leaves."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def read_json(path: Path) -> dict:
    """A small JSON record of a run directory (`run.json`, `normalization.json`, ...)."""
    if not path.exists():
        raise UsageError(f"{path} is missing; is {path.parent} a run directory?")
    try:
        data = json.loads(read_text_capped(path, MAX_RECORD_BYTES))
    except (UnreadableFile, ValueError) as e:
        raise UsageError(f"{path} cannot be read: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} cannot be read: expected a JSON object")
    return data


def read_history(run_dir: Path, epoch: int) -> list[dict]:
    """The records of metrics.jsonl up to `epoch` (what trackers replay on resume)."""
    path = Path(run_dir) / METRICS_FILE
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(parse_record, lines) if r and r["epoch"] <= epoch]


def run_name(run_dir: Path) -> str:
    """`digits_cnn-2`; inside a sweep `lr=0.1/seed0` (the seed alone would not say which)."""
    run_dir = Path(run_dir)
    if run_dir.name.startswith("seed"):
        return f"{run_dir.parent.name}/{run_dir.name}"
    return run_dir.name
