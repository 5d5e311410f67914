"""The generated network's `_init_weights`: the spec's `init:` written as torch.nn.init calls.

It mirrors compiler/init.py parameter by parameter: a module class whose parameters all get one
scheme becomes one branch of a loop over `self.modules()` (torchvision's style); parameters
with per-node overrides are initialised by path after it; `zero_init_residual` zeroes the last
norm of each residual body, per block class where every call agrees.
"""

from __future__ import annotations

from typing import Any

from nnspec.compiler.init import keeps_init
from nnspec.compiler.layers import get_kind
from nnspec.compiler.layers.registry import torch_named_bias
from nnspec.compiler.schema import InitConfig, InitScheme
from nnspec.runtime.codegen.format import Brackets, Call, Code, flat, layout
from nnspec.runtime.codegen.modules import class_expression
from nnspec.runtime.codegen.structure import Part, Structure, is_identifier, relative

_NORMS = ("batchnorm", "layernorm", "groupnorm")


def module_access(path: str, base: str = "self") -> str:
    """Source that reaches the submodule at dotted `path` from `base`."""
    if not path:
        return base
    if all(is_identifier(p) for p in path.split(".")):
        return f"{base}.{path}"
    return f'{base}.get_submodule("{path}")'


def scheme_calls(scheme: InitScheme, defaults: InitConfig, target: str) -> list[Any]:
    """torch.nn.init calls that give `target` the distribution compiler/init.py gives it."""
    t = Code(target)
    name = scheme.scheme
    if name in ("kaiming_normal", "kaiming_uniform"):
        kwargs = []
        if scheme.a:
            kwargs.append(("a", scheme.a))
        mode = scheme.mode or defaults.mode or "fan_in"
        if mode != "fan_in":
            kwargs.append(("mode", mode))
        kwargs.append(("nonlinearity", scheme.nonlinearity or defaults.nonlinearity or "relu"))
        return [Call(f"nn.init.{name}_", (t,), tuple(kwargs))]
    if name in ("xavier_normal", "xavier_uniform", "orthogonal"):
        gain = (("gain", scheme.gain),) if scheme.gain not in (None, 1.0) else ()
        return [Call(f"nn.init.{name}_", (t,), gain)]
    if name == "lecun_normal":  # N(0, 1/fan_in): Kaiming's fan_in rule with gain 1
        calls: list[Any] = [Call("nn.init.kaiming_normal_", (t,), (("nonlinearity", "linear"),))]
        if scheme.gain not in (None, 1.0):
            calls.append(Call(f"{target}.mul_", (scheme.gain,)))
        return calls
    if name == "normal":
        std = 1.0 if scheme.std is None else scheme.std
        return [Call("nn.init.normal_", (t,), (("mean", scheme.mean), ("std", std)))]
    if name == "trunc_normal":
        std = 1.0 if scheme.std is None else scheme.std
        lo = scheme.a if scheme.a is not None else scheme.mean - 2 * std
        hi = scheme.b if scheme.b is not None else scheme.mean + 2 * std
        return [
            Call(
                "nn.init.trunc_normal_",
                (t,),
                (("mean", scheme.mean), ("std", std), ("a", lo), ("b", hi)),
            )
        ]
    if name == "uniform":
        lo = -1.0 if scheme.a is None else scheme.a
        hi = 1.0 if scheme.b is None else scheme.b
        return [Call("nn.init.uniform_", (t,), (("a", lo), ("b", hi)))]
    if name in ("zeros", "ones"):
        return [Call(f"nn.init.{name}_", (t,))]
    if name == "constant":
        return [Call("nn.init.constant_", (t, 0.0 if scheme.value is None else scheme.value))]
    return []  # default: torch's own initialisation, done at construction


def _param_scheme(node, pname: str, config: InitConfig) -> InitScheme | None:
    """Which scheme compiler/init.py applies to `pname` of `node` (None: torch's default)."""
    category = get_kind(node.kind).category
    weight = (
        node.init.weight
        if node.init and node.init.weight
        else getattr(config, category, None)
        if category
        else None
    )
    bias = node.init.bias if node.init and node.init.bias else config.bias
    scheme = bias if torch_named_bias(pname) else weight
    return None if scheme is None or scheme.scheme == "default" else scheme


