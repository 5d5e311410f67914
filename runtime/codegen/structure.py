"""The module tree codegen writes: which scopes become block classes, which become
`nn.Sequential`s, which stay plain containers, and the variants of each block.

Every dotted prefix of a node id is a `Part` (the module hierarchy of the compiled model, so
state_dict keys match by construction). A block call becomes an instance of a generated class
when it is self-contained (one input, one output); a scope whose layers form a plain chain
becomes an `nn.Sequential`; anything else (long skips, merges) is a container whose data flow
its owner's `forward` spells out. Calls of one block that expand to different structures (with
or without a projection shortcut, say) become separate classes ("variants"); values that differ
between calls of one variant become constructor parameters, named after the block's args where
the values agree.

Size: one analysis - which block calls share a class (variants) and which of their values become
constructor parameters - whose steps share the Structure being built.
"""

from __future__ import annotations

import ast
import keyword
import re
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from nnspec.compiler.graph import Graph, Node, Scope
from nnspec.runtime.codegen.format import Code
from nnspec.runtime.codegen.modules import REQUIRED, module_rule

SEQUENTIAL_KINDS = (None, "sequence", "shortcut", "branch", "head")
_SIZE_NAMES = ("in_channels", "in_features")


@dataclass(eq=False)
class Part:
    path: str
    local: str
    parent: Part | None
    scope: Scope | None = None
    children: list[Any] = field(default_factory=list)  # Part | Node, in graph order
    role: str = "container"  # "root" | "block" | "sequential" | "container"
    members: list[Node] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    output: str | None = None
    variant: Variant | None = None


@dataclass
class Param:
    name: str
    annotation: str
    source: str  # "arg" | "input" | "slot"


@dataclass(eq=False)
class Variant:
    block: str
    key: tuple
    calls: list[Part]
    class_name: str = ""
    params: list[Param] = field(default_factory=list)
    resolved: dict[tuple, Any] = field(default_factory=dict)  # slot -> Code or literal
    omitted: set[tuple] = field(default_factory=set)
    call_kwargs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def depth(self) -> int:
        return self.calls[0].path.count(".")


@dataclass
class Structure:
    graph: Graph
    root: Part
    modules: dict[str, nn.Module]  # node id -> module (built on the meta device)
    variants: list[Variant]
    order: dict[str, int]  # node id -> index in graph order
    end_refs: set[str]  # values the caller sees: the output and the heads' outputs


def camel(name: str) -> str:
    text = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)
    return text if text and not text[0].isdigit() else f"Net{text}"


def identifier(name: str) -> str:
    text = re.sub(r"\W", "_", name)
    if not text or text[0].isdigit():
        text = f"_{text}"
    if keyword.iskeyword(text) or text in ("l", "O", "I"):
        text += "_"
    return text


def is_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def relative(ref: str, base: Part) -> str:
    return ref[len(base.path) + 1 :] if base.path else ref


def analyse(graph: Graph, modules: dict[str, nn.Module]) -> Structure:
    root = _tree(graph)
    order = {n.id: i for i, n in enumerate(graph.nodes)}
    end_refs = {graph.output, *(h.output for h in graph.heads.values())}
    consumers: dict[str, set[str]] = {}
    for node in graph.nodes:
        for ref in node.inputs:
            consumers.setdefault(ref, set()).add(node.id)
    structure = Structure(graph, root, modules, [], order, end_refs)
    _classify(root, structure, consumers)
    root.role = "root"
    root.inputs = list(graph.inputs)
    root.output = graph.output
    _assign_variants(structure)
    return structure


def _tree(graph: Graph) -> Part:
    scopes = {s.id: s for node in graph.nodes for s in node.scopes}
    root = Part("", "", None)
    parts = {"": root}
    for node in graph.nodes:
        segments = node.id.split(".")
        parent = root
        for i in range(1, len(segments)):
            path = ".".join(segments[:i])
            part = parts.get(path)
            if part is None:
                part = parts[path] = Part(path, segments[i - 1], parent, scopes.get(path))
                parent.children.append(part)
            parent = part
        parent.children.append(node)
    return root


def _classify(part: Part, s: Structure, consumers: dict[str, set[str]]) -> None:
    for child in part.children:
        if isinstance(child, Part):
            _classify(child, s, consumers)
            part.members.extend(child.members)
        else:
            part.members.append(child)
    if part.parent is None:
        return
    ids = {n.id for n in part.members}
    part.inputs = list(dict.fromkeys(r for n in part.members for r in n.inputs if r not in ids))
    outputs = [n.id for n in part.members if n.id in s.end_refs or consumers.get(n.id, set()) - ids]
    kind = part.scope.kind if part.scope else None
    if kind == "block" and len(part.inputs) == 1 and len(outputs) <= 1:
        part.role = "block"
        part.output = outputs[0] if outputs else part.members[-1].id
    elif kind in SEQUENTIAL_KINDS and _is_chain(part, outputs, s):
        part.role = "sequential"
        part.output = _unit_output(part.children[-1])
    else:
        part.role = "container"
        part.output = outputs[0] if len(outputs) == 1 else None


