"""`TrainOptions`: what the command line (or a Python caller) sets for one training run."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from nnspec.compiler.training_schema import TrainConfig


@dataclass
class TrainOptions:
    """Command-line settings. `None` means: take the spec's `train:` value (or, when resuming,
    the run's)."""

    data: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool | None = None
    out: Path | None = None
    resume: bool = False
    device: str = "auto"
    progress: bool | None = None
    """Draw a progress bar; None: only when stderr is a terminal."""
    init_from: Path | None = None
    """Weights to start from (W.safetensors, a run directory, a .pth state_dict), matched by
    spec id and shape; ignored when resuming (the checkpoint has the weights)."""
    strict: bool = False
    """With `init_from`: refuse any tensor that does not fit instead of skipping it."""
    track: list[str] = field(default_factory=list)
    """Experiment trackers besides TensorBoard: `mlflow[:URI]`, `wandb[:[ENTITY/]PROJECT]`."""

    def setting_overrides(self) -> dict:
        names = set(TrainConfig.model_fields)
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name in names and getattr(self, f.name) is not None
        }
