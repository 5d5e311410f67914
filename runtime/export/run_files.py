"""Which files a model to export is built from: a run directory's spec, checkpoint (or its
moving average, `--ema`) and normalisation, or a bare spec with optional weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nnspec.compiler.errors import DataError, UsageError

CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class RunFiles:
    """Where the parts of a model come from: a spec, optional weights, normalisation, and the
    run directory (its `task.json`: what the task learnt, e.g. regression's target statistics)."""

    spec: str | Path
    weights: Path | None
    normalization: Path | None
    run_dir: Path | None = None


def is_run_dir(source: str | Path) -> bool:
    """A training run directory holds the resolved `spec.yaml`."""
    path = Path(source)
    return path.is_dir() and (path / "spec.yaml").is_file()


def locate_model_files(
    source: str | Path,
    checkpoint: str = "best",
    weights: str | Path | None = None,
    ema: bool = False,
) -> RunFiles:
    """Resolve a run directory or a bare spec into the files a model is built from.

    A run directory gives its `spec.yaml`, `checkpoints/<checkpoint>.safetensors` (with `ema`,
    the checkpoint's moving average of the weights, `<checkpoint>.ema.safetensors`) and
    `normalization.json`; `weights` replaces the checkpoint. A bare spec (path or zoo name)
    gives itself and `weights`, if any.

    Raises:
        UsageError: unknown checkpoint name, a weights file that does not exist, `ema` for a
            bare spec, with `weights`, or for a run trained without `train.ema`.
    """
    if checkpoint not in CHECKPOINTS:
        raise UsageError(
            f"--checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}"
        )
    chosen = Path(weights) if weights is not None else None
    if chosen is not None and not chosen.is_file():
        raise UsageError(f"weights file {str(chosen)!r} does not exist")
    if ema and (chosen is not None or not is_run_dir(source)):
        raise UsageError(
            "--ema exports the moving average a run's checkpoint holds: give a run directory "
            "(and no --weights)"
        )
    if not is_run_dir(source):
        return RunFiles(spec=source, weights=chosen, normalization=None)
    run = Path(source)
    if chosen is None:
        chosen = _checkpoint_weights(run, checkpoint, ema)
    normalization = run / "normalization.json"
    return RunFiles(
        spec=run / "spec.yaml",
        weights=chosen,
        normalization=normalization if normalization.is_file() else None,
        run_dir=run,
    )


def _checkpoint_weights(run: Path, checkpoint: str, ema: bool) -> Path:
    from nnspec.runtime.train.checkpoint import (
        checkpoint_names,
        complete_checkpoint,
        extra_weights_path,
    )

    directory = run / "checkpoints"
    present = checkpoint_names(directory)
    if checkpoint in present:  # finish a save a crash interrupted, as training would
        complete_checkpoint(directory, checkpoint)
    chosen = directory / f"{checkpoint}.safetensors"
    if not chosen.is_file():
        raise UsageError(
            f"run {str(run)!r} has no {checkpoint!r} checkpoint ({chosen} is missing)\n"
            f"    hint: checkpoints present: {', '.join(present) or 'none'}; "
            "choose one with --checkpoint, or pass --weights"
        )
    if not ema:
        return chosen
    try:
        return extra_weights_path(directory, checkpoint, "ema")
    except DataError as error:
        raise UsageError(
            f"--ema: run {str(run)!r} was trained without a moving average ({error})\n"
            "    hint: train with `train: {ema: {decay: 0.9998}}`, or export without --ema"
        ) from error
