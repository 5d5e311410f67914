"""A grid of spec overrides x seeds, run as `nnspec train` processes, collected into one table.

A sweep directory holds one run directory per (grid point, seed), named
`<point>/seed<N>`, plus `sweep.json` (the plan), `results.json` and `results.csv`. A run that
already has `final.json` is finished and is skipped when the sweep is run again, so an
interrupted sweep resumes where it stopped.

The runs are executed by a backend from `BACKENDS`: `local` (this module: `nnspec train`
processes, N at a time) or `ray` (sweep_ray.py: Ray Tune trials calling the same `train()` on
a local Ray instance or a cluster). Both write the same run directories, so the table and
`nnspec report` do not depend on the backend.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import itertools
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nnspec.compiler.errors import UsageError
from nnspec.compiler.paths import child_path

FINAL_FILE = "final.json"
METRICS_FILE = "metrics.jsonl"
PLAN_FILE = "sweep.json"


@dataclass(frozen=True)
class GridPoint:
    """One combination of grid values: a display name and the overrides it applies."""

    name: str
    overrides: tuple[str, ...]
    values: tuple[tuple[str, str], ...]  # (axis, value) pairs shown in the results table


@dataclass(frozen=True)
class PlannedRun:
    point: GridPoint
    seed: int

    @property
    def relative_dir(self) -> str:
        return f"{self.point.name}/seed{self.seed}"


@dataclass
class RunOutcome:
    run: PlannedRun
    status: str  # "done", "stopped" (by a scheduler), "skipped" (finished earlier) or "failed"
    returncode: int = 0
    seconds: float = 0.0


@dataclass
class SweepSettings:
    """What every run of a sweep shares."""

    spec: str
    epochs: int | None = None
    data: str | None = None
    overrides: list[str] = field(default_factory=list)
    """`--set PATH=VALUE` overrides shared by every run (after the grid point's own)."""
    track: list[str] = field(default_factory=list)
    """`--track` values passed to every run."""


@dataclass
class BackendOptions:
    """How a backend executes the runs (the local backend uses `parallel` only)."""

    parallel: int | None = None
    """Runs at once; None: 1 locally, as many as the Ray cluster's resources allow."""
    address: str | None = None
    """A Ray cluster to join (`ray://host:10001`, `auto`); None: start a local instance."""
    scheduler: str | None = None
    """`asha`: stop poor trials early (Ray Tune's ASHAScheduler)."""
    metric: str = "val_accuracy"
    mode: str = "auto"
    grace_period: int = 1
    """Epochs every trial runs before ASHA may stop it."""
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0


# backend name -> "module:function" running (runs, out_dir, settings, options, on_outcome)
BACKENDS: dict[str, str] = {
    "local": "nnspec.runtime.lab.sweep:run_local",
    "ray": "nnspec.runtime.lab.sweep_ray:run_ray",
}


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """`--grid key=v1,v2` items as (key, values) axes; a key given twice is an error."""
    axes: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        values = [v.strip() for v in raw.split(",")] if sep else []
        if not key or not values or any(v == "" for v in values):
            raise UsageError(
                f"--grid expects KEY=V1,V2,..., got {item!r}",
            )
        if key in (k for k, _ in axes):
            raise UsageError(f"--grid key {key!r} is given twice; list all its values once")
        axes.append((key, values))
    return axes


def grid_points(axes: Sequence[tuple[str, Sequence[str]]]) -> list[GridPoint]:
    """The cartesian product of the axes, in order (the last axis varies fastest)."""
    short = [key.rsplit(".", 1)[-1] for key, _ in axes]
    # "optimizer.momentum" reads as "momentum" in run names, unless two axes end alike.
    labels = short if len(set(short)) == len(short) else [key for key, _ in axes]
    points = []
    for combination in itertools.product(*(values for _, values in axes)):
        pairs = tuple((key, str(v)) for (key, _), v in zip(axes, combination, strict=True))
        name = ",".join(f"{label}={v}" for label, v in zip(labels, combination, strict=True))
        name = name or "base"
        points.append(
            GridPoint(
                name=_safe_name(name),
                overrides=tuple(f"{k}={v}" for k, v in pairs),
                values=pairs,
            )
        )
    return points


def plan_runs(points: Sequence[GridPoint], seeds: Sequence[int]) -> list[PlannedRun]:
    """Every point with every seed, points outermost so one point's seeds finish together."""
    names = [p.name for p in points]
    for name in names:
        child_path(".", name, "the run name")  # each point is one folder of the sweep
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"two grid points share the run name {duplicates[0]!r}")
    if not seeds:
        raise UsageError("a sweep needs at least one seed")
    return [PlannedRun(point, seed) for point in points for seed in seeds]