def _unit_inputs(child: Any) -> list[str]:
    return child.inputs


def _unit_output(child: Any) -> str:
    return child.output if isinstance(child, Part) else child.id


def _is_chain(part: Part, outputs: list[str], s: Structure) -> bool:
    if len(part.inputs) != 1 or not part.children:
        return False
    x = part.inputs[0]
    for child in part.children:
        if isinstance(child, Part):
            if child.role not in ("block", "sequential"):
                return False
        elif module_rule(s.modules[child.id], child).constructor is None:
            return False
        if _unit_inputs(child) != [x]:
            return False
        x = _unit_output(child)
    return set(outputs) <= {x}


# ------------------------------------------------------------------------------- variants


def _signature(part: Part, block: Part, s: Structure) -> tuple:
    items = []
    for child in part.children:
        if isinstance(child, Part):
            inner = child.variant.key if child.role == "block" else _signature(child, block, s)
            items.append(
                (
                    "part",
                    child.local,
                    child.role,
                    inner,
                    tuple(_rel_ref(r, block) for r in child.inputs),
                )
            )
        else:
            module = s.modules[child.id]
            rule = module_rule(module, child)
            shape = (
                ""
                if rule.constructor
                else repr(rule.expression(module, child, ["_"] * len(child.inputs)))
            )
            items.append(
                (
                    "node",
                    child.id.rsplit(".", 1)[-1],
                    type(module).__qualname__,
                    shape,
                    tuple(_rel_ref(r, block) for r in child.inputs),
                )
            )
    return tuple(items)


def _rel_ref(ref: str, block: Part) -> str:
    return relative(ref, block) if ref.startswith(block.path + ".") else "<input>"


def _blocks_post_order(part: Part) -> list[Part]:
    out = []
    for child in part.children:
        if isinstance(child, Part):
            out.extend(_blocks_post_order(child))
            if child.role == "block":
                out.append(child)
    return out


def _assign_variants(s: Structure) -> None:
    by_key: dict[tuple, Variant] = {}
    for part in _blocks_post_order(s.root):
        key = (part.scope.block, _signature(part, part, s))
        variant = by_key.get(key)
        if variant is None:
            variant = by_key[key] = Variant(part.scope.block, key, [])
        variant.calls.append(part)
        part.variant = variant
    # inner blocks first: an outer call's slots include its inner calls' parameters
    for variant in by_key.values():
        _parameterise(variant, s)
    s.variants = sorted(by_key.values(), key=lambda v: s.order[v.calls[0].members[0].id])


def slots(part: Part, base: Part, s: Structure) -> list[tuple[tuple, Any, Any]]:
    """(slot key, value, default) of every constructor argument under `part`, keys relative to
    `base` (the class being written)."""
    out = []
    for child in part.children:
        if isinstance(child, Part):
            if child.role == "block":
                variant = child.variant
                kwargs = variant.call_kwargs[variant.calls.index(child)]
                rel = relative(child.path, base)
                out.extend(((rel, p.name), kwargs[p.name], REQUIRED) for p in variant.params)
            else:
                out.extend(slots(child, base, s))
            continue
        module = s.modules[child.id]
        ctor = module_rule(module, child).constructor
        if ctor is None:
            continue
        call = ctor(module, child)
        rel = relative(child.id, base)
        out.extend(((rel, name), value, REQUIRED) for name, value in call.args)
        out.extend(((rel, name), value, default) for name, value, default in call.kwargs)
    return out


def same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if a is REQUIRED or b is REQUIRED:
        return a is b
    return (
        type(a) is type(b)
        and a == b
        or (isinstance(a, int | float) and isinstance(b, int | float) and a == b)
    )


def _parameterise(variant: Variant, s: Structure) -> None:
    calls = variant.calls
    per_call = [slots(call, call, s) for call in calls]
    candidates = _candidates(variant, s)
    used: dict[str, Param] = {}
    generic: list[Param] = []
    generic_values: list[dict[str, Any]] = [{} for _ in calls]
    for column, (key, _value, _default) in enumerate(per_call[0]):
        values = [row[column][1] for row in per_call]
        defaults = [row[column][2] for row in per_call]
        if all(same(v, values[0]) for v in values):
            # a value shared by all calls is written by name only where one of the block's
            # args (or expressions) clearly gives it: not the default, not a small number
            # that could agree by chance (a kernel of 1 is not "stride"), one candidate only
            named = [c for c in candidates if c[3] != "input" and _agrees(c[2], values)]
            if all(same(v, d) for v, d in zip(values, defaults, strict=True)):
                variant.omitted.add(key)
                variant.resolved[key] = values[0]
            elif _distinctive(values[0]) and (len(named) == 1 or _named_like(named, key)):
                _use(_named_like(named, key) or named[0], values, used, variant, key)
            else:
                variant.resolved[key] = values[0]
            continue
        agreeing = [c for c in candidates if _agrees(c[2], values)]
        match = _named_like(agreeing, key) or (agreeing[0] if agreeing else None)
        if match is not None:
            _use(match, values, used, variant, key)
            continue
        name = identifier(f"{key[0].replace('.', '_')}_{key[1]}")
        param = Param(name, _annotation(values[0]), "slot")
        generic.append(param)
        variant.resolved[key] = Code(name)
        for own, value in zip(generic_values, values, strict=True):
            own[name] = value
    arg_order = [name for name, _ in calls[0].scope.args]
    variant.params = (
        [used[n] for n in _SIZE_NAMES if n in used]
        + [used[n] for n in arg_order if n in used]
        + generic
    )
    for call, own in zip(calls, generic_values, strict=True):
        args = dict(call.scope.args)
        sizes = _input_sizes(call, s)
        kwargs = {}
        for param in variant.params:
            if param.source == "arg":
                kwargs[param.name] = args[param.name]
            elif param.source == "input":
                kwargs[param.name] = sizes[param.name]
            else:
                kwargs[param.name] = own[param.name]
        variant.call_kwargs.append(kwargs)


