"""Where training and evaluation run: the device, input layout and mixed precision."""

from __future__ import annotations

import contextlib

import torch

from nnspec.compiler.errors import UsageError


def resolve_device(choice: str = "auto") -> torch.device:
    """`auto` is CUDA when available, else CPU; asking for CUDA without it is a UsageError."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {choice}: CUDA is not available here\n    hint: --device cpu")
    if choice != "cpu" and not choice.startswith("cuda"):
        raise UsageError(f"unknown device {choice!r}; choose auto, cpu or cuda")
    return torch.device(choice)


def prepare_input(x, device: torch.device, channels_last: bool):
    """A batch's input (a tensor, or a tuple of them for named inputs) on `device`."""
    if isinstance(x, tuple | list):
        return tuple(prepare_input(part, device, channels_last) for part in x)
    x = x.to(device, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def autocast_for(device: torch.device, enabled: bool, dtype: str):
    """Mixed precision on CUDA when `enabled`; a null context otherwise."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=getattr(torch, dtype))
    return contextlib.nullcontext()
