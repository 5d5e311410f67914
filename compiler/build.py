"""Build: a Graph becomes a `CompiledModel`, a torch.nn.Module whose submodule names are the
spec's ids, so state_dict keys read `layer2.basic1.conv1.weight`.

The forward pass runs a precomputed plan (node, module, input ids, values to free); there is no
per-call interpretation of the spec, so the compiled model costs what the same modules cost.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nnspec.compiler import modules
from nnspec.compiler.errors import Problem, SpecError
from nnspec.compiler.graph import Graph, Node
from nnspec.compiler.layers import get_kind
from nnspec.compiler.schema import NormalizeSpec

_RESERVED = set(dir(nn.Module)) | {"graph", "spec", "input_normalization",
                                   "head_loss_weights", "replace_node_module", "set_normalization",
                                   "output_standardization", "set_output_standardization"}


def _plan(graph: Graph, nodes, keep: set[str], model: nn.Module) -> list[tuple]:
    """(id, module, input ids, ids to free afterwards) for each node, in order."""
    last_use: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for ref in node.inputs:
            last_use[ref] = i
    free: list[list[str]] = [[] for _ in nodes]
    for ref, i in last_use.items():
        if ref not in keep:
            free[i].append(ref)
    return [(n.id, model.get_submodule(n.id), tuple(n.inputs), tuple(free[i]))
            for i, n in enumerate(nodes)]


class CompiledModel(nn.Module):
    """The module a spec compiles to. See docs/internals.md for its contract."""

    def __init__(self, graph: Graph):
        super().__init__()
        self.graph = graph
        self.spec = graph.spec
        self.head_loss_weights = {h.id: h.loss_weight for h in graph.heads.values()}
        self.input_normalization = self._make_normalization()
        #: eval-mode output affine `y * std + mean` (regression targets standardised in training)
        self.output_standardization: nn.Module | None = None
        inplace = _inplace_safe(graph)
        for node in graph.nodes:
            module = build_node_module(node)
            if node.id in inplace:
                module.inplace = True
            _attach(self, node.id, module, node)
        self._rebuild_plans()

    def _make_normalization(self) -> nn.Module | None:
        spec = self.spec
        if spec is None or spec.normalize is None or spec.inputs is not None:
            return None
        rank = len(spec.input.shape)
        channels = spec.input.shape[0]
        if isinstance(spec.normalize, NormalizeSpec):
            return modules.Normalize(spec.normalize.mean, spec.normalize.std, rank)
        return modules.Normalize([0.0] * channels, [1.0] * channels, rank)  # auto: set by training

    def _rebuild_plans(self) -> None:
        graph = self.graph
        keep = {graph.output} | {h.output for h in graph.heads.values()}
        self._input_names = tuple(graph.inputs)
        self._eval_plan = _plan(graph, graph.eval_nodes(), keep, self)
        self._train_plan = _plan(graph, graph.nodes, keep, self) if graph.heads else \
            self._eval_plan

    def set_normalization(self, mean: list[float], std: list[float]) -> None:
        """Set the input normalisation (e.g. computed by `normalize: auto`)."""
        if self.input_normalization is None:
            raise ValueError("this spec has no `normalize` entry")
        self.input_normalization.set(mean, std)

    def set_output_standardization(self, mean: list[float], std: list[float]) -> None:
        """Outputs in eval mode become `output * std + mean` (one value per output element):
        a model trained on standardised targets then predicts in the targets' own units,
        in PyTorch and in the exported graph alike. Training mode is left standardised."""
        shape = tuple(self.graph.output_shape)
        self.output_standardization = modules.Destandardize(mean, std, shape)

    def replace_node_module(self, node_id: str, module: nn.Module) -> None:
        """Run `module` for node `node_id` from now on (e.g. after folding batch norm)."""
        self.graph.node(node_id)  # KeyError for an unknown id
        self.set_submodule(node_id, module)
        self._rebuild_plans()

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> Any:
        values = self._bind(args, kwargs)
        training_heads = self.training and self.graph.heads
        plan = self._train_plan if training_heads else self._eval_plan
        for node_id, module, inputs, free in plan:
            values[node_id] = module(*[values[i] for i in inputs])
            for ref in free:
                del values[ref]
        out = values[self.graph.output]
        if self.output_standardization is not None and not self.training:
            out = self.output_standardization(out)
        if training_heads:
            return out, {h.id: values[h.output] for h in self.graph.heads.values()}
        return out

    def _bind(self, args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
        names = self._input_names
        if len(args) + len(kwargs) != len(names):
            raise TypeError(f"{self.graph.name} takes inputs {', '.join(names)}; "
                            f"got {len(args)} positional and {sorted(kwargs)} named")
        values = dict(zip(names, args, strict=False))
        values.update(kwargs)
        if self.input_normalization is not None:
            values[names[0]] = self.input_normalization(values[names[0]])
        return values

    def extra_repr(self) -> str:
        return f"name={self.graph.name!r}"


# Producers whose backward pass does not need their own output, so a ReLU may overwrite it.
_OVERWRITABLE = {"conv", "conv_transpose", "batchnorm", "linear", "add"}


def _inplace_safe(graph: Graph) -> set[str]:
    """ReLUs that can run in place (as torchvision's do): the sole consumer of a value that
    nothing else reads, produced by a layer whose gradient does not need that value."""
    kept = {graph.output} | {h.output for h in graph.heads.values()} | set(graph.inputs)
    uses: dict[str, int] = {}
    for node in graph.nodes:
        for ref in node.inputs:
            uses[ref] = uses.get(ref, 0) + 1
    safe = set()
    for node in graph.nodes:
        if node.kind not in ("relu", "relu6") or len(node.inputs) != 1:
            continue
        source = node.inputs[0]
        if source in kept or uses[source] != 1 or graph.node(source).kind not in _OVERWRITABLE:
            continue
        safe.add(node.id)
    return safe


def build_node_module(node: Node) -> nn.Module:
    """The module of one node, on the current default device.

    Raises:
        SpecError: torch could not build or allocate it (located at the node).
    """
    try:
        return get_kind(node.kind).build(node.config, node.in_shapes)
    except (RuntimeError, MemoryError, ValueError, OverflowError) as e:
        # torch's "DefaultCPUAllocator: can't allocate memory: you tried to allocate ..."
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpecError(Problem(
            f"cannot build this {node.kind} layer: {reason}", path=node.path, mark=node.mark,
            hint="`nnspec check` estimates the memory a spec needs (see --max-memory)")) from None


def _attach(root: nn.Module, dotted: str, module: nn.Module, node) -> None:
    parts = dotted.split(".")
    parent = root
    for part in parts[:-1]:
        _check_name(part, node)
        child = parent._modules.get(part)
        if child is None:
            child = nn.Module()
            parent.add_module(part, child)
        parent = child
    _check_name(parts[-1], node)
    parent.add_module(parts[-1], module)


def _check_name(part: str, node) -> None:
    if part in _RESERVED:
        raise SpecError(Problem(
            f"id {node.id!r} uses the name {part!r}, which torch.nn.Module reserves",
            path=node.path, mark=node.mark, hint="rename the node or its scope"))


def build_graph_model(graph: Graph, seed: int | None = None) -> CompiledModel:
    """Build and initialise a model for `graph`, deterministically for a given seed."""
    from nnspec.compiler.footprint import estimate_footprint, physical_memory, unallocatable_problem
    from nnspec.compiler.init import initialize

    # Refused before anything is allocated: torch would fail, or succeed lazily and leave the
    # OOM killer to end the process while init writes the weights.
    problem = unallocatable_problem(estimate_footprint(graph), physical_memory())
    if problem is not None:
        raise SpecError(problem)
    spec = graph.spec
    if seed is None:
        seed = spec.init.seed if spec is not None and spec.init.seed is not None else 0
    with torch.random.fork_rng(devices=[]):
        # CPU generator only: torch.manual_seed also seeds CUDA, which is slow and not needed
        # (modules are built on the CPU; the caller's RNG state is restored afterwards)
        torch.random.default_generator.manual_seed(seed)
        model = CompiledModel(graph)
        if spec is not None:
            initialize(model, graph, spec.init)
    return model
