"""How a training run that cannot go on for want of a resource says so: one message, exit 1,
and what is kept. Disk full, permission denied and a vanished file are OSErrors; memory is a
MemoryError, torch's OutOfMemoryError (CUDA) or the CPU allocator's RuntimeError."""

from __future__ import annotations

from pathlib import Path

from nnspec.compiler.errors import TrainingError
from nnspec.runtime.train.checkpoint import checkpoint_exists


def storage_failure(error: OSError, checkpoints: Path | None) -> TrainingError:
    """One message for an I/O failure during training, saying what is kept."""
    what = f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
    return TrainingError(f"training stopped: {what}\n    {_kept(checkpoints)}")


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in text.lower() or "can't allocate memory" in text)


def memory_failure(error: BaseException, checkpoints: Path | None) -> TrainingError:
    """One message for running out of memory (host or device) during training."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return TrainingError(
        f"training stopped: out of memory ({first[:200]})\n    {_kept(checkpoints)}\n"
        "    hint: lower train.batch_size or the model's size; `nnspec check` estimates the "
        "memory one sample needs")


def _kept(checkpoints: Path | None) -> str:
    if checkpoints is not None and checkpoint_exists(checkpoints, "last"):
        return (f"the last good checkpoint in {checkpoints} is intact; fix the cause and "
                "continue with --resume")
    return "no checkpoint had been written yet"
