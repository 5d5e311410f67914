"""`nnspec train`: a spec, its data and settings become a resumable run directory.

The run directory holds `spec.yaml` (resolved: concrete normalisation, effective `train:`
settings, class labels), `normalization.json`, `run.json` (spec hash and settings, for
`--resume` and `nnspec eval`), `metrics.jsonl`, `tb/` (TensorBoard), `checkpoints/` (`last` and
`best`, see checkpoint.py) and `final.json`.

Under `torchrun` (RANK and WORLD_SIZE set) the same code runs DDP: one process per device, a
distributed sampler, `--batch-size` per process, and only rank 0 writing files.

Size: `_Run` is the training session; its steps (set-up, resume, epoch, end-of-epoch
checkpoint, finish) share the run's state. Everything that does not need that state lives in
its own module (options, run_dir, distributed, device, data, optim, schedules, checkpoint).
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

from nnspec.compiler.errors import DataError, TrainingError, UsageError
from nnspec.compiler.training_schema import (
    LossConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
)
from nnspec.runtime.train.checkpoint import (
    checkpoint_exists,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    write_json_atomic,
    write_text_atomic,
)
from nnspec.runtime.train.data import DataSplits, channel_stats, load_data, make_loader
from nnspec.runtime.train.device import autocast_for, prepare_input, resolve_device
from nnspec.runtime.train.distributed import Distributed
from nnspec.runtime.train.evaluate import evaluate, loss_function, spec_section
from nnspec.runtime.train.failures import is_out_of_memory, memory_failure, storage_failure
from nnspec.runtime.train.optim import build_optimizer, momentum_of
from nnspec.runtime.train.options import TrainOptions
from nnspec.runtime.train.progress import ProgressBar
from nnspec.runtime.train.run_dir import choose_run_dir, read_json, reconcile_metrics
from nnspec.runtime.train.schedules import Schedule

EVAL_BATCH_SIZE = 256
# What a run's checkpoints carry as "state"; a new run starts from this.
FRESH_STATE = {
    "epoch": 0,
    "step": 0,
    "best_epoch": 0,
    "best_val_accuracy": -1.0,
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
        self.loss_fn = loss_function(LossConfig.model_validate(spec_section(spec.loss)))
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
        data = load_data(
            settings.data, _input_shape(self.spec), settings.val_fraction, settings.test_fraction
        )
        model = build_model(self.spec, seed=settings.seed)
        _check_classes(model, data)
        normalization = self._normalize(model, data)
        memory_format = torch.channels_last if settings.channels_last else torch.preserve_format
        model.to(self.device, memory_format=memory_format)
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
        schedule = Schedule(self.schedule_config, len(loader), settings.epochs)
        scaler = (
            torch.amp.GradScaler("cuda") if self.amp and settings.amp_dtype == "float16" else None
        )
        # Dropout draws from the global RNG; a rank-specific seed gives ranks different masks.
        torch.manual_seed(settings.seed + ctx.rank)
        state = self._restore(model, optimizer, scaler) if self.options.resume else FRESH_STATE
        state = dict(state)
        if ctx.is_main:
            self._write_run_files(normalization, data)  # on resume: the settings may change
        net = model
        if ctx.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if settings.compile:
            net = torch.compile(net)
        writer = self._tensorboard()
        try:
            for epoch in range(state["epoch"], settings.epochs):
                record = self._train_epoch(
                    epoch, net, model, optimizer, loader, schedule, scaler, state
                )
                record.update(self._val_metrics(model, val_loader))
                self._end_epoch(model, optimizer, scaler, state, record, writer)
        finally:
            if writer is not None:
                writer.close()
        return self._finish(model, data, state)

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
        if self.ctx.is_main:
            reconcile_metrics(self.run_dir, state["epoch"], checkpoint.info["metrics"])
        self.log(f"resuming {self.run_dir} after epoch {state['epoch']} (step {state['step']})")
        return state

    def _write_run_files(self, normalization: dict, data: DataSplits) -> None:
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
        write_json_atomic(
            self.run_dir / "run.json",
            {
                "spec": self.spec.name,
                "spec_source": str(self.spec.source),
                "spec_hashes": [self.spec_hash, load_spec(spec_path).spec_hash],
                "settings": self.settings.model_dump(mode="json"),
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

    def _train_epoch(self, epoch, net, model, optimizer, loader, schedule, scaler, state) -> dict:
        settings, ctx = self.settings, self.ctx
        loader.sampler.set_epoch(epoch)
        net.train()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, correct, count
        heads = getattr(model, "head_loss_weights", {}) or {}
        bar = ProgressBar(
            len(loader),
            f"epoch {epoch + 1}/{settings.epochs}",
            ctx.is_main and _want_progress(self.options),
        )
        started = time.perf_counter()
        for batch, (x, y) in enumerate(loader):
            schedule.apply(optimizer, state["step"])
            x = prepare_input(x, self.device, settings.channels_last)
            y = y.to(self.device, non_blocking=True)
            with autocast_for(self.device, self.amp, settings.amp_dtype):
                output = net(x)
            logits = output[0] if isinstance(output, tuple) else output
            loss = training_loss(output, y, self.loss_fn, heads)
            value = self._checked_loss(loss, epoch, batch, state, optimizer)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                self._clip(model)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                self._clip(model)
                optimizer.step()
            state["step"] += 1
            sums += torch.stack(
                [
                    loss.detach().double() * len(y),
                    (logits.argmax(1) == y).sum().double(),
                    torch.tensor(float(len(y)), dtype=torch.float64, device=self.device),
                ]
            )
            bar.update(1, f"loss {value:.4f}")
        bar.close()
        ctx.sync_buffers(model)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        loss_sum, correct, count = ctx.sum(sums).tolist()
        group = optimizer.param_groups[0]
        return {
            "epoch": epoch + 1,
            "step": state["step"],
            "train_loss": loss_sum / count,
            "train_accuracy": correct / count,
            "lr": group["lr"],
            "momentum": momentum_of(group),
            "images_per_second": count / seconds,
            "epoch_seconds": seconds,
        }

    def _checked_loss(self, loss, epoch, batch, state, optimizer) -> float:
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
            f"{optimizer.param_groups[0]['lr']:.4g}), normalise the inputs (normalize: auto), "
            "or clip gradients (train.grad_clip)",
        )

    def _clip(self, model) -> None:
        if self.settings.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), self.settings.grad_clip)

    def _val_metrics(self, model, val_loader) -> dict:
        result = evaluate(
            model,
            val_loader,
            self.device,
            self.loss_fn,
            channels_last=self.settings.channels_last,
            amp=self.amp,
            amp_dtype=self.settings.amp_dtype,
        )
        return {f"val_{k}": v for k, v in result.items() if k != "count"}

    def _end_epoch(self, model, optimizer, scaler, state, record, writer) -> None:
        state["epoch"] = record["epoch"]
        state["train_seconds"] += record["epoch_seconds"]
        # Best by val accuracy; on a tie (small val sets saturate), by val loss.
        score = (record["val_accuracy"], -record["val_loss"])
        improved = score > (state["best_val_accuracy"], -state["best_val_loss"])
        if improved:
            state["best_val_accuracy"], state["best_val_loss"] = score[0], record["val_loss"]
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
                    writer.add_scalar(_tensorboard_tag(key), value, record["epoch"])
            writer.flush()
        self.log(_epoch_line(record, self.settings.epochs))

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
        test = evaluate(model, test_loader, self.device, self.loss_fn)
        final = {
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            **({"test_top5_accuracy": test["top5_accuracy"]} if "top5_accuracy" in test else {}),
            "test_count": test["count"],
            "checkpoint": "best",
            "best_epoch": state["best_epoch"],
            "best_val_accuracy": state["best_val_accuracy"],
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
            f"test accuracy {100 * final['test_accuracy']:.2f}% (best epoch "
            f"{final['best_epoch']}, {final['train_seconds']:.1f}s training); run in {self.run_dir}"
        )
        return final


def training_loss(
    output, target: torch.Tensor, loss_fn: nn.Module, head_weights: dict
) -> torch.Tensor:
    """The loss of a model's training-mode output: `logits`, or `(logits, {head: logits})`
    for a spec with training-only heads, whose losses add with their weights."""
    logits, heads = output if isinstance(output, tuple) else (output, {})
    loss = loss_fn(logits.float(), target)
    for head, head_logits in heads.items():
        loss = loss + head_weights[head] * loss_fn(head_logits.float(), target)
    return loss


def _input_shape(spec) -> tuple[int, ...]:
    if getattr(spec, "input", None) is None:
        raise UsageError(
            "nnspec train feeds one input; this spec declares several (inputs:)\n    hint: "
            "train it from Python with your own loop",
        )
    return tuple(spec.input.shape)


def _check_classes(model, data: DataSplits) -> None:
    shape = tuple(model.graph.node(model.graph.output).shape)
    if len(shape) != 1:
        raise UsageError(
            f"nnspec train trains classifiers: the output must be [classes], got {list(shape)}",
        )
    if shape[0] < data.num_classes:
        raise DataError(
            f"data {data.source!r} has {data.num_classes} classes but the model outputs "
            f"{shape[0]}\n    hint: set the last layer's out to {data.num_classes}, e.g. "
            f"--set network[-1].linear.out={data.num_classes}",
        )


def _tensorboard_tag(key: str) -> str:
    """`train_loss` -> `train/loss`, `lr` -> `optimizer/lr`, `epoch_seconds` -> `speed/...`."""
    for prefix in ("train_", "val_"):
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key[len(prefix) :]}"
    if key in ("lr", "momentum"):
        return f"optimizer/{key}"
    return f"speed/{key}"


def _want_progress(options: TrainOptions) -> bool:
    return ProgressBar.wanted(sys.stderr) if options.progress is None else options.progress


def _epoch_line(record: dict, epochs: int) -> str:
    return (
        f"epoch {record['epoch']}/{epochs}  train loss {record['train_loss']:.4f} "
        f"acc {100 * record['train_accuracy']:.2f}%  val loss {record['val_loss']:.4f} "
        f"acc {100 * record['val_accuracy']:.2f}%  lr {record['lr']:.4g}  "
        f"{record['images_per_second']:.0f} img/s  {record['epoch_seconds']:.1f}s"
    )
