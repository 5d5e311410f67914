"""The Ray Tune sweep backend: each run of the grid is one Tune trial calling `train()`.

A local Ray instance is started unless an address is given (`ray://head:10001`, or `auto`
inside a cluster); nothing is fetched from the network. Trials write the same run directories
as the local backend (`<out>/<point>/seed<N>`, with `train.log`), so the sweep table and
`nnspec report` are the same; Ray's own trial records go to `<out>/ray/`. On a cluster, the
sweep directory (and a data directory, if any) must be on storage every node sees.

Each trial reports every epoch's record to Tune. With `scheduler="asha"`, Ray Tune's
ASHAScheduler (time attribute: the epoch) stops poor trials at its rungs; their runs are then
ended at their last checkpoint (`finish_run`: the best checkpoint is tested and final.json
records `stop_reason: asha`), so every row of the table has test figures.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from nnspec.compiler.errors import NnspecError, UsageError
from nnspec.runtime.lab.sweep import (
    BackendOptions,
    PlannedRun,
    RunOutcome,
    SweepSettings,
    is_finished,
    train_call,
)

RAY_DIR = "ray"
REPORTED = (int, float)  # Tune keeps numbers; the record holds nothing else


def run_ray(
    runs: Sequence[PlannedRun],
    out_dir: Path,
    settings: SweepSettings,
    options: BackendOptions,
    on_outcome: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Run the unfinished runs as Ray Tune trials; return one outcome per run, in order.

    Raises:
        UsageError: Ray Tune is not installed.
    """
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise UsageError(
            "--backend ray needs Ray Tune\n    hint: pip install \"nnspec[ray]\" "
            "(or pip install \"ray[tune]\")",
        )
    import ray
    from ray import tune

    out_dir = Path(out_dir).resolve()
    settings = portable_settings(settings)
    pending = [i for i, planned in enumerate(runs) if not is_finished(out_dir / planned.relative_dir)]
    outcomes: dict[int, RunOutcome] = {
        i: RunOutcome(planned, "skipped") for i, planned in enumerate(runs) if i not in pending
    }
    # Tune's console tables would interleave with the sweep's own progress lines.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    started_here = not ray.is_initialized()
    if started_here:
        _start_ray(options)
    try:
        if pending:
            trial = tune.with_resources(
                tune.with_parameters(_trial, runs=list(runs), settings=settings, out=str(out_dir)),
                {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
            )
            tuner = tune.Tuner(
                trial,
                param_space={"index": tune.grid_search(pending)},
                tune_config=tune.TuneConfig(
                    scheduler=_scheduler(options, settings),
                    max_concurrent_trials=options.parallel,
                    reuse_actors=True,  # one worker process (and torch import) per slot
                ),
                run_config=tune.RunConfig(
                    name="sweep", storage_path=str(out_dir / RAY_DIR), verbose=0
                ),
            )
            for result in tuner.fit():
                index = result.config["index"]
                outcomes[index] = _outcome(runs[index], out_dir, result)
            _finish_stopped(runs, out_dir, settings, options, outcomes)
    finally:
        if started_here:
            ray.shutdown()
    ordered = [outcomes[i] for i in range(len(runs))]
    if on_outcome is not None:
        for outcome in ordered:
            on_outcome(outcome)
    return ordered


def portable_settings(settings: SweepSettings) -> SweepSettings:
    """Paths that exist here made absolute, and MLflow's default store resolved, so trials
    running in another directory (or on another node of a shared file system) find them."""
    from nnspec.runtime.train.tracking.mlflow import default_tracking_uri

    def absolute(value: str | None) -> str | None:
        return str(Path(value).resolve()) if value and Path(value).exists() else value

    track = [f"mlflow:{default_tracking_uri()}" if t == "mlflow" else t for t in settings.track]
    return dataclasses.replace(
        settings, spec=absolute(settings.spec), data=absolute(settings.data), track=track
    )


def _start_ray(options: BackendOptions) -> None:
    import ray

    # Trials keep the driver's working directory: relative paths a spec names still resolve.
    runtime_env = {"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}}
    if options.address is not None:
        ray.init(address=options.address, runtime_env=runtime_env, log_to_driver=False)
        return
    cpus = None
    if options.parallel is not None:
        cpus = max(1, round(options.parallel * options.cpus_per_trial))
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        runtime_env=runtime_env,
        log_to_driver=False,
        configure_logging=False,
    )


def _scheduler(options: BackendOptions, settings: SweepSettings):
    if options.scheduler is None:
        return None
    if options.scheduler != "asha":
        raise UsageError(f"unknown scheduler {options.scheduler!r}; the one there is: asha")
    from ray.tune.schedulers import ASHAScheduler

    from nnspec.runtime.train.early_stopping import Monitor

    monitor = Monitor.of(options.metric, options.mode)
    return ASHAScheduler(
        time_attr="epoch",
        metric=monitor.metric,
        mode=monitor.mode,
        # Beyond the last epoch: a trial reaching max_t is stopped at its last report, before
        # its run could write final.json.
        max_t=(settings.epochs or _spec_epochs(settings)) + 1,
        grace_period=options.grace_period,
        reduction_factor=2,
    )


def _spec_epochs(settings: SweepSettings) -> int:
    from nnspec.compiler import load_spec
    from nnspec.compiler.training_schema import TrainConfig

    spec = load_spec(settings.spec, overrides=settings.overrides)
    return (spec.train or TrainConfig()).epochs


def _trial(config: dict, runs: list, settings: SweepSettings, out: str) -> None:
    """One Tune trial: `train()` of one planned run, each epoch's record reported to Tune."""
    import torch
    from ray import tune

    from nnspec.runtime.train.trainer import train

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    planned = runs[config["index"]]
    run_dir = Path(out) / planned.relative_dir
    run_dir.mkdir(parents=True, exist_ok=True)

    def report(record: dict) -> None:
        tune.report({k: v for k, v in record.items() if isinstance(v, REPORTED)})

    with open(run_dir / "train.log", "a") as log:

        def write(line: str) -> None:
            print(line, file=log, flush=True)

        try:
            spec, options = train_call(settings, planned, run_dir)
            write(f"$ ray trial {planned.relative_dir}")
            train(spec, options, log=write, on_epoch=report)
        except NnspecError as error:
            write(f"error: {error}")
            raise


def _outcome(planned: PlannedRun, out_dir: Path, result) -> RunOutcome:
    seconds = float(result.metrics.get("time_total_s", 0.0)) if result.metrics else 0.0
    if result.error is not None:
        return RunOutcome(planned, "failed", 1, seconds)
    if is_finished(out_dir / planned.relative_dir):
        return RunOutcome(planned, "done", 0, seconds)
    return RunOutcome(planned, "stopped", 0, seconds)


def _finish_stopped(runs, out_dir: Path, settings, options: BackendOptions, outcomes: dict) -> None:
    """End the runs the scheduler stopped at their checkpoint: on a cluster as Ray tasks with
    the trials' resources (testing a model needs what training it did), on a local instance in
    this process (no new worker process to start)."""
    import ray

    stopped = [i for i, outcome in outcomes.items() if outcome.status == "stopped"]
    if options.address is None:
        done = [_finish_stopped_run(runs[i], settings, str(out_dir)) for i in stopped]
    else:
        finish = ray.remote(num_cpus=options.cpus_per_trial, num_gpus=options.gpus_per_trial)(
            _finish_stopped_run
        )
        done = ray.get([finish.remote(runs[i], settings, str(out_dir)) for i in stopped])
    for index, ok in zip(stopped, done, strict=True):
        if not ok:
            outcomes[index] = dataclasses.replace(outcomes[index], status="failed", returncode=1)


def _finish_stopped_run(planned: PlannedRun, settings: SweepSettings, out: str) -> bool:
    from nnspec.runtime.train.trainer import finish_run

    run_dir = Path(out) / planned.relative_dir
    with open(run_dir / "train.log", "a") as log:
        try:
            spec, options = train_call(settings, planned, run_dir)
            finish_run(spec, options, "asha", log=lambda line: print(line, file=log, flush=True))
        except NnspecError as error:
            print(f"error: {error}", file=log, flush=True)
            return False
    return True
