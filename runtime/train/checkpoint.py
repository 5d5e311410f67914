"""Checkpoints that survive being killed at any moment.

A checkpoint `NAME` in a directory is three files:

- `NAME.safetensors`: the model's weights (state_dict keys are spec ids),
- `NAME.state.safetensors`: optimizer state tensors and RNG states,
- `NAME.<extra>.safetensors`: further weights saved with it, e.g. `NAME.ema.safetensors` (the
  moving average of the weights),
- `NAME.json`: step, epoch, metrics, optimizer hyper-parameters, the extras' names, and a
  commit token.

Saving writes the two tensor files as `*.new`, then replaces `NAME.json` atomically: that
replace is the commit. Only then are the `*.new` files renamed into place. Loading rolls a
committed-but-unrenamed `*.new` forward and checks that every file carries the JSON's token,
so a crash at any point leaves either the old checkpoint or the new one, never a mix.
A save that fails (disk full, `ulimit -f`, permission) removes what it wrote and raises
OSError naming the file, with the previous checkpoint untouched. No pickle is involved anywhere.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from nnspec.compiler.errors import DataError
from nnspec.compiler.files import UnreadableFile, read_text_capped

WEIGHTS_SUFFIX = ".safetensors"
STATE_SUFFIX = ".state.safetensors"
TOKEN_KEY = "nnspec.checkpoint"
MAX_RECORD_BYTES = 64 * 2**20  # a checkpoint's JSON record (optimizer hyper-parameters, metrics)


@dataclass
class Checkpoint:
    weights: dict[str, torch.Tensor]
    optimizer_state: dict | None
    """A torch optimizer state_dict, or None when the checkpoint holds none."""
    rng: dict[str, torch.Tensor]
    info: dict
    """Whatever the caller passed as `info` when saving (step, epoch, metrics...)."""
    extra_weights: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    """Further state_dicts saved with the checkpoint, by name (`ema`)."""


def save_checkpoint(
    directory: Path,
    name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    info: dict,
    extra_weights: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> None:
    """Write checkpoint `name` (weights, optimizer state, RNG states, `info`, and any
    `extra_weights` state_dicts by name) atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    weights = {k: _host_copy(v) for k, v in model.state_dict().items()}
    tensors, optimizer_json = _split_optimizer_state(optimizer)
    tensors.update({f"rng.{k}": v for k, v in capture_rng().items()})
    files = [(WEIGHTS_SUFFIX, weights), (STATE_SUFFIX, tensors)]
    extras = sorted(extra_weights or {})
    for extra in extras:
        state = {k: _host_copy(v) for k, v in extra_weights[extra].items()}
        files.append((_extra_suffix(extra), state))
    pending = []
    try:
        for suffix, content in files:
            path = directory / f"{name}{suffix}.new"
            pending.append(path)
            _save_tensors(content, path, token)
            _fsync(path)
        record = {"token": token, "info": info, "optimizer": optimizer_json, "extra": extras}
        write_json_atomic(directory / f"{name}.json", record)
    except OSError:
        for path in pending:  # not committed: the previous checkpoint stays as it was
            path.unlink(missing_ok=True)
        raise
    for path in pending:
        os.replace(path, path.with_suffix(""))
    _fsync_directory(directory)


def load_checkpoint(directory: Path, name: str) -> Checkpoint:
    """Read checkpoint `name`, finishing a save that was committed but not yet renamed."""
    directory = Path(directory)
    record = complete_checkpoint(directory, name)
    try:
        weights = load_file(str(directory / f"{name}{WEIGHTS_SUFFIX}"))
        tensors = load_file(str(directory / f"{name}{STATE_SUFFIX}"))
        extra = {
            e: load_file(str(directory / f"{name}{_extra_suffix(e)}")) for e in _extras(record)
        }
    except SafetensorError as e:
        raise DataError(f"checkpoint {name!r} in {directory} cannot be read: {e}\n    hint: "
                        "the file was damaged after it was written; restore it or start a "
                        "new run") from None
    rng = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    optimizer_state = _join_optimizer_state(record["optimizer"], tensors)
    return Checkpoint(weights, optimizer_state, rng, record["info"], extra)


def extra_weights_path(directory: Path, name: str, extra: str) -> Path:
    """The file of checkpoint `name`'s extra weights `extra` (finishing an interrupted save).

    Raises:
        DataError: the checkpoint is missing or holds no such extra weights.
    """
    record = complete_checkpoint(directory, name)
    if extra not in _extras(record):
        raise DataError(
            f"checkpoint {name!r} in {directory} holds no {extra!r} weights (it has: "
            f"{', '.join(_extras(record)) or 'none'})",
        )
    return Path(directory) / f"{name}{_extra_suffix(extra)}"


def checkpoint_names(directory: Path) -> list[str]:
    """The checkpoints a directory holds (each has a JSON record)."""
    return sorted(p.stem for p in Path(directory).glob("*.json"))


