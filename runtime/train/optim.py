"""The spec's `optimizer` section as a torch.optim optimizer with parameter groups.

Groups come from two choices per parameter: which `groups` entry (if any) claims it, and
whether weight decay applies to it (`no_decay`: roles or glob patterns on names). A parameter's
role (weight, bias, norm, embedding, scale) is what its layer kind's registry entry declares
(`LayerKind.param_roles`); parameters outside the spec's nodes fall back to torch's naming,
and every parameter of a torch norm module is a norm parameter. Decay is either L2 (torch's
`weight_decay`, added to the gradient) or decoupled (the weight shrinks by lr * decay outside
the update, as AdamW does; for SGD and RMSprop a step pre-hook applies it).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import torch
from torch import nn

from nnspec.compiler.errors import UsageError
from nnspec.compiler.layers import get_kind
from nnspec.compiler.layers.registry import ROLES, torch_roles
from nnspec.compiler.training_schema import OptimizerConfig

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # batch and instance norm
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)

DECOUPLED_KEY = "decoupled_weight_decay"
#: the roles `no_decay` may name (every role but a plain weight's)
NO_DECAY_ROLES = tuple(role for role in ROLES if role != "weight")


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    """Build the optimizer the spec describes for `model`'s trainable parameters.

    Each param group keeps `initial_lr` (its base lr before schedules) so a schedule can scale it.
    """
    groups = param_groups(model, config)
    if not groups:
        raise UsageError("the model has no trainable parameters: there is nothing to train")
    decoupled = config.decay_mode == "decoupled"
    if config.type == "lbfgs":
        optimizer = _lbfgs(groups, config)
    elif config.type in ("adam", "adamw"):
        cls = torch.optim.AdamW if decoupled else torch.optim.Adam
        optimizer = cls(groups, lr=config.lr, betas=config.betas, eps=config.eps)
    elif config.type == "sgd":
        optimizer = torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov
        )
    else:
        optimizer = torch.optim.RMSprop(
            groups, lr=config.lr, alpha=config.alpha, eps=config.eps, momentum=config.momentum
        )
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    if decoupled and config.type in ("sgd", "rmsprop"):
        for group in optimizer.param_groups:
            group[DECOUPLED_KEY] = group["weight_decay"]
            group["weight_decay"] = 0.0
        optimizer.register_step_pre_hook(_apply_decoupled_decay)
    return optimizer


def parameter_roles(model: nn.Module) -> dict[str, frozenset[str]]:
    """Every parameter's roles by name: declared by the layer kind of the spec node holding it
    (a compiled model's `graph`), else torch's naming; plus `norm` inside a torch norm module."""
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters()
    }
    declared: dict[str, frozenset[str]] = {}
    graph = getattr(model, "graph", None)
    for node in graph.nodes if graph is not None else ():
        kind = get_kind(node.kind)
        for pname, _ in model.get_submodule(node.id).named_parameters():
            declared[f"{node.id}.{pname}"] = kind.roles_of(pname)
    roles = {}
    for name, param in model.named_parameters():
        found = declared.get(name) or torch_roles(name)
        roles[name] = found | {"norm"} if id(param) in norm_params else found
    return roles


def _lbfgs(groups: list[dict], config: OptimizerConfig) -> torch.optim.LBFGS:
    """torch.optim.LBFGS: one parameter group, no weight decay (the spec check refuses the
    rest with their places; this guards callers that build an optimizer directly)."""
    if len(groups) != 1 or config.weight_decay:
        raise UsageError("lbfgs takes one parameter group and no weight decay: drop "
                         "optimizer.weight_decay, no_decay and groups")
    return torch.optim.LBFGS(
        groups, lr=config.lr, max_iter=config.max_iter, max_eval=config.max_eval,
        tolerance_grad=config.tolerance_grad, tolerance_change=config.tolerance_change,
        history_size=config.history_size, line_search_fn=config.line_search_fn)


def refuse_closure_conflicts(settings, distributed: bool) -> None:
    """The effective training settings (spec plus command-line flags) an LBFGS run cannot
    have: mixed precision, gradient accumulation, gradient clipping, several processes.

    Raises:
        UsageError: naming the setting and how to drop it.
    """
    found = [
        (settings.amp, "mixed precision (--amp / train.amp)"),
        (settings.accumulate > 1, "gradient accumulation (train.accumulate)"),
        (settings.grad_clip is not None, "gradient clipping (train.grad_clip)"),
        (distributed, "several processes (torchrun): ranks would disagree on the line search"),
    ]
    names = [name for present, name in found if present]
    if names:
        raise UsageError(f"optimizer.type: lbfgs cannot train with {'; '.join(names)}\n    "
                         "hint: L-BFGS re-evaluates the full float32 loss of each batch in its "
                         "step: drop these, or use sgd/adam")


def param_groups(model: nn.Module, config: OptimizerConfig) -> list[dict]:
    """Split trainable parameters into torch param groups (lr, weight_decay, names)."""
    roles = parameter_roles(model)
    buckets: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        index = _claiming_group(name, config)
        decays = not _exempt_from_decay(name, roles[name], config.no_decay)
        bucket = buckets.get((index, decays))
        if bucket is None:
            settings = config.groups[index] if index >= 0 else None
            lr = settings.lr if settings and settings.lr is not None else config.lr
            decay = (
                settings.weight_decay
                if settings and settings.weight_decay is not None
                else config.weight_decay
            )
            bucket = {"params": [], "names": [], "lr": lr, "weight_decay": decay if decays else 0.0}
            buckets[(index, decays)] = bucket
        bucket["params"].append(param)
        bucket["names"].append(name)
    return [buckets[key] for key in sorted(buckets)]


def _claiming_group(name: str, config: OptimizerConfig) -> int:
    """Index of the first `groups` entry whose pattern matches `name` or a module id above it."""
    for index, group in enumerate(config.groups):
        if matches_id(name, group.params):
            return index
    return -1


def matches_id(name: str, patterns: list[str]) -> bool:
    """True when a glob pattern matches `name` (a parameter name or module id) or the id of a
    module above it: `classifier` matches `classifier.weight`, `stage1.*` matches
    `stage1.conv1.weight`."""
    parts = name.split(".")
    candidates = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
    return any(fnmatchcase(c, p) for p in patterns for c in candidates)


def _exempt_from_decay(name: str, roles: frozenset[str], no_decay: list[str]) -> bool:
    """True when a `no_decay` entry names one of the parameter's roles (bias, norm, embedding,
    scale) or is a glob matching its name."""
    return any(
        entry in roles if entry in NO_DECAY_ROLES else fnmatchcase(name, entry)
        for entry in no_decay
    )


@torch.no_grad()
def _apply_decoupled_decay(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    for group in optimizer.param_groups:
        decay = group.get(DECOUPLED_KEY, 0.0)
        if decay:
            for param in group["params"]:
                if param.grad is not None:
                    param.mul_(1.0 - group["lr"] * decay)


def momentum_of(group: dict) -> float:
    """The momentum a param group uses: `momentum` (SGD, RMSprop) or beta1 (Adam)."""
    return group["betas"][0] if "betas" in group else group.get("momentum", 0.0)


def set_momentum(group: dict, value: float) -> None:
    if "betas" in group:
        group["betas"] = (value, group["betas"][1])
    else:
        group["momentum"] = value