def init_lines(s: Structure, depth: int) -> list[str]:
    """Body lines of `_init_weights` (without its signature), at indentation `depth`."""
    config = s.graph.spec.init if s.graph.spec is not None else InitConfig()
    owners: dict[tuple[type, str], list[tuple[str, tuple, InitScheme | None]]] = {}
    instances: dict[type, int] = {}
    for node in s.graph.nodes:
        module = s.modules[node.id]
        for _, sub in module.named_modules():
            instances[type(sub)] = instances.get(type(sub), 0) + 1
        for pname, _ in module.named_parameters():
            owner, _, local = f"{node.id}.{pname}".rpartition(".")
            owner_module = module.get_submodule(pname.rpartition(".")[0])
            scheme = None if keeps_init(module, pname) else _param_scheme(node, pname, config)
            key = tuple(flat(c) for c in scheme_calls(scheme, config, "p")) if scheme else ()
            owners.setdefault((type(owner_module), local), []).append((owner, key, scheme))
    by_class: dict[type, list[tuple[str, tuple, InitScheme, bool]]] = {}
    explicit: list[str] = []
    for (cls, local), uses in owners.items():
        keys = {key for _, key, _ in uses}
        if len(keys) == 1 and () not in keys:
            guarded = len(uses) < instances[cls]
            by_class.setdefault(cls, []).append((local, keys.pop(), uses[0][2], guarded))
            continue
        for owner, _, scheme in uses:
            if scheme is not None:
                target = f"{module_access(owner)}.{local}"
                explicit.extend(_calls(scheme, config, target, depth))
    lines: list[str] = []
    groups: dict[tuple, list[type]] = {}
    schemes: dict[tuple, list[tuple[str, InitScheme, bool]]] = {}
    for cls, params in by_class.items():
        key = tuple((local, key, guarded) for local, key, _, guarded in params)
        groups.setdefault(key, []).append(cls)
        schemes[key] = [(local, scheme, guarded) for local, _, scheme, guarded in params]
    for i, (key, classes) in enumerate(groups.items()):
        names = [Code(class_expression(c)) for c in classes]
        keyword = "if" if i == 0 else "elif"
        if len(names) == 1:
            lines.extend(layout(f"{keyword} type(module) is ", names[0], ":", depth + 1))
        else:
            lines.extend(
                layout(f"{keyword} type(module) in ", Brackets("(", tuple(names)), ":", depth + 1)
            )
        for local, scheme, guarded in schemes[key]:
            if guarded:
                lines.append(f"{'    ' * (depth + 2)}if module.{local} is not None:")
            lines.extend(_calls(scheme, config, f"module.{local}", depth + 2 + guarded))
    if lines:
        lines.insert(0, f"{'    ' * depth}for module in self.modules():")
    lines.extend(explicit)
    if config.zero_init_residual:
        lines.extend(_zero_init_residual(s, depth))
    return lines


def _calls(scheme: InitScheme, config: InitConfig, target: str, depth: int) -> list[str]:
    return [
        line
        for call in scheme_calls(scheme, config, target)
        for line in layout("", call, depth=depth)
    ]


def _zero_init_residual(s: Structure, depth: int) -> list[str]:
    """Zero the last norm's weight of each residual body: per block class where the norm sits
    at the same place in every call, else by path."""
    by_part = {p.path: p for p in _parts(s.root)}
    per_variant: dict[int, list[tuple[str, str]]] = {}
    explicit = []
    for residual in s.graph.residuals:
        norms = [n for n in residual.body if s.graph.node(n).kind in _NORMS]
        if not norms or getattr(s.modules[norms[-1]], "weight", None) is None:
            continue
        part = by_part.get(residual.id)
        if part is not None and part.role == "block":
            per_variant.setdefault(id(part.variant), []).append(
                (relative(norms[-1], part), norms[-1])
            )
        else:
            explicit.append(norms[-1])
    classes: dict[str, list[Code]] = {}
    for variant in s.variants:
        norms = per_variant.get(id(variant), [])
        rels = {rel for rel, _ in norms}
        if len(rels) == 1 and len(norms) == len(variant.calls):
            classes.setdefault(rels.pop(), []).append(Code(variant.class_name))
        else:
            explicit.extend(path for _, path in norms)
    lines = []
    if classes:
        lines.append(f"{'    ' * depth}for module in self.modules():")
        for i, (rel, names) in enumerate(classes.items()):
            test = names[0] if len(names) == 1 else Brackets("(", tuple(names))
            keyword = "if" if i == 0 else "elif"
            lines.extend(layout(f"{keyword} isinstance(module, ", test, "):", depth + 1))
            target = Code(f"{module_access(rel, 'module')}.weight")
            lines.extend(layout("", Call("nn.init.zeros_", (target,)), depth=depth + 2))
    for path in explicit:
        target = Code(f"{module_access(path)}.weight")
        lines.extend(layout("", Call("nn.init.zeros_", (target,)), depth=depth))
    return lines


def _parts(part: Part) -> list[Part]:
    out = []
    for child in part.children:
        if isinstance(child, Part):
            out.append(child)
            out.extend(_parts(child))
    return out
