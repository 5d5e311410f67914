"""How much memory a model needs for one sample, and a budget `nnspec check` holds it to.

A spec can be valid in every type and still ask for `conv: {out: 200000000}` (a 7 GB weight)
or an input of 300000x300000 pixels: `summary` would print it and `train` would die
allocating. The estimate here is what one forward pass of one sample needs in float32:
parameters and buffers (counted on modules built on torch's `meta` device, so nothing is
allocated) plus every node's output. Training needs more (gradients, optimizer state, a
batch), so the default budget is generous; `--max-params` and `--max-memory` change it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from nnspec.compiler.errors import Problem, UsageError
from nnspec.compiler.graph import Graph, Node

DEFAULT_MAX_PARAMS = 4 * 10**9
DEFAULT_MAX_MEMORY = 16 * 2**30
_BYTES = {"int64": 8}  # per element; everything else is float32


@dataclass
class NodeFootprint:
    node: Node
    params: int
    param_bytes: int
    activation_bytes: int


@dataclass
class Footprint:
    """Parameters and bytes one sample needs (float32), in total and node by node."""

    params: int = 0
    param_bytes: int = 0
    activation_bytes: int = 0
    nodes: list[NodeFootprint] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.param_bytes + self.activation_bytes


# In-place initialisers a module's __init__ runs; on meta tensors they have nothing to fill,
# and the first call imports torch's reference implementations (~2 s).
_INIT_OPS = {"normal_", "uniform_", "fill_", "zero_", "erfinv_", "mul_", "add_", "sub_", "div_",
             "clamp_", "copy_", "exponential_", "log_normal_", "random_", "bernoulli_"}


@contextlib.contextmanager
def meta_modules() -> Iterator[None]:
    """Build modules on torch's `meta` device (shapes and counts, no memory, no init)."""
    import torch
    from torch.overrides import TorchFunctionMode

    class _SkipInit(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in _INIT_OPS and args and \
                    isinstance(args[0], torch.Tensor) and args[0].is_meta:
                return args[0]
            return func(*args, **(kwargs or {}))

    with torch.device("meta"), _SkipInit():
        yield


def estimate_footprint(graph: Graph) -> Footprint:
    """Parameters, buffers and activations of every node (training-only heads included)."""
    from nnspec.compiler.build import build_node_module

    result = Footprint()
    for item in graph.inputs.values():
        result.activation_bytes += math.prod(item.shape) * _BYTES.get(item.dtype, 4)
    with meta_modules():
        for node in graph.nodes:
            module = build_node_module(node)
            params = sum(p.numel() for p in module.parameters())
            state = params + sum(b.numel() for b in module.buffers())
            here = NodeFootprint(node, params, state * 4, math.prod(node.shape) * 4)
            result.nodes.append(here)
            result.params += params
            result.param_bytes += here.param_bytes
            result.activation_bytes += here.activation_bytes
    return result


def footprint_problems(footprint: Footprint, max_params: int = DEFAULT_MAX_PARAMS,
                       max_memory: int = DEFAULT_MAX_MEMORY) -> list[Problem]:
    """A problem for each budget the footprint exceeds, located at the node that weighs most."""
    problems = []
    if footprint.params > max_params and footprint.nodes:
        top = max(footprint.nodes, key=lambda n: n.params)
        problems.append(Problem(
            f"the model has {format_count(footprint.params)} parameters, more than the budget "
            f"of {format_count(max_params)}; this layer has {format_count(top.params)} of them",
            path=top.node.path, mark=top.node.mark, context=_context(top.node),
            hint="make the layer smaller, or raise the budget with --max-params"))
    if footprint.total_bytes > max_memory and footprint.nodes:
        top = max(footprint.nodes, key=lambda n: n.param_bytes + n.activation_bytes)
        problems.append(Problem(
            f"one sample needs about {format_bytes(footprint.total_bytes)} "
            f"({format_bytes(footprint.param_bytes)} of parameters, "
            f"{format_bytes(footprint.activation_bytes)} of activations), more than the budget "
            f"of {format_bytes(max_memory)}; this layer takes "
            f"{format_bytes(top.param_bytes + top.activation_bytes)}",
            path=top.node.path, mark=top.node.mark, context=_context(top.node),
            hint="make the layer or the input smaller, or raise the budget with --max-memory"))
    return problems


def physical_memory() -> int | None:
    """Bytes of RAM this machine has, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def unallocatable_problem(footprint: Footprint, memory: int | None) -> Problem | None:
    """A problem when the parameters alone exceed `memory` (building them on the CPU would
    fail, or wake the kernel's OOM killer halfway through initialising them), else None."""
    if memory is None or footprint.param_bytes <= memory or not footprint.nodes:
        return None
    top = max(footprint.nodes, key=lambda n: n.param_bytes)
    return Problem(
        f"the model's parameters need {format_bytes(footprint.param_bytes)}, more than this "
        f"machine's {format_bytes(memory)} of memory; this layer holds "
        f"{format_bytes(top.param_bytes)}",
        path=top.node.path, mark=top.node.mark, context=_context(top.node),
        hint="make the layer smaller (`nnspec check` estimates what a spec needs)")


def _context(node: Node) -> str:
    """Which call of a block the node comes from (its path is inside the block's body)."""
    calls = [scope for scope in node.scopes if scope.kind == "block"]
    if not calls:
        return ""
    return f"in block {calls[-1].block!r} called at {calls[-1].path} (node {node.id})"


def format_count(n: int) -> str:
    for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def format_bytes(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


_AMOUNT = re.compile(r"^\s*((?:\d+(?:\.\d*)?|\.\d+)(?:[eE]\d{1,3})?)\s*([A-Za-z]*)\s*$")
_COUNT_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_BYTE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 2**10, "M": 2**20,
               "G": 2**30, "T": 2**40}


def parse_count(text: str) -> int:
    """`4G`, `500M`, `1e9`, `25000000` -> a count (for --max-params)."""
    return _parse(text, _COUNT_UNITS, "a count such as 4G, 500M or 25000000")


def parse_bytes(text: str) -> int:
    """`16GiB`, `512MB`, `8G` (binary) -> bytes (for --max-memory)."""
    return _parse(text, _BYTE_UNITS, "an amount of memory such as 16GiB, 512MB or 8G")


def _parse(text: str, units: dict[str, int], expected: str) -> int:
    match = _AMOUNT.match(text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in units:
        raise UsageError(f"expected {expected}, got {text!r}")
    value = float(match.group(1)) * units[unit]
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"expected {expected}, got {text!r}")
    return int(value)
