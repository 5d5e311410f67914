"""What an experiment measures beyond a run's own numbers.

Two things a claim may need that `final.json` and the last epoch do not give:

- **epochs to a target** (`targets: {train_loss: {below: 0.1}}`): from a run's per-epoch
  records (`metrics.jsonl`), the first epoch whose `train_loss` is at or below 0.1, as the
  column `epochs_to_train_loss`, plus `reached_train_loss` (1 or 0). A run that never reaches
  the target counts as `epochs + 1`: a lower bound on the true value (the run was cut off), so a
  mean over seeds that includes it understates how slow that variant is.
- **curvature** (`hessian: {at: [init, trained], ...}`): the top Hessian eigenvalue and the
  Hutchinson trace of the training loss (runtime/lab/hessian.py, what `nnspec hessian` prints),
  for the run's freshly initialised weights (the same seed the trainer used) and for its
  trained weights, as `hessian_top_init`, `hessian_trace_init`, `hessian_top_trained`,
  `hessian_trace_trained`. Cached in the run directory, so a resumed experiment does not
  recompute them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, PositiveInt, model_validator

HESSIAN_METRICS_FILE = "experiment_hessian.json"
DERIVED_PREFIXES = ("epochs_to_", "reached_", "hessian_")
"""How the columns added here begin (the report shows them beside a sweep's usual ones)."""


class Target(BaseModel):
    """A per-epoch metric's threshold: reached when the value is `below` (<=) or `above` (>=)."""

    model_config = ConfigDict(extra="forbid")
    below: float | None = None
    above: float | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        if (self.below is None) == (self.above is None):
            raise ValueError("a target gives exactly one of `below` or `above`")
        return self

    def reached(self, value: float) -> bool:
        return value <= self.below if self.below is not None else value >= self.above


class HessianRecording(BaseModel):
    """Which weights of each run get their curvature measured, and how finely."""

    model_config = ConfigDict(extra="forbid")
    at: list[Literal["init", "trained"]] = ["init", "trained"]
    batches: PositiveInt = 2
    batch_size: PositiveInt = 128
    top_k: PositiveInt = 1
    steps: PositiveInt = 20
    trace_samples: PositiveInt = 10
    checkpoint: Literal["last", "best"] = "last"


# ------------------------------------------------------------------------------ epochs to target


def epochs_to_target(records: Sequence[dict], metric: str, target: Target, epochs: int) -> int:
    """The first epoch (1-based, as the records number them) whose `metric` reaches `target`;
    `epochs + 1` when none does."""
    for index, record in enumerate(records):
        value = record.get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and target.reached(value):
            return int(record.get("epoch", index + 1))
    return epochs + 1


def target_metrics(records: Sequence[dict], targets: dict[str, Target], epochs: int) -> dict:
    """`epochs_to_METRIC` and `reached_METRIC` (1 or 0) for every target."""
    columns: dict[str, float] = {}
    for metric, target in targets.items():
        epoch = epochs_to_target(records, metric, target, epochs)
        columns[f"epochs_to_{metric}"] = epoch
        columns[f"reached_{metric}"] = int(epoch <= epochs)
    return columns


# ------------------------------------------------------------------------------ curvature


def hessian_metrics(run_dir: Path, recording: HessianRecording) -> dict:
    """`hessian_top_{at}` and `hessian_trace_{at}` of one finished run (cached in the run)."""
    cache = Path(run_dir) / HESSIAN_METRICS_FILE
    key = recording.model_dump()
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("recording") == key:
            return cached["metrics"]
    columns: dict[str, float] = {}
    for at in recording.at:
        spectrum = run_spectrum(run_dir, at, recording)
        columns[f"hessian_top_{at}"] = spectrum.top_eigenvalues[0]
        columns[f"hessian_trace_{at}"] = spectrum.trace
    cache.write_text(json.dumps({"recording": key, "metrics": columns}, indent=2) + "\n")
    return columns


def run_spectrum(run_dir: Path, at: str, recording: HessianRecording):
    """The Hessian spectrum of a run's training loss at its initial or its trained weights.

    The initial weights are rebuilt from the run's spec and seed (`build_model(spec, seed)`, as
    the trainer builds them); the batches are the first `recording.batches` training batches of
    the run's data, in a fixed order, the same for both.
    """
    from nnspec.compiler import build_model, load_spec
    from nnspec.runtime.lab.hessian import model_spectrum, training_batches
    from nnspec.runtime.train.evaluate import load_trained_model, read_task_state
    from nnspec.runtime.train.tasks import make_task

    run_dir = Path(run_dir)
    settings = json.loads((run_dir / "run.json").read_text()).get("settings", {})
    if at == "trained":
        model, spec = load_trained_model(run_dir, recording.checkpoint, "cpu")
    else:
        spec = load_spec(run_dir / "spec.yaml")
        model = build_model(spec, seed=int(settings.get("seed", 0)))
    model = model.float()
    data = settings.get("data") or "digits"
    batches = training_batches(model, spec, data, recording.batches, recording.batch_size)
    task = make_task(spec, model.graph.output_shape)
    task.restore(read_task_state(run_dir))
    return model_spectrum(
        model, task.eval_loss, batches, recording.top_k, recording.steps,
        recording.trace_samples,
    )  # fmt: skip


# ------------------------------------------------------------------------------ rows


def add_run_metrics(
    rows: list[dict],
    run_dirs: Sequence[Path],
    targets: dict[str, Target],
    hessian: HessianRecording | None,
    epochs: int,
) -> None:
    """Add the derived columns to each finished run's row (rows and run_dirs in one order)."""
    from nnspec.runtime.lab.sweep import read_metrics

    for row, run_dir in zip(rows, run_dirs, strict=True):
        if row.get("status") != "finished":
            continue
        if targets:
            row.update(target_metrics(read_metrics(run_dir), targets, epochs))
        if hessian is not None:
            row.update(hessian_metrics(run_dir, hessian))
