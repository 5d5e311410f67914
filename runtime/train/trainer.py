"""`nnspec train`: a spec, its data and settings become a resumable run directory.

The run directory holds `spec.yaml` (resolved: concrete normalisation, effective `train:`
settings, class labels), `normalization.json`, `task.json` (the task's record and what it
learnt from the data), `run.json` (spec hash and settings, for `--resume` and `nnspec eval`),
`metrics.jsonl`, `tb/` (TensorBoard), `checkpoints/` (`last` and `best`, see checkpoint.py)
and `final.json`. The task (runtime/train/tasks/) decides the loss, targets, metrics and which
validation metric picks `best`; the epoch itself runs in loop.py.

Under `torchrun` (RANK and WORLD_SIZE set) the same code runs DDP: one process per device, a
distributed sampler, `--batch-size` per process, and only rank 0 writing files.

Size: `_Run` is the training session; its steps (set-up, resume, epoch, end-of-epoch
checkpoint, finish) share the run's state. Everything that does not need that state lives in
its own module (options, run_dir, distributed, device, data, augment, tasks, loop, optim,
schedules, checkpoint, records).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from torch import nn

from nnspec.compiler.errors import TrainingError, UsageError
from nnspec.compiler.training_schema import OptimizerConfig, ScheduleConfig, TrainConfig
from nnspec.runtime.train.augment import augment_training_split
from nnspec.runtime.train.checkpoint import (
    checkpoint_exists,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
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
from nnspec.runtime.train.evaluate import TASK_FILE, evaluate, read_task_state, spec_section
from nnspec.runtime.train.failures import is_out_of_memory, memory_failure, storage_failure
from nnspec.runtime.train.loop import EpochLoop, training_loss
from nnspec.runtime.train.optim import build_optimizer
from nnspec.runtime.train.options import TrainOptions
from nnspec.runtime.train.progress import ProgressBar
from nnspec.runtime.train.records import epoch_line, metric_text, tensorboard_tag
from nnspec.runtime.train.run_dir import choose_run_dir, read_json, reconcile_metrics
from nnspec.runtime.train.schedules import Schedule
from nnspec.runtime.train.tasks import Task, make_task

__all__ = ["FRESH_STATE", "TrainOptions", "train", "training_loss"]

EVAL_BATCH_SIZE = 256
# What a run's checkpoints carry as "state"; a new run starts from this.
FRESH_STATE = {
    "epoch": 0,
    "step": 0,
    "best_epoch": 0,
    "best_val_score": None,  # the task's monitored validation metric; None: no epoch yet
    "best_val_loss": math.inf,
    "train_seconds": 0.0,
}


def train(spec, options: TrainOptions, log: Callable[[str], None] = print) -> dict:
    """Train `spec` (a loaded Spec) as `options` say; return what `final.json` holds.

    Raises UsageError (bad options, an existing run without --resume), DataError (data missing
    or not fitting the spec), TrainingError (a non-finite loss; the last good checkpoint stays).
    """
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
        return run.execute()
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

    def execute(self) -> dict:
        from nnspec.compiler import build_model

        settings, ctx = self.settings, self.ctx
        model = build_model(self.spec, seed=settings.seed)
        output_shape = model.graph.output_shape
        self.task = task = make_task(self.spec, output_shape)
        data = load_spec_data(self.spec, settings.data, settings, output_shape)
        task.check_data(model.graph, data)
        task_state = self._fit_task(task, data)
        task.prepare_model(model)
        normalization = self._normalize(model, data)
        note = undeclared_range_note(self.spec, data)
        if note:
            self.log(note)
        mixer = augment_training_split(data, self.spec, settings, settings.seed)
        memory_format = torch.channels_last if settings.channels_last else torch.preserve_format
        model.to(self.device, memory_format=memory_format)
        self.optimizer = optimizer = build_optimizer(model, self.optimizer_config)
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
        schedule = Schedule(self.schedule_config, len(loader), settings.epochs)
        scaler = (
            torch.amp.GradScaler("cuda") if self.amp and settings.amp_dtype == "float16" else None
        )
        # Dropout draws from the global RNG; a rank-specific seed gives ranks different masks.
        torch.manual_seed(settings.seed + ctx.rank)
        state = self._restore(model, optimizer, scaler) if self.options.resume else FRESH_STATE
        state = dict(state)
        if state["best_val_score"] is None:
            state["best_val_score"] = task.worst
        if ctx.is_main:  # on resume: the settings may change
            self._write_run_files(normalization, data, task, task_state)
        net = model
        if ctx.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if settings.compile:
            net = torch.compile(net)
        loop = EpochLoop(net, model, optimizer, loader, schedule, scaler, task, settings,
                         self.device, self.amp, ctx, mixer,
                         ctx.is_main and _want_progress(self.options), self._checked_loss)  # fmt: skip
        writer = self._tensorboard()
        try:
            for epoch in range(state["epoch"], settings.epochs):
                record = self._train_epoch(loop, epoch, state)
                record.update(self._val_metrics(model, val_loader))
                self._end_epoch(model, optimizer, scaler, state, record, writer)
        finally:
            if writer is not None:
                writer.close()
        return self._finish(model, data, state)

    def _train_epoch(self, loop: EpochLoop, epoch: int, state: dict) -> dict:
        return loop.run(epoch, state)

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

    def _restore(self, model, optimizer, scaler) -> dict:
        checkpoint = load_checkpoint(self.checkpoints, "last")
        model.load_state_dict(checkpoint.weights)
        optimizer.load_state_dict(checkpoint.optimizer_state)
        restore_rng(checkpoint.rng)
        if scaler is not None and checkpoint.info.get("grad_scaler"):
            scaler.load_state_dict(checkpoint.info["grad_scaler"])
        state = dict(checkpoint.info["state"])
        if "best_val_accuracy" in state:  # a classification run from before tasks existed
            state["best_val_score"] = state.pop("best_val_accuracy")
        if self.ctx.is_main:
            reconcile_metrics(self.run_dir, state["epoch"], checkpoint.info["metrics"])
        self.log(f"resuming {self.run_dir} after epoch {state['epoch']} (step {state['step']})")
        return state

    def _write_run_files(
        self, normalization: dict, data: DataSplits, task: Task, task_state: dict
    ) -> None:
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
        write_json_atomic(self.run_dir / TASK_FILE, {"task": task.metadata(), "state": task_state})
        write_json_atomic(
            self.run_dir / "run.json",
            {
                "spec": self.spec.name,
                "spec_source": str(self.spec.source),
                "spec_hashes": [self.spec_hash, load_spec(spec_path).spec_hash],
                "settings": self.settings.model_dump(mode="json"),
                "task": task.name,
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
            return
        self.log(
            f"run {self.run_dir}: {data.source} ({len(data.train)} train, {len(data.val)} val, "
            f"{len(data.test)} test), {self.settings.epochs} epochs on {self.device}"
            + (f" x {self.ctx.world_size} processes" if self.ctx.active else "")
        )

    def _checked_loss(self, loss, epoch, batch, state) -> float:
        """The loss (mean over ranks) as a float; a TrainingError on every rank if any rank's
        is not finite."""
        value = loss.detach().float()
        if self.ctx.active:
            value = self.ctx.sum(value.clone().reshape(1))[0] / self.ctx.world_size
        value = value.item()
        if math.isfinite(value):
            return value
        if checkpoint_exists(self.checkpoints, "last"):
            kept = f"the last good checkpoint, after epoch {state['epoch']}, is kept in {self.checkpoints}"
        else:
            kept = "no checkpoint had been written yet"
        raise TrainingError(
            f"the loss became {value} at step {state['step']} (epoch {epoch + 1}, batch "
            f"{batch + 1}); training stopped, {kept}\n    hint: lower optimizer.lr (it was "
            f"{self.optimizer.param_groups[0]['lr']:.4g}), normalise the inputs (normalize: auto), "
            "or clip gradients (train.grad_clip)",
        )

    def _val_metrics(self, model, val_loader) -> dict:
        result = evaluate(
            model,
            val_loader,
            self.device,
            self.task,
            channels_last=self.settings.channels_last,
            amp=self.amp,
            amp_dtype=self.settings.amp_dtype,
        )
        return {f"val_{k}": v for k, v in result.items() if k != "count" and
                not isinstance(v, list)}

    def _end_epoch(self, model, optimizer, scaler, state, record, writer) -> None:
        state["epoch"] = record["epoch"]
        state["train_seconds"] += record["epoch_seconds"]
        # Best by the task's monitored metric; on a tie (small val sets saturate), by val loss.
        score, loss = record[f"val_{self.task.monitor}"], record["val_loss"]
        improved = self.task.better(score, state["best_val_score"]) or (
            score == state["best_val_score"] and loss < state["best_val_loss"]
        ) or math.isnan(score)  # no validation figure (an empty split): the last epoch is best
        if improved:
            state["best_val_score"], state["best_val_loss"] = score, loss
            state["best_epoch"] = state["epoch"]
        if self.ctx.is_main:
            info = {"state": dict(state), "metrics": record}
            if scaler is not None:
                info["grad_scaler"] = scaler.state_dict()
            # `best` first: a run killed in between resumes from the previous `last`, redoes
            # this epoch and rewrites `best`; the other order could leave `best` stale.
            if improved:
                save_checkpoint(self.checkpoints, "best", model, optimizer, info)
            save_checkpoint(self.checkpoints, "last", model, optimizer, info)
            # After the checkpoint: a crash in between loses a line, never duplicates one.
            with open(self.run_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            for key, value in record.items():
                if key not in ("epoch", "step"):
                    writer.add_scalar(tensorboard_tag(key), value, record["epoch"])
            writer.flush()
        self.log(epoch_line(record, self.settings.epochs, self.task))

    def _tensorboard(self):
        if not self.ctx.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.run_dir / "tb"))

    def _finish(self, model, data: DataSplits, state: dict) -> dict:
        self.ctx.barrier()  # rank 0 has written `best`
        best = load_checkpoint(self.checkpoints, "best")
        model.load_state_dict(best.weights)
        test_loader = make_loader(
            data.test,
            EVAL_BATCH_SIZE,
            train=False,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
        )
        test = evaluate(model, test_loader, self.device, self.task)
        monitor = self.task.monitor
        final = {
            **{f"test_{k}": v for k, v in test.items() if k != "count"},
            "test_count": test["count"],
            "checkpoint": "best",
            "task": self.task.name,
            "monitor": f"val_{monitor}",
            "best_epoch": state["best_epoch"],
            f"best_val_{monitor}": state["best_val_score"],
            "epochs": state["epoch"],
            "steps": state["step"],
            "train_seconds": state["train_seconds"],
            "session_seconds": time.perf_counter() - self.started,
            "device": str(self.device),
            "world_size": self.ctx.world_size,
        }
        if self.ctx.is_main:
            write_json_atomic(self.run_dir / "final.json", final)
        self.log(
            f"test {metric_text(test)} (best epoch {final['best_epoch']}, "
            f"{final['train_seconds']:.1f}s training); run in {self.run_dir}"
        )
        return final


def _want_progress(options: TrainOptions) -> bool:
    return ProgressBar.wanted(sys.stderr) if options.progress is None else options.progress