def train_command(settings: SweepSettings, run: PlannedRun, run_dir: Path) -> list[str]:
    """The `nnspec train` command line of one run (also what a job array would execute)."""
    command = [sys.executable, "-m", "nnspec.runtime.cli", "train", settings.spec]
    command += ["--out", str(run_dir), "--seed", str(run.seed)]
    if settings.epochs is not None:
        command += ["--epochs", str(settings.epochs)]
    if settings.data:
        command += ["--data", settings.data]
    for override in [*run.point.overrides, *settings.overrides]:
        command += ["--set", override]
    for tracker in settings.track:
        command += ["--track", tracker]
    if has_checkpoint(run_dir):
        command.append("--resume")  # interrupted earlier: continue instead of starting over
    return command


def train_call(settings: SweepSettings, run: PlannedRun, run_dir: Path):
    """(spec, TrainOptions) of one run for `nnspec.runtime.train.train`: the same run as
    `train_command`, in this process."""
    from nnspec.compiler import load_spec
    from nnspec.runtime.train.options import TrainOptions

    spec = load_spec(settings.spec, overrides=[*run.point.overrides, *settings.overrides])
    options = TrainOptions(
        data=settings.data,
        epochs=settings.epochs,
        seed=run.seed,
        out=run_dir,
        resume=has_checkpoint(run_dir),
        progress=False,
        track=list(settings.track),
    )
    return spec, options


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "last.safetensors").exists()


