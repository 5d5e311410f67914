"""How each module class a layer kind builds is written as Python source: one table.

A rule either constructs the module (`constructor`: the call that builds an equal module, its
arguments with their defaults so unchanged ones are left out) or, for parameterless modules
with no torch counterpart, writes the operation inline in `forward` (`expression`). `helpers`
names the classes the generated file must define (templates/codegen/helpers/<name>.py.j2).

Adding a layer kind whose `build` returns a new module class means one `register_codegen`
call (a plugin can make it too); a class without a rule stops codegen with a message naming
the class and the layer kind.

Size: the table of how every built-in layer kind's module is written as source, one short rule
per kind, so it grows with the registry (a plugin registers its rule with register_codegen).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from nnspec.compiler import modules, windows
from nnspec.compiler.errors import ExportError
from nnspec.runtime.codegen.format import Brackets, Call, Code

REQUIRED = object()  # keyword with no default: always written


@dataclass(frozen=True)
class Ctor:
    """A constructor call: positional (name, value) pairs, keyword (name, value, default)."""

    func: str
    args: tuple[tuple[str, Any], ...] = ()
    kwargs: tuple[tuple[str, Any, Any], ...] = ()


@dataclass(frozen=True)
class ModuleRule:
    constructor: Callable[[nn.Module, Any], Ctor] | None = None
    expression: Callable[[nn.Module, Any, list[str]], Any] | None = None
    helpers: tuple[str, ...] = ()


_RULES: dict[type, ModuleRule] = {}


def register_codegen(module_class: type, rule: ModuleRule) -> None:
    """Teach codegen to write `module_class` (exact class; a duplicate is refused)."""
    if module_class in _RULES:
        raise ValueError(f"codegen already has a rule for {module_class.__name__}")
    if (rule.constructor is None) == (rule.expression is None):
        raise ValueError("a codegen rule needs exactly one of constructor or expression")
    _RULES[module_class] = rule


def rule_for(module: nn.Module, node: Any) -> ModuleRule:
    rule = _RULES.get(type(module))
    if rule is None:
        raise ExportError(
            f"codegen cannot write a {type(module).__qualname__} (layer {node.id!r}, kind "
            f"{node.kind!r})\n    hint: teach it with "
            "nnspec.runtime.codegen.modules.register_codegen (see the README: How layers are written, and adding a layer kind)"
        )
    return rule


def scalar(value: Any) -> Any:
    """(3, 3) -> 3: torch accepts an int wherever every spatial dim is equal."""
    if isinstance(value, tuple | list) and value and all(v == value[0] for v in value):
        return value[0]
    return tuple(value) if isinstance(value, list) else value


def class_expression(cls: type) -> str:
    """How the generated file names a module class (for isinstance checks in init)."""
    if getattr(nn, cls.__name__, None) is cls:
        return f"nn.{cls.__name__}"
    if cls is modules.Scale:
        return "LayerScale"
    for helper_class, rule in _RULES.items():
        if helper_class is cls and rule.helpers:
            return rule.helpers[0]
    return f"{cls.__module__}.{cls.__qualname__}"


def _torch_name(module: nn.Module) -> str:
    return f"nn.{type(module).__name__}"


def _conv(m, node) -> Ctor:
    kwargs = [
        ("kernel_size", scalar(m.kernel_size), REQUIRED),
        ("stride", scalar(m.stride), 1),
        ("padding", m.padding if isinstance(m.padding, str) else scalar(m.padding), 0),
    ]
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        kwargs.append(("output_padding", scalar(m.output_padding), 0))
    kwargs += [
        ("dilation", scalar(m.dilation), 1),
        ("groups", m.groups, 1),
        ("bias", m.bias is not None, True),
    ]
    if not isinstance(m, nn.modules.conv._ConvTransposeNd):
        kwargs.append(("padding_mode", m.padding_mode, "zeros"))
    return Ctor(
        _torch_name(m),
        (("in_channels", m.in_channels), ("out_channels", m.out_channels)),
        tuple(kwargs),
    )


def _linear(m, node) -> Ctor:
    return Ctor(
        "nn.Linear",
        (("in_features", m.in_features), ("out_features", m.out_features)),
        (("bias", m.bias is not None, True),),
    )


def _batchnorm(m, node) -> Ctor:
    return Ctor(
        _torch_name(m),
        (("num_features", m.num_features),),
        (
            ("eps", m.eps, 1e-5),
            ("momentum", m.momentum, 0.1),
            ("affine", m.affine, True),
            ("track_running_stats", m.track_running_stats, True),
        ),
    )


def _layernorm(m, node) -> Ctor:
    return Ctor(
        "nn.LayerNorm",
        (("normalized_shape", scalar(m.normalized_shape)),),
        (
            ("eps", m.eps, 1e-5),
            ("elementwise_affine", m.elementwise_affine, True),
            ("bias", m.bias is not None or not m.elementwise_affine, True),
        ),
    )


def _groupnorm(m, node) -> Ctor:
    return Ctor(
        "nn.GroupNorm",
        (("num_groups", m.num_groups), ("num_channels", m.num_channels)),
        (("eps", m.eps, 1e-5), ("affine", m.affine, True)),
    )


def _lrn(m, node) -> Ctor:
    return Ctor(
        "nn.LocalResponseNorm",
        (("size", m.size),),
        (("alpha", m.alpha, 1e-4), ("beta", m.beta, 0.75), ("k", m.k, 1.0)),
    )


def _dropout(m, node) -> Ctor:
    return Ctor(_torch_name(m), (), (("p", m.p, 0.5),))


def _no_args(m, node) -> Ctor:
    return Ctor(_torch_name(m))


def _maxpool(m, node) -> Ctor:
    kernel = scalar(m.kernel_size)
    return Ctor(
        _torch_name(m),
        (("kernel_size", kernel),),
        (
            ("stride", scalar(m.stride), kernel),
            ("padding", scalar(m.padding), 0),
            ("dilation", scalar(m.dilation), 1),
            ("ceil_mode", m.ceil_mode, False),
        ),
    )


def _avgpool(m, node) -> Ctor:
    kernel = scalar(m.kernel_size)
    return Ctor(
        _torch_name(m),
        (("kernel_size", kernel),),
        (
            ("stride", scalar(m.stride), kernel),
            ("padding", scalar(m.padding), 0),
            ("ceil_mode", m.ceil_mode, False),
            ("count_include_pad", m.count_include_pad, True),
        ),
    )


def _adaptive(m, node) -> Ctor:
    return Ctor(_torch_name(m), (("output_size", scalar(m.output_size)),))


def _upsample(m, node) -> Ctor:
    size = scalar(m.size) if m.size is not None else None
    return Ctor(
        "nn.Upsample",
        (),
        (
            ("size", size, None),
            ("scale_factor", m.scale_factor, None),
            ("mode", m.mode, "nearest"),
            ("align_corners", m.align_corners, None),
        ),
    )


def _flatten(m, node) -> Ctor:
    return Ctor("nn.Flatten", (), (("start_dim", m.start_dim, 1), ("end_dim", m.end_dim, -1)))


def _embedding(m, node) -> Ctor:
    return Ctor(
        "nn.Embedding",
        (("num_embeddings", m.num_embeddings), ("embedding_dim", m.embedding_dim)),
        (("padding_idx", m.padding_idx, None),),
    )


_TORCH_RULES: list[tuple[tuple[type, ...], Callable]] = [
    (
        (
            nn.Conv1d,
            nn.Conv2d,
            nn.Conv3d,
            nn.ConvTranspose1d,
            nn.ConvTranspose2d,
            nn.ConvTranspose3d,
        ),
        _conv,
    ),
    ((nn.Linear,), _linear),
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), _batchnorm),
    ((nn.LayerNorm,), _layernorm),
    ((nn.GroupNorm,), _groupnorm),
    ((nn.LocalResponseNorm,), _lrn),
    ((nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d), _dropout),
    (
        (
            nn.ReLU,
            nn.ReLU6,
            nn.SiLU,
            nn.Sigmoid,
            nn.Tanh,
            nn.Hardswish,
            nn.Hardsigmoid,
            nn.Identity,
        ),
        _no_args,
    ),
    (
        (nn.LeakyReLU,),
        lambda m, node: Ctor("nn.LeakyReLU", (), (("negative_slope", m.negative_slope, 0.01),)),
    ),
    ((nn.GELU,), lambda m, node: Ctor("nn.GELU", (), (("approximate", m.approximate, "none"),))),
    ((nn.Softmax,), lambda m, node: Ctor("nn.Softmax", (), (("dim", m.dim, REQUIRED),))),
    ((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d), _maxpool),
    ((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), _avgpool),
    (
        (
            nn.AdaptiveAvgPool1d,
            nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d,
            nn.AdaptiveMaxPool1d,
            nn.AdaptiveMaxPool2d,
            nn.AdaptiveMaxPool3d,
        ),
        _adaptive,
    ),
    ((nn.Upsample,), _upsample),
    ((nn.Flatten,), _flatten),
    ((nn.Embedding,), _embedding),
]
for _classes, _constructor in _TORCH_RULES:
    for _cls in _classes:
        register_codegen(_cls, ModuleRule(constructor=_constructor))


# ------------------------------------------------------------- nnspec's own modules


def _recurrent(name: str) -> Callable[[nn.Module, Any], Ctor]:
    def constructor(m, node) -> Ctor:
        return Ctor(
            name,
            (("input_size", m.input_size), ("hidden_size", m.hidden_size)),
            (
                ("num_layers", m.num_layers, 1),
                ("bidirectional", m.bidirectional, False),
                ("dropout", m.dropout, 0.0),
                ("last_only", m.last_only, False),
            ),
        )

    return constructor


register_codegen(
    modules.PatchEmbed,
    ModuleRule(
        constructor=lambda m, node: Ctor(
            "PatchEmbed",
            (
                ("in_channels", m.proj.in_channels),
                ("dim", m.proj.out_channels),
                ("size", m.proj.kernel_size[0]),
            ),
        ),
        helpers=("PatchEmbed",),
    ),
)
register_codegen(
    modules.ClassToken,
    ModuleRule(
        constructor=lambda m, node: Ctor("ClassToken", (("dim", m.token.shape[-1]),)),
        helpers=("ClassToken",),
    ),
)
register_codegen(
    modules.PositionEmbedding,
    ModuleRule(
        constructor=lambda m, node: Ctor(
            "PositionEmbedding",
            (("length", m.embedding.shape[1]), ("dim", m.embedding.shape[2])),
            (("std", node.config.std, 0.02),),
        ),
        helpers=("PositionEmbedding",),
    ),
)
register_codegen(
    modules.SelfAttention,
    ModuleRule(
        constructor=lambda m, node: Ctor(
            "SelfAttention",
            (("dim", m.embed_dim), ("heads", m.num_heads)),
            (
                ("dropout", m.dropout, 0.0),
                ("bias", m.in_proj_bias is not None, True),
                ("scale", m.scale, None),
                ("window", m.window, None),
                ("mlp", m.mlp, None),
                ("cosine", m.cosine, False),
            ),
        ),
        helpers=("SelfAttention",),
    ),
)


def _along_dim(func: str, first: Callable[[Any], tuple]) -> Callable[[nn.Module, Any], Ctor]:
    """A torch module with its dim moved (LinearAlongDim, ...): its own arguments plus `dim`."""

    def constructor(m, node) -> Ctor:
        args, kwargs = first(m)
        return Ctor(func, args, (*kwargs, ("dim", m.dim, REQUIRED)))

    return constructor


for _cls, _first in (
    (
        modules.LinearAlongDim,
        lambda m: (
            (("in_features", m.in_features), ("out_features", m.out_features)),
            (("bias", m.bias is not None, True),),
        ),
    ),
    (
        modules.LayerNormAlongDim,
        lambda m: (
            (("size", m.normalized_shape[0]),),
            (
                ("eps", m.eps, 1e-5),
                ("elementwise_affine", m.elementwise_affine, True),
                ("bias", m.bias is not None or not m.elementwise_affine, True),
            ),
        ),
    ),
    (
        modules.GroupNormAlongDim,
        lambda m: (
            (("groups", m.num_groups), ("channels", m.num_channels)),
            (("eps", m.eps, 1e-5), ("affine", m.affine, True)),
        ),
    ),
):
    register_codegen(
        _cls, ModuleRule(constructor=_along_dim(_cls.__name__, _first), helpers=(_cls.__name__,))
    )


def _geometry(m, node) -> tuple[tuple[str, Any], ...]:
    return (("spatial", tuple(m.spatial)), ("size", tuple(m.size)))


register_codegen(
    windows.WindowPartition,
    ModuleRule(
        constructor=lambda m, node: Ctor(
            "WindowPartition", _geometry(m, node), (("grid", m.grid, False),)
        ),
        helpers=("WindowPartition",),
    ),
)
register_codegen(
    windows.WindowReverse,
    ModuleRule(
        constructor=lambda m, node: Ctor(
            "WindowReverse", _geometry(m, node), (("grid", m.grid, False),)
        ),
        helpers=("WindowReverse",),
    ),
)
register_codegen(
    windows.ShiftedWindowMask,
    ModuleRule(
        constructor=lambda m, node: Ctor(
            "ShiftedWindowMask", (*_geometry(m, node), ("shift", tuple(m.shift)))
        ),
        helpers=("ShiftedWindowMask", "WindowPartition"),
    ),
)
register_codegen(
    windows.MergePatches,
    ModuleRule(
        constructor=lambda m, node: Ctor(
            "MergePatches", (("spatial", tuple(m.spatial)), ("size", m.size))
        ),
        helpers=("MergePatches",),
    ),
)
register_codegen(modules.LSTM, ModuleRule(constructor=_recurrent("LSTM"), helpers=("LSTM",)))
register_codegen(modules.GRU, ModuleRule(constructor=_recurrent("GRU"), helpers=("GRU",)))
register_codegen(
    modules.Normalize,
    ModuleRule(
        constructor=lambda m, node: Ctor(
            "Normalize",
            (
                ("mean", tuple(node.config.mean)),
                ("std", tuple(node.config.std)),
                ("rank", len(node.in_shapes[0])),
            ),
        ),
        helpers=("Normalize",),
    ),
)


def _scale_ctor(m, node) -> Ctor:
    return Ctor("LayerScale", (("value", m.value), ("shape", tuple(m.weight.shape))))


def _sum(m, node, xs):
    return Code(" + ".join(xs))


def _product(m, node, xs):
    return Code(" * ".join(xs))


def _concat(m, node, xs):
    return Call("torch.cat", (Brackets("[", tuple(Code(x) for x in xs)),), (("dim", m.dim),))


def _reduce_dims(dims: tuple[int, ...]) -> Any:
    return dims[0] if len(dims) == 1 else tuple(dims)


def _global_pool(m, node, xs):
    dims = tuple(range(2, len(node.in_shapes[0]) + 1))
    method = "mean" if m.mode == "avg" else "amax"
    kwargs = (("keepdim", True),) if m.keep_dims else ()
    return Call(f"{xs[0]}.{method}", (_reduce_dims(dims),), kwargs)


def _mean(m, node, xs):
    kwargs = (("keepdim", True),) if m.keep_dims else ()
    return Call(f"{xs[0]}.mean", (_reduce_dims(m.dims),), kwargs)


def _select(m, node, xs):
    if m.dim == 1:
        return Code(f"{xs[0]}[:, {m.index}]")
    return Call(f"{xs[0]}.select", (m.dim, m.index))


def _scale_or_expression(m, node, xs):
    return Code(f"{xs[0]} * {m.value!r}")


register_codegen(modules.Add, ModuleRule(expression=_sum))
register_codegen(modules.Multiply, ModuleRule(expression=_product))
register_codegen(modules.Concat, ModuleRule(expression=_concat))
register_codegen(modules.GlobalPool, ModuleRule(expression=_global_pool))
register_codegen(modules.Mean, ModuleRule(expression=_mean))
register_codegen(
    modules.Reshape,
    ModuleRule(
        expression=lambda m, node, xs: Call(
            f"{xs[0]}.reshape", (Code(f"{xs[0]}.shape[0]"), *m.shape)
        )
    ),
)
register_codegen(
    modules.Permute,
    ModuleRule(expression=lambda m, node, xs: Call(f"{xs[0]}.permute", tuple(m.dims))),
)
register_codegen(modules.Select, ModuleRule(expression=_select))
register_codegen(
    modules.StochasticDepth,
    ModuleRule(
        constructor=lambda m, node: Ctor(
            "StochasticDepth", (("p", m.p),), (("mode", m.mode, "row"),)
        ),
        helpers=("StochasticDepth",),
    ),
)
register_codegen(
    modules.Slice,
    ModuleRule(expression=lambda m, node, xs: Call(f"{xs[0]}.narrow", (m.dim, m.start, m.length))),
)
register_codegen(
    windows.Roll,
    ModuleRule(
        expression=lambda m, node, xs: Call(
            "torch.roll", (Code(xs[0]), _reduce_dims(m.shifts), _reduce_dims(m.dims))
        )
    ),
)


def scale_rule(module: nn.Module) -> ModuleRule:
    """`scale` is a constant factor (inline) or a learnable one (a LayerScale module)."""
    if module.weight is None:
        return ModuleRule(expression=_scale_or_expression)
    return ModuleRule(constructor=_scale_ctor, helpers=("LayerScale",))


def module_rule(module: nn.Module, node: Any) -> ModuleRule:
    """The rule for `module` (the one place that looks at an instance, for `scale`)."""
    if type(module) is modules.Scale:
        return scale_rule(module)
    return rule_for(module, node)