def complete_checkpoint(directory: Path, name: str) -> dict:
    """Finish a save of `name` that a crash left committed but not renamed; return its record.

    Raises:
        DataError: the checkpoint is missing or its files do not belong together.
    """
    directory = Path(directory)
    record_path = directory / f"{name}.json"
    if not record_path.exists():
        raise DataError(f"no checkpoint {name!r} in {directory} ({record_path.name} is missing)")
    try:
        record = json.loads(read_text_capped(record_path, MAX_RECORD_BYTES))
        token = record["token"]
        extras = _extras(record)
    except (UnreadableFile, ValueError, KeyError, TypeError) as e:
        raise DataError(f"checkpoint record {record_path} cannot be read: {e}") from None
    for suffix in (WEIGHTS_SUFFIX, STATE_SUFFIX, *map(_extra_suffix, extras)):
        final = directory / f"{name}{suffix}"
        pending = final.with_name(final.name + ".new")
        if pending.exists() and _token_of(pending) == token:
            os.replace(pending, final)
        if _token_of(final) != token:
            raise DataError(
                f"checkpoint {name!r} in {directory} is inconsistent: {final.name} is missing "
                "or does not belong to its JSON record\n    hint: the files were changed by "
                "hand; restore them or start a new run",
            )
    return record


def checkpoint_exists(directory: Path, name: str) -> bool:
    return (Path(directory) / f"{name}.json").exists()


def capture_rng() -> dict[str, torch.Tensor]:
    """The torch RNG states (CPU, and every CUDA device) that dropout and sampling draw from."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda.{index}"] = state
    return states


def restore_rng(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch"])
    cuda = [states[k] for k in sorted(states) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2))


def strict_json(value):
    """`value` with every non-finite float (NaN, ±inf) replaced by None, so that the file is
    JSON that any parser reads (JavaScript's JSON.parse and jq reject bare NaN tokens)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temp file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _save_tensors(content: dict[str, torch.Tensor], path: Path, token: str) -> None:
    """safetensors' writer, with its I/O failures raised as the OSError they are."""
    try:
        save_file(content, str(path), metadata={TOKEN_KEY: token})
    except SafetensorError as e:
        # "Error while serializing: I/O error: File too large (os error 27)"
        code = re.search(r"os error (\d+)", str(e))
        number = int(code.group(1)) if code else errno.EIO
        raise OSError(number, os.strerror(number), str(path)) from e


def _extra_suffix(extra: str) -> str:
    return f".{extra}{WEIGHTS_SUFFIX}"


def _extras(record: dict) -> list[str]:
    """The extra weights a record names (none in checkpoints from before extras existed).

    Raises:
        ValueError: a name that is not a plain word (a record edited to point elsewhere).
    """
    extras = record.get("extra", [])
    if not isinstance(extras, list) or not all(
        isinstance(e, str) and re.fullmatch(r"[a-z0-9_]{1,32}", e) for e in extras
    ):
        raise ValueError(f"'extra' must list plain names, got {str(extras)[:100]}")
    return extras


def _host_copy(tensor: torch.Tensor) -> torch.Tensor:
    # A copy: safetensors refuses tensors that share storage (tied weights).
    return tensor.detach().to("cpu", copy=True).contiguous()


#: in a checkpoint's JSON, a list of optimizer state values whose tensors are in the tensor
#: file by position (LBFGS's history: old_dirs, old_stps, ro, al)
TENSOR_LIST = "tensor_list"
TENSOR_SLOT = "tensor"


def _split_optimizer_state(optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict | None]:
    if optimizer is None:
        return {}, None
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict] = {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = _host_copy(value)
            elif isinstance(value, list | tuple) and any(torch.is_tensor(v) for v in value):
                slots = []
                for position, item in enumerate(value):
                    if torch.is_tensor(item):
                        tensors[f"optimizer.{index}.{key}.{position}"] = _host_copy(item)
                    slots.append(TENSOR_SLOT if torch.is_tensor(item) else item)
                plain.setdefault(str(index), {})[key] = {TENSOR_LIST: slots}
            else:
                plain.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "state": plain}


def _join_optimizer_state(data: dict | None, tensors: dict[str, torch.Tensor]) -> dict | None:
    if data is None:
        return None
    state: dict[int, dict] = {int(i): dict(v) for i, v in data["state"].items()}
    for entries in state.values():
        for key, value in entries.items():
            if isinstance(value, dict) and TENSOR_LIST in value:
                entries[key] = list(value[TENSOR_LIST])
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            # A fresh, aligned copy: a tensor read from the file may start at any offset, and
            # CPU reductions (LBFGS's dot products) round differently on unaligned data.
            value = value.clone()
            _, index, name = key.split(".", 2)
            entries = state.setdefault(int(index), {})
            head, _, position = name.partition(".")
            if position and isinstance(entries.get(head), list):
                entries[head][int(position)] = value
            else:
                entries[name] = value
    return {"state": state, "param_groups": data["param_groups"]}


def _token_of(path: Path) -> str | None:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get(TOKEN_KEY)
    except Exception:  # a missing or half-written file belongs to no checkpoint
        return None


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(directory: Path) -> None:
    # Makes the renames durable on POSIX; directories cannot be opened this way on Windows.
    if os.name == "posix":
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
