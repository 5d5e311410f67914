"""Weight initialisation: a scheme per layer category from `init:`, overridable per node.

The lecture's point: initialise so each layer keeps its input's variance. Kaiming/He
(N(0, 2/fan_in)) for ReLU, Glorot/Xavier (2/(fan_in + fan_out)) for tanh/sigmoid, and
`lecun_normal` N(0, 1/fan_in), which is what the lecture calls "Xavier".
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nnspec.compiler.errors import Problem, SpecError
from nnspec.compiler.graph import Graph
from nnspec.compiler.layers import get_kind
from nnspec.compiler.layers.registry import torch_named_bias
from nnspec.compiler.schema import InitConfig, InitScheme

_NORMS = ("batchnorm", "layernorm", "groupnorm")
_FAN_BASED = ("kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform",
              "lecun_normal", "orthogonal")


def apply_scheme(tensor: torch.Tensor, scheme: InitScheme, defaults: InitConfig) -> None:
    """Initialise `tensor` in place with `scheme` (global `mode`/`nonlinearity` as fallbacks)."""
    name = scheme.scheme
    mode = scheme.mode or defaults.mode or "fan_in"
    nonlinearity = scheme.nonlinearity or defaults.nonlinearity or "relu"
    with torch.no_grad():
        if name == "default":
            return
        if name in ("kaiming_normal", "kaiming_uniform"):
            fn = nn.init.kaiming_normal_ if name == "kaiming_normal" else nn.init.kaiming_uniform_
            fn(tensor, a=scheme.a or 0.0, mode=mode, nonlinearity=nonlinearity)
        elif name == "xavier_normal":
            nn.init.xavier_normal_(tensor, gain=scheme.gain or 1.0)
        elif name == "xavier_uniform":
            nn.init.xavier_uniform_(tensor, gain=scheme.gain or 1.0)
        elif name == "lecun_normal":
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(tensor)
            tensor.normal_(0.0, (scheme.gain or 1.0) / math.sqrt(fan_in))
        elif name == "normal":
            tensor.normal_(scheme.mean, 1.0 if scheme.std is None else scheme.std)
        elif name == "trunc_normal":
            std = 1.0 if scheme.std is None else scheme.std
            lo = scheme.a if scheme.a is not None else scheme.mean - 2 * std
            hi = scheme.b if scheme.b is not None else scheme.mean + 2 * std
            nn.init.trunc_normal_(tensor, scheme.mean, std, lo, hi)
        elif name == "uniform":
            nn.init.uniform_(tensor, -1.0 if scheme.a is None else scheme.a,
                             1.0 if scheme.b is None else scheme.b)
        elif name == "orthogonal":
            nn.init.orthogonal_(tensor, gain=scheme.gain or 1.0)
        elif name == "zeros":
            tensor.zero_()
        elif name == "ones":
            tensor.fill_(1.0)
        elif name == "constant":
            tensor.fill_(0.0 if scheme.value is None else scheme.value)


def node_schemes(node, config: InitConfig) -> tuple[InitScheme | None, InitScheme | None]:
    """(weight scheme, bias scheme) for a node: its override, else its kind's or category's."""
    category = get_kind(node.kind).category
    weight = node.init.weight if node.init and node.init.weight else \
        config.scheme_for(node.kind, category)
    bias = node.init.bias if node.init and node.init.bias else config.bias
    return weight, bias


def keeps_init(module: nn.Module, pname: str) -> bool:
    """A parameter whose module gives it a meaning of its own (Swin V2's attention temperature,
    `keeps_init = ("logit_scale",)`), which a spec's weight and bias schemes leave alone."""
    owner, _, leaf = pname.rpartition(".")
    return leaf in getattr(module.get_submodule(owner), "keeps_init", ())


def given(scheme: InitScheme | None) -> bool:
    return scheme is not None and scheme.scheme != "default"


def initialize(model: nn.Module, graph: Graph, config: InitConfig) -> None:
    """Apply the spec's init to every node's parameters; raises SpecError on impossible schemes."""
    problems = []
    for node in graph.nodes:
        module = model.get_submodule(node.id)
        weight, bias = node_schemes(node, config)
        for pname, param in module.named_parameters():
            if keeps_init(module, pname):
                continue
            scheme = bias if torch_named_bias(pname) else weight
            if not given(scheme):
                continue
            if scheme.scheme in _FAN_BASED and param.dim() < 2:
                problems.append(Problem(
                    f"{scheme.scheme} needs a weight with 2 or more dims, but {node.id}.{pname} "
                    f"has shape {tuple(param.shape)}", path=node.path, mark=node.mark,
                    hint="use normal, zeros, ones or constant for biases and norm weights"))
                continue
            apply_scheme(param, scheme, config)
    if config.zero_init_residual:
        for residual in graph.residuals:
            norms = [n for n in residual.body if graph.node(n).kind in _NORMS]
            if norms:
                module = model.get_submodule(norms[-1])
                if getattr(module, "weight", None) is not None:
                    with torch.no_grad():
                        module.weight.zero_()
    if problems:
        raise SpecError(problems)