def execute_sweep(
    backend: str,
    runs: Sequence[PlannedRun],
    out_dir: Path,
    settings: SweepSettings,
    options: BackendOptions,
    on_outcome: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Run the sweep's unfinished runs with a backend of `BACKENDS`.

    Raises:
        UsageError: an unknown backend, or options the backend does not take.
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown sweep backend {backend!r}; choose {', '.join(BACKENDS)}")
    module, _, function = BACKENDS[backend].partition(":")
    run = getattr(importlib.import_module(module), function)
    return run(runs, Path(out_dir), settings, options, on_outcome)



def run_local(
    runs: Sequence[PlannedRun],
    out_dir: Path,
    settings: SweepSettings,
    options: BackendOptions,
    on_outcome: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """The local backend: `nnspec train` processes, `options.parallel` at a time."""
    ray_only = [
        name
        for name, value in (("--address", options.address), ("--scheduler", options.scheduler))
        if value is not None
    ]
    if ray_only:
        raise UsageError(f"{', '.join(ray_only)} needs --backend ray")
    parallel = options.parallel or 1
    runner = subprocess_runner(settings, single_thread=parallel > 1)
    return run_sweep(runs, out_dir, runner, parallel, on_outcome=on_outcome)


def is_finished(run_dir: Path) -> bool:
    return (run_dir / FINAL_FILE).is_file()


Runner = Callable[[PlannedRun, Path], int]


def subprocess_runner(settings: SweepSettings, single_thread: bool) -> Runner:
    """A runner that executes `nnspec train` and logs its output to `<run_dir>/train.log`.

    `single_thread` pins each process to one intra-op thread, so N parallel runs share N cores
    instead of oversubscribing them.
    """
    env = dict(os.environ)
    if single_thread:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def run(planned: PlannedRun, run_dir: Path) -> int:
        run_dir.mkdir(parents=True, exist_ok=True)
        command = train_command(settings, planned, run_dir)
        with open(run_dir / "train.log", "a") as log:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            return subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False
            ).returncode

    return run


def run_sweep(
    runs: Sequence[PlannedRun],
    out_dir: Path,
    runner: Runner,
    parallel: int = 1,
    on_outcome: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Run every unfinished run with `runner`, at most `parallel` at a time."""
    if parallel < 1:
        raise UsageError(f"--parallel must be at least 1, got {parallel}")

    def execute(planned: PlannedRun) -> RunOutcome:
        run_dir = out_dir / planned.relative_dir
        if is_finished(run_dir):
            outcome = RunOutcome(planned, "skipped")
        else:
            start = time.perf_counter()
            code = runner(planned, run_dir)
            ok = code == 0 and is_finished(run_dir)
            seconds = time.perf_counter() - start
            outcome = RunOutcome(planned, "done" if ok else "failed", code, seconds)
        if on_outcome:
            on_outcome(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(execute, runs))


def write_plan(out_dir: Path, settings: SweepSettings, runs: Sequence[PlannedRun]) -> None:
    """`sweep.json`: the settings and every run's command, so the sweep can be re-created."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = {
        "settings": dataclasses.asdict(settings),
        "runs": [
            {
                "dir": r.relative_dir,
                "point": r.point.name,
                "values": dict(r.point.values),
                "seed": r.seed,
                "command": train_command(settings, r, out_dir / r.relative_dir),
            }
            for r in runs
        ],
    }
    (out_dir / PLAN_FILE).write_text(json.dumps(plan, indent=2) + "\n")


def collect_rows(out_dir: Path, runs: Sequence[PlannedRun]) -> list[dict]:
    """One row per run: its grid values, seed, status, final.json scalars and last epoch."""
    rows = []
    for planned in runs:
        run_dir = out_dir / planned.relative_dir
        row: dict = {"point": planned.point.name, **dict(planned.point.values)}
        row["seed"] = planned.seed
        row["status"] = "finished" if is_finished(run_dir) else "missing"
        if is_finished(run_dir):
            row.update(_scalars(json.loads((run_dir / FINAL_FILE).read_text())))
            last = read_metrics(run_dir)[-1:] or [{}]
            row.update({f"last_{k}": v for k, v in _scalars(last[0]).items()})
        rows.append(row)
    return rows


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Mean and std (sample std, 0 for one seed) over seeds of every numeric column, per point."""
    by_point: dict[str, list[dict]] = {}
    for row in rows:
        by_point.setdefault(row["point"], []).append(row)
    summary = []
    for point, group in by_point.items():
        finished = [r for r in group if r["status"] == "finished"]
        entry: dict = {"point": point, "runs": len(group), "finished": len(finished)}
        columns = [k for k in finished[0] if k != "seed"] if finished else []
        for column in columns:
            values = [r.get(column) for r in finished]
            if all(_is_number(v) for v in values):
                mean = sum(values) / len(values)
                var = sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
                entry[column] = {"mean": mean, "std": math.sqrt(var)}
        summary.append(entry)
    return summary


def write_results(out_dir: Path, rows: Sequence[dict], summary: Sequence[dict]) -> None:
    """`results.json` (rows and per-point summary) and `results.csv` (rows)."""
    (out_dir / "results.json").write_text(
        json.dumps({"rows": list(rows), "summary": list(summary)}, indent=2) + "\n"
    )
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(out_dir / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def read_metrics(run_dir: Path) -> list[dict]:
    """The per-epoch records of a run's `metrics.jsonl` (empty when there is none)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summary_rows(summary: Sequence[dict], metrics: Sequence[str], missing: str = "-") -> list[list]:
    """One row per grid point: point, finished/runs, then `mean ± std` of each metric."""
    rows = []
    for entry in summary:
        row = [entry["point"], f"{entry['finished']}/{entry['runs']}"]
        for column in metrics:
            stat = entry.get(column)
            row.append(f"{stat['mean']:.4g} ± {stat['std']:.2g}" if stat else missing)
        rows.append(row)
    return rows


def format_summary(summary: Sequence[dict], columns: Sequence[str]) -> str:
    """A text table of `mean ± std` for the given columns, one line per grid point."""
    present = [c for c in columns if any(c in entry for entry in summary)]
    lines = [["point", "runs", *present], *summary_rows(summary, present)]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _scalars(record: dict) -> dict:
    return {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool))}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", name)