def _agrees(candidate: list, values: list) -> bool:
    return all(same(a, b) for a, b in zip(candidate, values, strict=True))


def _distinctive(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return abs(value) > 1
    return isinstance(value, str)


def _named_like(candidates: list[tuple], key: tuple) -> tuple | None:
    """The candidate named like the argument it fills (`in_channels` for `in_channels`)."""
    return next((c for c in candidates if c[0] == key[1]), None)


def _use(
    candidate: tuple, values: list, used: dict[str, Param], variant: Variant, key: tuple
) -> None:
    code, names, _, _ = candidate
    for name in names:
        source = "input" if name in _SIZE_NAMES else "arg"
        used.setdefault(name, Param(name, _annotation(values[0]), source))
    variant.resolved[key] = Code(code)


def _annotation(value: Any) -> str:
    for kind, text in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if isinstance(value, kind):
            return text
    if isinstance(value, tuple):
        return "tuple[int, ...]" if all(isinstance(v, int) for v in value) else "tuple"
    return "object"


def _input_sizes(call: Part, s: Structure) -> dict[str, int]:
    shape = s.graph.shape_of(call.inputs[0])
    return {"in_channels": shape[0], "in_features": shape[-1]}


def _candidates(variant: Variant, s: Structure) -> list[tuple[str, tuple[str, ...], list, str]]:
    """Named expressions for parameter columns, in order of preference: the block's args,
    the `${...}` expressions in its body, then the block input's size."""
    from nnspec.compiler.substitute import SubstitutionError, substitute

    calls = variant.calls
    arg_values = [dict(call.scope.args) for call in calls]
    names = [n for n, v in calls[0].scope.args if isinstance(v, int | float | bool | str)]
    out = [(n, (n,), [a[n] for a in arg_values], "arg") for n in names]
    block = s.graph.spec.blocks.get(variant.block) if s.graph.spec is not None else None
    sizes = [_input_sizes(call, s) for call in calls]
    # block bodies may also read their input's channel count as `in_channels` (expand.py)
    envs = [
        {**a, "in_channels": size["in_channels"]} for a, size in zip(arg_values, sizes, strict=True)
    ]
    for text in _expressions(block.model_dump() if block is not None else {}):
        code = _python_expression(text, {*names, "in_channels"})
        if code is None or code in names:
            continue
        try:
            values = [substitute("${" + text + "}", env) for env in envs]
        except SubstitutionError:
            continue
        used = tuple(
            sorted(
                {n.id for n in ast.walk(ast.parse(code, mode="eval")) if isinstance(n, ast.Name)}
            )
        )
        out.append((code, used, values, "arg"))
    rank = len(s.graph.shape_of(calls[0].inputs[0]))
    size_names = ("in_channels", "in_features") if rank > 2 else ("in_features", "in_channels")
    for name in size_names:
        if name not in names:
            out.append((name, (name,), [size[name] for size in sizes], "input"))
    return out


_EXPR = re.compile(r"^\$\{(.+)\}$", re.S)
_SAFE_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.Name,
    ast.Constant,
    ast.Load,
    ast.operator,
    ast.unaryop,
)


def _expressions(data: Any) -> list[str]:
    if isinstance(data, str):
        match = _EXPR.match(data)
        return [match.group(1).strip()] if match else []
    if isinstance(data, dict):
        return [e for v in data.values() for e in _expressions(v)]
    if isinstance(data, list):
        return [e for v in data for e in _expressions(v)]
    return []


def _python_expression(text: str, names: set[str]) -> str | None:
    """`text` as Python source if it is plain arithmetic over `names` (same meaning in jinja)."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if not isinstance(node, _SAFE_NODES) or isinstance(node, ast.Div | ast.Pow):
            return None
        if isinstance(node, ast.Name) and node.id not in names:
            return None
    return ast.unparse(tree)
