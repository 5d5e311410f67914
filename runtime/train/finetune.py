"""Fine-tuning: start a run from weights trained elsewhere (`nnspec train --init-from`).

Weights match the model by spec id (state_dict key) and shape. A tensor whose id exists with
another shape is skipped (a new classifier head is the common case) and keeps its
initialisation, as do tensors the source lacks; tensors of the source the model lacks are
ignored. The report lists all four sets; `strict` turns any mismatch into an error.

Sources: a safetensors file (a checkpoint, or `nnspec import-weights` output), a run directory
(its `best` checkpoint), or a `.pth`/`.pt` state_dict read with `torch.load(weights_only=True)`
(no code runs; `module.` prefixes of DDP-saved dicts are dropped). The input normalisation is
not part of the weights (its buffers are not persistent): the spec's `normalize` decides it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nnspec.compiler.errors import DataError

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
LISTED = 6  # names shown per category before "... (N in all)"


@dataclass(frozen=True)
class InitReport:
    """What `init_from_weights` loaded, by spec id."""

    source: str
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    """Model tensors the source lacks: they keep their initialisation."""
    unexpected: tuple[str, ...]
    """Source tensors the model lacks: ignored."""
    shape_skipped: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]
    """(id, source shape, model shape): present in both with different shapes; not loaded."""

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_skipped)

    def lines(self) -> list[str]:
        """A human summary: one line per non-empty category."""
        lines = [f"init from {self.source}: loaded {len(self.loaded)} tensors"]
        skipped = [f"{k} {list(a)} -> {list(b)}" for k, a, b in self.shape_skipped]
        for title, names in (
            ("shape-skipped (kept their init)", skipped),
            ("missing from the source (kept their init)", list(self.missing)),
            ("unexpected (ignored)", list(self.unexpected)),
        ):
            if names:
                lines.append(f"  {title}: {len(names)}: {_listed(names)}")
        return lines

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "loaded": list(self.loaded),
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "shape_skipped": [
                {"id": k, "source_shape": list(a), "model_shape": list(b)}
                for k, a, b in self.shape_skipped
            ],
        }


def init_from_weights(model: nn.Module, source: str | Path, strict: bool = False) -> InitReport:
    """Load the tensors of `source` that fit `model` by id and shape.

    Raises:
        DataError: the source cannot be read, nothing in it fits the model, or (`strict`)
            anything does not fit (every mismatch listed).
    """
    weights, described = read_weights(source)
    to_load, report = match_weights(model.state_dict(), weights, described)
    if not report.loaded:
        raise DataError(
            f"no tensor of {described} fits the model by id and shape "
            f"({len(weights)} tensors, e.g. {_listed(sorted(weights)[:3])})\n    hint: the "
            "keys must be spec ids; map a torchvision state_dict first with "
            "`nnspec import-weights SPEC TV.pth -o W.safetensors`",
        )
    if strict and not report.exact:
        raise DataError(
            f"--strict: {described} does not fit the model exactly\n    "
            + "\n    ".join(report.lines()[1:])
            + "\n    hint: without --strict the fitting tensors load and the rest keep their "
            "initialisation",
        )
    model.load_state_dict(to_load, strict=False)
    return report


def match_weights(
    target: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor], described: str = ""
) -> tuple[dict[str, torch.Tensor], InitReport]:
    """Split `source` against a model's state_dict `target`: what loads, and the report."""
    loaded, skipped = {}, []
    for key, value in source.items():
        if key not in target:
            continue
        if tuple(value.shape) == tuple(target[key].shape):
            loaded[key] = value
        else:
            skipped.append((key, tuple(value.shape), tuple(target[key].shape)))
    report = InitReport(
        source=described,
        loaded=tuple(k for k in target if k in loaded),
        missing=tuple(k for k in target if k not in source),
        unexpected=tuple(k for k in source if k not in target),
        shape_skipped=tuple(skipped),
    )
    return loaded, report


def read_weights(source: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state_dict a `--init-from` source names, and how to describe it.

    Raises:
        DataError: no such file, or not a readable state_dict.
    """
    path = Path(source)
    if path.is_dir():
        return _run_weights(path)
    if not path.is_file():
        raise DataError(
            f"--init-from {str(path)!r}: no such file or run directory\n    hint: give a "
            "W.safetensors file, a run directory, or a .pth state_dict",
        )
    if path.suffix in TORCH_SUFFIXES:
        from nnspec.runtime.train.weights import load_torchvision_state_dict

        return _without_ddp_prefix(load_torchvision_state_dict(path)), str(path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path)), str(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise DataError(
            f"--init-from {str(path)!r}: not a safetensors file ({error})\n    hint: a "
            f"torch state_dict should end in {', '.join(TORCH_SUFFIXES)}",
        ) from error


def _run_weights(run_dir: Path) -> tuple[dict[str, torch.Tensor], str]:
    from nnspec.runtime.train.checkpoint import checkpoint_exists, load_checkpoint

    checkpoints = run_dir / "checkpoints"
    name = next((n for n in ("best", "last") if checkpoint_exists(checkpoints, n)), None)
    if name is None:
        raise DataError(
            f"--init-from {str(run_dir)!r}: not a run directory with a checkpoint\n    hint: "
            "give the --out directory of an `nnspec train` run, or a weights file",
        )
    return load_checkpoint(checkpoints, name).weights, f"{run_dir} ({name} checkpoint)"


def _without_ddp_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state_dict saved from a DistributedDataParallel wrapper has every key under
    `module.`; torch's own loader drops it the same way."""
    prefix = "module."
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > LISTED else "")
