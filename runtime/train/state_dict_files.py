"""Weights from files, read safely: torch state_dicts (`.pth`, `.pt`, `.bin`: torchvision's
downloads, `torch.save(model.state_dict())`), training checkpoints that wrap one (timm's
`state_dict` / `state_dict_ema`, Lightning's `state_dict`, `{"model": ...}`), and safetensors
files (timm and Hugging Face downloads, nnspec's own checkpoints).

Nothing in a file runs: torch files load with `weights_only=True` (plus argparse.Namespace,
which timm's training checkpoints carry as their `args`), safetensors holds tensors only.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from nnspec.compiler.errors import DataError
from nnspec.compiler.files import not_a_regular_file

#: entries of a training checkpoint that hold the weights, in order of preference (timm loads
#: the exponential moving average by default, as its evaluation does)
WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model", "module", "net")
#: prefixes that wrappers add to every key (DDP, torch.compile), removed as timm removes them
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

_SAVE_HINT = "save weights with torch.save(model.state_dict(), path) or safetensors"


@dataclass(frozen=True)
class StateDictFile:
    """The tensors of a weights file. `entry`: the checkpoint entry that held them ("" for a
    plain state_dict). `ordered`: whether their order is the model's registration order
    (torch files keep it; safetensors files sort their tensors)."""

    tensors: dict[str, torch.Tensor]
    entry: str
    ordered: bool


def read_state_dict(path: str | Path) -> StateDictFile:
    """The tensors of a weights file (see StateDictFile).

    Raises:
        DataError: no such file, an unreadable or unsafe file, or no state_dict inside.
    """
    path = Path(path)
    problem = not_a_regular_file(path)
    if problem:
        raise DataError(f"{path} {problem}")
    ordered = path.suffix != ".safetensors"
    data = _read_torch(path) if ordered else _read_safetensors(path)
    entry = ""
    if isinstance(data, Mapping) and not _all_tensors(data):
        entry = next((k for k in WRAPPERS if isinstance(data.get(k), Mapping)), "")
        data = data[entry] if entry else data
    if not isinstance(data, Mapping) or not data or not _all_tensors(data):
        found = sorted(data)[:8] if isinstance(data, Mapping) else type(data).__name__
        raise DataError(f"{path}: expected a state_dict (names to tensors) or a checkpoint "
                        f"holding one under {', '.join(WRAPPERS)}; found {found}\n"
                        f"    hint: {_SAVE_HINT}")
    return StateDictFile({_clean(k): v for k, v in data.items()}, entry, ordered)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for broken headers
        raise DataError(f"{path}: cannot read it as safetensors ({error})") from error


def _read_torch(path: Path) -> object:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike
        raise DataError(
            f"{path}: cannot read it as a state_dict ({type(error).__name__}: {error})\n"
            f"    hint: only plain tensors load safely; {_SAVE_HINT}",
        ) from error


def _all_tensors(data: Mapping) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items())


def _clean(key: str) -> str:
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key
