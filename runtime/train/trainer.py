"""`nnspec train`: a spec, its data and settings become a resumable run directory.

The run directory holds `spec.yaml` (resolved: concrete normalisation, effective `train:`
settings, class labels), `normalization.json`, `task.json` (the task's record and what it
learnt from the data), `run.json` (spec hash and settings, for `--resume` and `nnspec eval`),
`metrics.jsonl`, `tb/` (TensorBoard), `tracking.json` (the tracker runs, see tracking/),
`init_from.json` (what `--init-from` loaded), `checkpoints/` (`last` and `best`, see
checkpoint.py) and `final.json`. The spec's task (tasks/) decides the loss, the targets, the
metrics and the default metric that picks `best`.

Under `torchrun` (RANK and WORLD_SIZE set) the same code runs DDP: one process per device, a
distributed sampler, `--batch-size` per process, and only rank 0 writing files.

Size: `_Run` is the training session; its steps (set-up, resume, epoch, end-of-epoch
checkpoint, finish) share the run's state. Everything that does not need that state lives in
its own module (options, run_dir, distributed, device, data, augment, tasks, loop, records,
optim, schedules, checkpoint, finetune, recipes, tracking).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from torch import nn

from nnspec.compiler.errors import UsageError
from nnspec.compiler.training_schema import OptimizerConfig, ScheduleConfig, TrainConfig
from nnspec.runtime.train.augment import augment_training_split
from nnspec.runtime.train.checkpoint import (
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    strict_json,
    write_json_atomic,
    write_text_atomic,
)
from nnspec.runtime.train.data import (
    DataSplits,
    channel_stats,
    load_spec_data,
    make_loader,
    undeclared_range_note,
)
from nnspec.runtime.train.device import resolve_device
from nnspec.runtime.train.distributed import Distributed
from nnspec.runtime.train.early_stopping import Monitor
from nnspec.runtime.train.evaluate import TASK_FILE, evaluate, read_task_state, spec_section
from nnspec.runtime.train.failures import is_out_of_memory, memory_failure, storage_failure
from nnspec.runtime.train.loop import Session, metric_names, train_epoch, training_loss
from nnspec.runtime.train.optim import build_optimizer, refuse_closure_conflicts
from nnspec.runtime.train.options import TrainOptions
from nnspec.runtime.train.progress import ProgressBar
from nnspec.runtime.train.recipes import EMA, Recipes
from nnspec.runtime.train.records import epoch_line, metric_text
from nnspec.runtime.train.run_dir import choose_run_dir, read_json, reconcile_metrics
from nnspec.runtime.train.schedules import Schedule
from nnspec.runtime.train.tasks import Task, make_task

EVAL_BATCH_SIZE = 256
# What a run's checkpoints carry as "state"; a new run starts from this.
FRESH_STATE = {"epoch": 0, "step": 0, "best_epoch": 0, "train_seconds": 0.0}
__all__ = ["train", "finish_run", "training_loss", "TrainOptions"]
EpochHook = Callable[[dict], "str | None"]


def train(
    spec,
    options: TrainOptions,
    log: Callable[[str], None] = print,
    on_epoch: EpochHook | None = None,
) -> dict:
    """Train `spec` (a loaded Spec) as `options` say; return what `final.json` holds.

    `on_epoch(record)` is called on rank 0 after each epoch's checkpoint with the epoch's
    metrics (what metrics.jsonl gets); a string it returns stops training there, as early
    stopping would, and is recorded as `stop_reason` in final.json.

    Raises UsageError (bad options, an existing run without --resume), DataError (data missing
    or not fitting the spec), TrainingError (a non-finite loss; the last good checkpoint stays).
    """
    return _session(spec, options, log, lambda run: run.execute(on_epoch))


def finish_run(spec, options: TrainOptions, reason: str, log: Callable[[str], None] = print) -> dict:
    """End the run in `options.out` at its `last` checkpoint without training further: test
    its `best` checkpoint and write final.json with `stop_reason` (what a sweep does for the
    trials its scheduler stopped). Returns final.json."""
    options = dataclasses.replace(options, resume=True)
    return _session(spec, options, log, lambda run: run.execute(None, stop_reason=reason))


def _session(spec, options: TrainOptions, log, body) -> dict:
    """Run `body(_Run)` inside this process's place in a torchrun job (if any)."""
    ctx = Distributed.from_env()
    if ctx.active and options.device == "auto" and torch.cuda.is_available():
        device = torch.device("cuda", ctx.local_rank)
    else:
        device = resolve_device(options.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    ctx.start(device)
    run = None
    try:
        run = _Run(spec, options, ctx, device, log if ctx.is_main else _quiet)
        return body(run)
    except OSError as error:  # disk full, permission denied, a file that vanished
        raise storage_failure(error, run.checkpoints if run else None) from error
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        raise memory_failure(error, run.checkpoints if run else None) from None
    finally:
        ctx.stop()


def _quiet(_: str) -> None:
    """The log of ranks other than 0."""


class _Run:
    """One training session: set up from the spec (and the run directory when resuming), then
    loop over epochs. Split into steps so each reads on its own."""

    def __init__(self, spec, options: TrainOptions, ctx: Distributed, device, log):
        self.spec, self.options, self.ctx, self.device, self.log = spec, options, ctx, device, log
        self.run_dir = self._agree_on_run_dir()
        self.checkpoints = self.run_dir / "checkpoints"
        previous = read_json(self.run_dir / "run.json") if options.resume else None
        # A run resumes from the spec it started with, or from the spec.yaml it wrote.
        if previous and spec.spec_hash not in previous["spec_hashes"]:
            raise UsageError(
                f"the spec differs from the one {self.run_dir} was started with\n    hint: "
                "resume with the same spec file and --set options (or the run's spec.yaml), "
                "or start a new run",
            )
        self.spec_hash = previous["spec_hashes"][0] if previous else spec.spec_hash
        base = previous["settings"] if previous else spec_section(spec.train)
        self.settings = TrainConfig.model_validate({**base, **options.setting_overrides()})
        self.optimizer_config = OptimizerConfig.model_validate(spec_section(spec.optimizer))
        self.schedule_config = ScheduleConfig.model_validate(spec_section(spec.schedule))
        if self.optimizer_config.type == "lbfgs":
            refuse_closure_conflicts(self.settings, ctx.active)
        self.started = time.perf_counter()
        self.amp = self.settings.amp and device.type == "cuda"
        if self.settings.amp and not self.amp:
            log("note: --amp needs CUDA; training in float32")

    def _agree_on_run_dir(self) -> Path:
        """Rank 0 picks the run directory (or finds the options wrong); every rank learns which,
        so all of them fail alike instead of the others waiting for rank 0 forever."""
        choice = None
        if self.ctx.is_main:
            try:
                choice = ("run_dir", str(choose_run_dir(self.spec.name, self.options)))
            except UsageError as error:
                choice = ("error", str(error))
        kind, value = self.ctx.share(choice)
        if kind == "error":
            raise UsageError(value)
        return Path(value)

    def execute(self, on_epoch: EpochHook | None, stop_reason: str | None = None) -> dict:
        from nnspec.compiler import build_model

        settings, ctx = self.settings, self.ctx
        model = build_model(self.spec, seed=settings.seed)
        output_shape = model.graph.output_shape
        self.task = task = make_task(self.spec, output_shape)
        data = load_spec_data(self.spec, settings.data, settings, output_shape)
        task.check_data(model.graph, data)
        self.task_state = self._fit_task(task, data)
        task.prepare_model(model)
        normalization = self._normalize(model, data)
        note = undeclared_range_note(self.spec, data)
        if note:
            self.log(note)
        mixer = augment_training_split(data, self.spec, settings, settings.seed)
        init_report = self._init_from(model)
        memory_format = torch.channels_last if settings.channels_last else torch.preserve_format
        model.to(self.device, memory_format=memory_format)
        # Built before any freezing, so the optimizer keeps one layout for the whole run.
        optimizer = build_optimizer(model, self.optimizer_config)
        loader = make_loader(
            data.train,
            settings.batch_size,
            train=True,
            seed=settings.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
            num_workers=settings.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        val_loader = make_loader(
            data.val, EVAL_BATCH_SIZE, train=False, rank=ctx.rank, world_size=ctx.world_size
        )
        steps_per_epoch = math.ceil(len(loader) / settings.accumulate)
        schedule = Schedule(self.schedule_config, steps_per_epoch, settings.epochs)
        scaler = (
            torch.amp.GradScaler("cuda") if self.amp and settings.amp_dtype == "float16" else None
        )
        best = Monitor(f"val_{task.monitor}", "max" if task.higher_is_better else "min")
        recipes = Recipes(model, settings, metric_names(task, settings), best)
        if recipes.freezer is not None:
            self.log(recipes.freezer.describe())
        # Dropout draws from the global RNG; a rank-specific seed gives ranks different masks.
        torch.manual_seed(settings.seed + ctx.rank)
        state = dict(FRESH_STATE)
        if self.options.resume:
            state = self._restore(model, optimizer, scaler, recipes)
        if ctx.is_main:
            resolved = self._write_run_files(normalization, data, init_report)
            tracking = self._start_tracking(resolved, state)
        else:
            tracking = None
        session = Session(
            model, optimizer, scaler, schedule, recipes, state, settings, self.device, ctx,
            task, self.amp, self.checkpoints, tracking, mixer,
        )
        progress = ctx.is_main and _want_progress(self.options)
        try:
            stop_reason = stop_reason or ("early_stopping" if recipes.stopped else None)
            net = None
            for epoch in range(state["epoch"] + 1, settings.epochs + 1):
                if stop_reason:
                    break
                if recipes.start_epoch(epoch) or net is None:
                    net = self._wrap(model)
                record = train_epoch(session, epoch, net, loader, progress)
                record.update(self._val_metrics(model, val_loader, "val_"))
                if recipes.ema is not None:
                    record.update(self._val_metrics(recipes.ema.module, val_loader, "val_ema_"))
                stop_reason = self._end_epoch(session, record, on_epoch)
            final = self._finish(session, data, stop_reason)
        except BaseException as error:
            if tracking is not None:
                killed = not isinstance(error, Exception)  # KeyboardInterrupt, SystemExit, ...
                with contextlib.suppress(Exception):  # the training error is the one to report
                    tracking.finish("killed" if killed else "failed")
            raise
        if tracking is not None:
            tracking.finish("finished")
        return final

    def _wrap(self, model) -> nn.Module:
        """The module the loop calls: DDP over the trainable parameters (so it is rebuilt when
        they change), then torch.compile."""
        net = model
        if self.ctx.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if self.settings.compile:
            net = torch.compile(net)
        return net

    def _fit_task(self, task: Task, data: DataSplits) -> dict:
        """What the task learns from the training split (regression's target statistics),
        or, when resuming, what it learnt when the run started."""
        if self.options.resume:
            state = read_task_state(self.run_dir)
            task.restore(state)
            return state
        return task.fit(data)

    def _normalize(self, model, data: DataSplits) -> dict:
        normalize = self.spec.normalize
        if normalize == "auto":
            if self.options.resume:
                saved = read_json(self.run_dir / "normalization.json")
                mean, std = saved["mean"], saved["std"]
            else:
                mean, std = channel_stats(data.train)
            model.set_normalization(mean, std)
            return {"mean": mean, "std": std, "source": "auto"}
        if normalize is None:
            return {"mean": None, "std": None, "source": "none"}
        return {"mean": list(normalize.mean), "std": list(normalize.std), "source": "spec"}

    def _init_from(self, model):
        """Load `--init-from` weights into a new run (a resumed one has its checkpoint)."""
        if self.options.init_from is None:
            return None
        if self.options.resume:
            self.log("note: --init-from is ignored when resuming (the checkpoint has the weights)")
            return None
        from nnspec.runtime.train.finetune import init_from_weights

        report = init_from_weights(model, self.options.init_from, strict=self.options.strict)
        for line in report.lines():
            self.log(line)
        return report

    def _restore(self, model, optimizer, scaler, recipes: Recipes) -> dict:
        checkpoint = load_checkpoint(self.checkpoints, "last")
        model.load_state_dict(checkpoint.weights)
        optimizer.load_state_dict(checkpoint.optimizer_state)
        restore_rng(checkpoint.rng)
        if scaler is not None and checkpoint.info.get("grad_scaler"):
            scaler.load_state_dict(checkpoint.info["grad_scaler"])
        state = {**FRESH_STATE, **checkpoint.info["state"]}
        recipes.load_state_dict(state.get("recipes", {}), checkpoint.extra_weights)
        if self.ctx.is_main:
            reconcile_metrics(self.run_dir, state["epoch"], checkpoint.info["metrics"])
        self.log(f"resuming {self.run_dir} after epoch {state['epoch']} (step {state['step']})")
        return state

    def _write_run_files(self, normalization: dict, data: DataSplits, init_report) -> dict:
        """Write the run's description files; return the resolved spec (as data)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resolved = self.spec.to_data()
        if normalization["source"] == "auto":
            resolved["normalize"] = {"mean": normalization["mean"], "std": normalization["std"]}
        resolved["train"] = self.settings.model_dump(mode="json")
        if not resolved.get("labels") and data.labels:
            resolved["labels"] = data.labels
        from nnspec.compiler import load_spec

        spec_path = self.run_dir / "spec.yaml"
        write_text_atomic(spec_path, yaml.safe_dump(resolved, sort_keys=False))
        write_json_atomic(self.run_dir / "normalization.json", normalization)
        write_json_atomic(self.run_dir / TASK_FILE,
                          {"task": self.task.metadata(), "state": self.task_state})  # fmt: skip
        if init_report is not None:
            write_json_atomic(self.run_dir / "init_from.json", init_report.to_json())
        write_json_atomic(
            self.run_dir / "run.json",
            {
                "spec": self.spec.name,
                "spec_source": str(self.spec.source),
                "spec_hashes": [self.spec_hash, load_spec(spec_path).spec_hash],
                "settings": self.settings.model_dump(mode="json"),
                "task": self.task.name,
                "data": {
                    "source": data.source,
                    "classes": data.num_classes,
                    "train": len(data.train),
                    "val": len(data.val),
                    "test": len(data.test),
                },
                "world_size": self.ctx.world_size,
                "device": str(self.device),
            },
        )
        if self.options.resume:
            return resolved
        self.log(
            f"run {self.run_dir}: {data.source} ({len(data.train)} train, {len(data.val)} val, "
            f"{len(data.test)} test), {self.settings.epochs} epochs on {self.device}"
            + (f" x {self.ctx.world_size} processes" if self.ctx.active else "")
        )
        return resolved

    def _start_tracking(self, resolved: dict, state: dict):
        from nnspec.runtime.train.tracking.session import start_tracking

        return start_tracking(
            self.run_dir, self.spec.name, resolved, self.options, state["epoch"], self.log
        )

    def _val_metrics(self, model, val_loader, prefix: str) -> dict:
        result = evaluate(
            model,
            val_loader,
            self.device,
            self.task,
            channels_last=self.settings.channels_last,
            amp=self.amp,
            amp_dtype=self.settings.amp_dtype,
        )
        return {f"{prefix}{k}": v for k, v in result.items()
                if k != "count" and not isinstance(v, list)}  # fmt: skip

    def _end_epoch(self, run: Session, record: dict, on_epoch: EpochHook | None) -> str | None:
        """Pick best, checkpoint, log; return why training stops after this epoch, if it does."""
        state = run.state
        state["epoch"] = record["epoch"]
        state["train_seconds"] += record["epoch_seconds"]
        outcome = run.recipes.end_epoch(record)
        if outcome.improved:
            state["best_epoch"] = state["epoch"]
        state["recipes"] = run.recipes.state_dict()
        reason = "early_stopping" if outcome.stop else None
        if self.ctx.is_main:
            info = {"state": dict(state), "metrics": record}
            if run.scaler is not None:
                info["grad_scaler"] = run.scaler.state_dict()
            extra = run.recipes.extra_weights()
            # `best` first: a run killed in between resumes from the previous `last`, redoes
            # this epoch and rewrites `best`; the other order could leave `best` stale.
            if outcome.improved:
                save_checkpoint(self.checkpoints, "best", run.model, run.optimizer, info, extra)
            save_checkpoint(self.checkpoints, "last", run.model, run.optimizer, info, extra)
            # After the checkpoint: a crash in between loses a line, never duplicates one.
            with open(self.run_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            run.tracking.log_epoch(record)
            if on_epoch is not None:
                reason = on_epoch(record) or reason
        reason = self.ctx.share(reason)
        self.log(epoch_line(record, self.settings.epochs, self.task))
        if reason == "early_stopping":
            self.log(
                f"early stopping: {run.recipes.stopper.monitor.metric} has not improved for "
                f"{run.recipes.stopper.bad_epochs} epochs"
            )
        return reason

    def _finish(self, run: Session, data: DataSplits, stop_reason: str | None) -> dict:
        self.ctx.barrier()  # rank 0 has written `best`
        state, model = run.state, run.model
        best = load_checkpoint(self.checkpoints, "best")
        test_loader = make_loader(
            data.test,
            EVAL_BATCH_SIZE,
            train=False,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
        )
        model.load_state_dict(best.weights)
        task = self.task
        test = evaluate(model, test_loader, self.device, task)
        final = {
            **{f"test_{k}": v for k, v in test.items() if k != "count"},
            "test_count": test["count"],
        }
        if EMA in best.extra_weights and run.recipes.ema is not None:
            run.recipes.ema.load_state_dict(best.extra_weights[EMA])
            ema = evaluate(run.recipes.ema.module, test_loader, self.device, task)
            final.update({f"test_ema_{k}": v for k, v in ema.items() if k != "count"})
        best_record = run.recipes.best or {}
        monitor = f"val_{task.monitor}"
        final.update(
            {
                "checkpoint": "best",
                "task": task.name,
                "best_epoch": state["best_epoch"],
                "best_metric": run.recipes.picker.metric,
                "best_value": best_record.get(run.recipes.picker.metric),
                f"best_{monitor}": best_record.get(monitor),
                "epochs": state["epoch"],
                "steps": state["step"],
                "stop_reason": stop_reason,
                "train_seconds": state["train_seconds"],
                "session_seconds": time.perf_counter() - self.started,
                "device": str(self.device),
                "world_size": self.ctx.world_size,
            }
        )
        if self.ctx.is_main:
            # a metric without data (no validation split) is NaN in memory, null in the file
            write_json_atomic(self.run_dir / "final.json", strict_json(final))
            run.tracking.log_final(final, [self.run_dir / "final.json"])
        self.log(
            f"test {metric_text(test)} (best epoch {final['best_epoch']}, "
            f"{final['train_seconds']:.1f}s training); run in {self.run_dir}"
        )
        return final


def _want_progress(options: TrainOptions) -> bool:
    return ProgressBar.wanted(sys.stderr) if options.progress is None else options.progress
