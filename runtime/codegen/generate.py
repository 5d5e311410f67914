"""`nnspec codegen`: a spec becomes one standalone PyTorch source file.

The file imports only torch. It holds one `nn.Module` class per named block (per variant, see
codegen_structure.py) and one for the network, whose submodules sit at the compiled model's
paths, so `state_dict` keys and shapes are equal and weights load with `strict=True`. Each
class builds its layers in `__init__` and runs them in a plain `forward`; merges, reshapes and
pooling without parameters are written inline. The network carries the spec's input
normalisation (non-persistent buffers), its training-only heads (run in training mode only,
returning `(output, {head: output})` as the compiled model does) and its init scheme in
`_init_weights`.

Templates live in templates/codegen (package data `nnspec.templates`); module classes are
written by the table in codegen_modules.py.

Size: `_Writer` is one walk over the block tree that emits a class per block variant and the
network class; naming and value rendering are the small classes after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import torch

from nnspec.compiler.errors import ExportError, UsageError
from nnspec.compiler.graph import Graph, Node
from nnspec.compiler.layers import get_kind
from nnspec.compiler.resources import templates_dir
from nnspec.compiler.schema import NormalizeSpec
from nnspec.runtime.codegen.format import Call, Code, dict_display, flat, layout
from nnspec.runtime.codegen.init_code import init_lines, module_access
from nnspec.runtime.codegen.modules import REQUIRED, Ctor, module_rule
from nnspec.runtime.codegen.structure import (
    Part,
    Structure,
    Variant,
    analyse,
    camel,
    identifier,
    is_identifier,
    relative,
    same,
)

_RESERVED_NAMES = {"self", "torch", "nn", "OrderedDict", "super"}
_SHORTCUT_KINDS = ("shortcut", "branch")


def generate_source(graph: Graph, class_name: str | None = None) -> str:
    """The Python source of `graph` as a standalone module (see the module docstring).

    Raises:
        ExportError: a layer builds a module class codegen has no rule for.
        UsageError: `class_name` is not a valid Python class name.
    """
    name = network_class_name(graph, class_name)
    with torch.device("meta"):
        modules = {n.id: get_kind(n.kind).build(n.config, n.in_shapes) for n in graph.nodes}
    structure = analyse(graph, modules)
    writer = _Writer(structure, name)
    return writer.render()


def network_class_name(graph: Graph, class_name: str | None = None) -> str:
    """`class_name` if usable (UsageError if not), else one made from the spec's name."""
    if class_name is not None and not is_identifier(class_name):
        raise UsageError(f"--class-name {class_name!r} is not a Python identifier")
    name = class_name or camel(graph.name)
    if name in _helper_names() or name in _RESERVED_NAMES:
        if class_name is not None:
            raise UsageError(f"--class-name {class_name!r} is taken by a class codegen writes")
        name += "Net"
    return name


def write_source(graph: Graph, output: Path, class_name: str | None = None) -> str:
    """Generate the source for `graph` and write it to `output`; returns the source."""
    source = generate_source(graph, class_name)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(source, encoding="utf-8")
    return source


def _environment() -> jinja2.Environment:
    # Python, not HTML: no autoescaping; undefined names are template bugs, so fail loudly.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir() / "codegen"),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


@dataclass
class _Item:
    """One step of a forward pass: a layer, or a whole block/Sequential call."""

    unit: Any  # Node | Part
    inputs: list[str]
    output: str
    name_hint: str  # variable name if the value lives long
    chain_hint: str | None  # variable name for a shortcut/branch path
    training: bool = False


@dataclass
class _Writer:
    s: Structure
    network_class: str
    helpers: set[str] = field(default_factory=set)
    ordered_dict: bool = False

    def render(self) -> str:
        env = _environment()
        self._name_classes()
        classes = [self._block_class(env, v) for v in self.s.variants]
        classes.append(self._network_class(env))
        helpers = [
            env.get_template(f"helpers/{name}.py.j2").render() for name in sorted(self.helpers)
        ]
        spec = self.s.graph.spec
        return (
            env.get_template("model.py.j2")
            .render(
                spec_name=self.s.graph.name,
                source=Path(spec.source).name if spec is not None and spec.source else "a dict",
                spec_hash=spec.spec_hash if spec is not None else "unknown",
                docstring=_docstring(
                    spec.description
                    if spec is not None and spec.description
                    else f"The {self.s.graph.name} network."
                ),
                ordered_dict=self.ordered_dict,
                helpers=helpers,
                classes=classes,
            )
            .rstrip("\n")
            + "\n"
        )

    # ---------------------------------------------------------------- names
    def _name_classes(self) -> None:
        taken = set(_RESERVED_NAMES) | {self.network_class} | _helper_names()
        by_block: dict[str, list[Variant]] = {}
        for variant in self.s.variants:
            by_block.setdefault(variant.block, []).append(variant)
        for block, variants in by_block.items():
            base = camel(block)
            with_shortcut = [v for v in variants if _has_shortcut(v.calls[0])]
            for i, variant in enumerate(variants):
                if len(variants) == 1:
                    name = base
                elif len(with_shortcut) == 1 and len(variants) == 2:
                    name = f"{base}Projection" if variant in with_shortcut else base
                else:
                    name = f"{base}{chr(ord('A') + i)}" if i < 26 else f"{base}{i + 1}"
                while name in taken:
                    name += "_"
                taken.add(name)
                variant.class_name = name

    # ---------------------------------------------------------------- classes
    def _block_class(self, env: jinja2.Environment, variant: Variant) -> str:
        owner = variant.calls[0]
        params = [Code("self"), *(Code(f"{p.name}: {p.annotation}") for p in variant.params)]
        signature = layout("", Call("def __init__", tuple(params)), " -> None:", depth=1)
        calls = ", ".join(c.path for c in variant.calls[:3]) + (
            f" and {len(variant.calls) - 3} more" if len(variant.calls) > 3 else ""
        )
        doc = f"Block `{variant.block}`, as called at {calls}."
        return env.get_template("class.py.j2").render(
            name=variant.class_name,
            docstring=doc,
            signature=signature,
            init=self._init_lines(owner, _VariantValues(variant)),
            forward_signature=["    def forward(self, x: torch.Tensor) -> torch.Tensor:"],
            forward=self._forward_lines(owner, ["x"], training=False),
            init_weights=None,
            init_doc="",
        )

    def _network_class(self, env: jinja2.Environment) -> str:
        graph = self.s.graph
        root = self.s.root
        inputs = ["x"] if len(graph.inputs) == 1 else [identifier(n) for n in graph.inputs]
        init = self._normalization_lines() + self._init_lines(root, _LiteralValues())
        params = ", ".join(f"{n}: torch.Tensor" for n in inputs)
        returns = " -> torch.Tensor" if not graph.heads else ""
        spec = graph.spec
        scheme = _describe_init(spec.init) if spec is not None else ""
        return env.get_template("class.py.j2").render(
            name=self.network_class,
            docstring=f"The {graph.name} network (input {list(_first_shape(graph))}, output "
            f"{list(graph.output_shape)}).",
            signature=["    def __init__(self) -> None:"],
            init=init,
            forward_signature=layout("", Code(f"def forward(self, {params}){returns}:"), depth=1),
            forward=self._forward_lines(root, inputs, training=bool(graph.heads)),
            init_weights=init_lines(self.s, depth=2),
            init_doc=f"The spec's init: {scheme}.",
        )

    def _has_normalization(self) -> bool:
        spec = self.s.graph.spec
        return spec is not None and spec.normalize is not None and spec.inputs is None

    def _normalization_lines(self) -> list[str]:
        if not self._has_normalization():
            return []
        spec = self.s.graph.spec
        self.helpers.add("Normalize")
        rank = len(spec.input.shape)
        lines = []
        if isinstance(spec.normalize, NormalizeSpec):
            mean, std = tuple(spec.normalize.mean), tuple(spec.normalize.std)
        else:
            channels = spec.input.shape[0]
            mean, std = (0.0,) * channels, (1.0,) * channels
            lines.append("        # normalize: auto. Copy mean and std from the training run's")
            lines.append("        # normalization.json (they are not part of the state_dict).")
        call = Call("Normalize", (mean, std, rank))
        return lines + layout("self.input_normalization = ", call, depth=2)

    # ---------------------------------------------------------------- __init__
    def _init_lines(self, owner: Part, values: _Values) -> list[str]:
        lines: list[str] = []
        self._emit_children(owner, owner, "self", values, lines)
        return lines

    def _emit_children(
        self, part: Part, owner: Part, target: str, values: _Values, lines: list[str]
    ) -> None:
        for child in part.children:
            local = _local(child)
            if isinstance(child, Part) and child.role == "container":
                if any(self._constructed(n) for n in child.members):
                    lines.append(f"        {target}.{local} = nn.Module()")
                    self._emit_children(child, owner, f"{target}.{local}", values, lines)
                continue
            if isinstance(child, Part) and child.role == "sequential":
                self._emit_sequential(child, owner, f"{target}.{local}", values, lines)
                continue
            expr = self._constructor(child, owner, values)
            if expr is not None:
                lines.extend(layout(f"{target}.{local} = ", expr, depth=2))

    def _emit_sequential(
        self, part: Part, owner: Part, target: str, values: _Values, lines: list[str]
    ) -> None:
        """`nn.Sequential(...)`, with runs of identical numbered blocks added in a loop, as
        torchvision's `_make_layer` does (`for i in range(2, 37): ...add_module(...)`)."""
        items = [(_local(c), self._constructor(c, owner, values)) for c in part.children]
        segments = _runs(items)
        lead = 0
        while lead < len(segments) and len(segments[lead]) == 1:
            lead += 1
        head = tuple(segment[0] for segment in segments[:lead])
        self.ordered_dict = self.ordered_dict or bool(head)
        start = Call("nn.Sequential", (Call("OrderedDict", (), head),) if head else ())
        lines.extend(layout(f"{target} = ", start, depth=2))
        for segment in segments[lead:]:
            if len(segment) == 1:
                name, expr = segment[0]
                lines.extend(layout("", Call(f"{target}.add_module", (name, expr)), depth=2))
                continue
            prefix, low = _numbered(segment[0][0])
            high = low + len(segment) - 1
            lines.append(f"        for i in range({low}, {high + 1}):")
            add = Call(f"{target}.add_module", (Code(f'f"{prefix}{{i}}"'), segment[0][1]))
            lines.extend(layout("", add, depth=3))

    def _constructed(self, node: Node) -> bool:
        return module_rule(self.s.modules[node.id], node).constructor is not None

    def _constructor(self, unit: Any, owner: Part, values: _Values) -> Any:
        """The expression that builds `unit` (None for layers written inline in forward)."""
        if isinstance(unit, Part):
            if unit.role == "block":
                variant = unit.variant
                kwargs = variant.call_kwargs[variant.calls.index(unit)]
                rel = relative(unit.path, owner)
                return Call(
                    variant.class_name,
                    (),
                    tuple(
                        (p.name, values.value((rel, p.name), kwargs[p.name], REQUIRED))
                        for p in variant.params
                    ),
                )
            items = [(_local(c), self._constructor(c, owner, values)) for c in unit.children]
            self.ordered_dict = True
            return Call("nn.Sequential", (Call("OrderedDict", (), tuple(items)),))
        module = self.s.modules[unit.id]
        rule = module_rule(module, unit)
        self.helpers.update(rule.helpers)
        if rule.constructor is None:
            return None
        ctor: Ctor = rule.constructor(module, unit)
        rel = relative(unit.id, owner)
        args = tuple(values.value((rel, name), value, REQUIRED) for name, value in ctor.args)
        kwargs = tuple(
            (name, values.value((rel, name), value, default))
            for name, value, default in ctor.kwargs
            if not values.omit((rel, name), value, default)
        )
        return Call(ctor.func, args, kwargs)

    # ---------------------------------------------------------------- forward
    def _forward_lines(self, owner: Part, inputs: list[str], training: bool) -> list[str]:
        graph = self.s.graph
        items = self._items(owner)
        if owner.role == "root":
            end = [graph.output, *(h.output for h in graph.heads.values())]
            eval_needed = {n.id for n in graph.eval_nodes()}
            train_needed = _ancestors(graph, [h.output for h in graph.heads.values()])
            main = [i for i in items if i.output in eval_needed]
            extra = [i for i in items if i.output in train_needed - eval_needed]
            for item in extra:
                item.training = True
            items = main + extra
            refs = list(graph.inputs)
        else:
            end = [owner.output]
            needed = _ancestors(graph, [owner.output])
            items = [i for i in items if i.output in needed]
            refs = owner.inputs
        names = _Names(items, end, owner.role == "root", set(end[1:]))
        for ref, name in zip(refs, inputs, strict=True):
            names.bind_input(ref, name)
        lines: list[str] = []
        if owner.role == "root" and self._has_normalization():
            lines.append(f"        {inputs[0]} = self.input_normalization({inputs[0]})")
        training_lines: list[str] = []
        for index, item in enumerate(items):
            expr = self._call(item.unit, owner, [names.var[r] for r in item.inputs])
            target = names.assign(index, item)
            if item.training:
                training_lines.extend(layout(f"{target} = ", expr, depth=3))
            else:
                lines.extend(layout(f"{target} = ", expr, depth=2))
        out = names.var[end[0]]
        if owner.role == "root" and training:
            heads = dict_display({h.id: Code(names.var[h.output]) for h in graph.heads.values()})
            lines.append("        if self.training:")
            lines.extend(training_lines)
            lines.extend(layout(f"return {out}, ", heads, depth=3))
        lines.append(f"        return {out}")
        return lines

    def _items(self, owner: Part) -> list[_Item]:
        items: list[_Item] = []

        def collect(part: Part, chain: str | None) -> None:
            for child in part.children:
                kind = child.scope.kind if isinstance(child, Part) and child.scope else None
                if isinstance(child, Part) and child.role == "container":
                    collect(child, child.local if kind in _SHORTCUT_KINDS else chain)
                    continue
                local = child.local if isinstance(child, Part) else child.id.rsplit(".", 1)[-1]
                output = _unit_output(child)
                # a container's result is named after the container (`attention = out + x`)
                hint = identifier(
                    part.local if part is not owner and output == part.output else local
                )
                items.append(
                    _Item(
                        child,
                        _unit_inputs(child),
                        output,
                        hint,
                        hint if kind in _SHORTCUT_KINDS else chain,
                    )
                )

        collect(owner, None)
        return sorted(items, key=lambda i: self.s.order[_first_node(i.unit)])

    def _call(self, unit: Any, owner: Part, args: list[str]) -> Any:
        if isinstance(unit, Part):
            return Call(module_access(relative(unit.path, owner)), (Code(args[0]),))
        module = self.s.modules[unit.id]
        rule = module_rule(module, unit)
        if rule.expression is not None:
            return rule.expression(module, unit, args)
        return Call(module_access(relative(unit.id, owner)), tuple(Code(a) for a in args))


class _Values:
    """Where a constructor argument's value comes from in the class being written."""

    def value(self, key: tuple, value: Any, default: Any) -> Any:
        raise NotImplementedError

    def omit(self, key: tuple, value: Any, default: Any) -> bool:
        raise NotImplementedError


class _LiteralValues(_Values):
    """The network class: every value is a literal; defaults are left out."""

    def value(self, key, value, default):
        return value

    def omit(self, key, value, default):
        return default is not REQUIRED and same(value, default)


@dataclass
class _VariantValues(_Values):
    """A block class: values shared by all calls are literals, the others parameters."""

    variant: Variant

    def value(self, key, value, default):
        return self.variant.resolved[key]

    def omit(self, key, value, default):
        return key in self.variant.omitted


class _Names:
    """Variable names in a forward pass: a chain reuses one name (`x = self.conv1(x)`); a
    value needed later than the next step gets a name of its own (its id)."""

    def __init__(self, items: list[_Item], end: list[str], network: bool, named: set[str]):
        self.named = named  # values that keep their own name (the heads' outputs)
        self.var: dict[str, str] = {}
        self.live: set[str] = set()
        self.reusable: set[str] = set()
        self.network = network
        self.uses: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            for ref in item.inputs:
                self.uses.setdefault(ref, []).append(index)
        for ref in end:
            self.uses.setdefault(ref, []).append(len(items))

    def bind_input(self, ref: str, name: str) -> None:
        self.var[ref] = name
        self.live.add(name)
        if self.network:
            self.reusable.add(name)

    def assign(self, index: int, item: _Item) -> str:
        dying = [r for r in dict.fromkeys(item.inputs) if max(self.uses.get(r, [index])) == index]
        for ref in dying:
            self.live.discard(self.var[ref])
        dying_names = [self.var[r] for r in dying]
        uses = self.uses.get(item.output, [])
        long_lived = len(uses) > 1 or item.output in self.named
        if item.chain_hint and not long_lived:
            name = (
                item.chain_hint if item.chain_hint in dying_names else self._fresh(item.chain_hint)
            )
            self.reusable.add(name)
        elif long_lived:
            name = self._fresh(item.name_hint)
        else:
            name = next((n for n in dying_names if n in self.reusable), None) or self._fresh(
                "x" if self.network else "out"
            )
            self.reusable.add(name)
        self.var[item.output] = name
        self.live.add(name)
        return name

    def _fresh(self, base: str) -> str:
        if base in _RESERVED_NAMES:
            base += "_"
        name, n = base, 1
        while name in self.live:
            n += 1
            name = f"{base}_{n}"
        return name


def _local(unit: Any) -> str:
    """The attribute name of `unit` in its parent (an id segment that must be a Python name)."""
    local = unit.local if isinstance(unit, Part) else unit.id.rsplit(".", 1)[-1]
    if not is_identifier(local):
        raise ExportError(
            f"codegen needs ids that are Python identifiers; {_path(unit)!r} is not "
            "(rename it in the spec)"
        )
    return local


_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def _numbered(name: str) -> tuple[str, int]:
    match = _NUMBERED.match(name)
    return (match.group(1), int(match.group(2))) if match else (name, -1)


def _runs(items: list[tuple[str, Any]], shortest: int = 3) -> list[list[tuple[str, Any]]]:
    """Split (name, expression) items into single items and runs of `shortest` or more equal
    expressions whose names count up (`block2`, `block3`, ...)."""
    segments: list[list[tuple[str, Any]]] = []
    for name, expr in items:
        last = segments[-1] if segments else None
        if last is not None and flat(last[-1][1]) == flat(expr):
            prefix, number = _numbered(name)
            previous = _numbered(last[-1][0])
            if number >= 0 and previous == (prefix, number - 1):
                last.append((name, expr))
                continue
        segments.append([(name, expr)])
    out: list[list[tuple[str, Any]]] = []
    for segment in segments:
        if len(segment) >= shortest:
            out.append(segment)
        else:
            out.extend([item] for item in segment)
    return out


def _unit_inputs(unit: Any) -> list[str]:
    return unit.inputs


def _unit_output(unit: Any) -> str:
    return unit.output if isinstance(unit, Part) else unit.id


def _first_node(unit: Any) -> str:
    return unit.members[0].id if isinstance(unit, Part) else unit.id


def _ancestors(graph: Graph, refs: list[str]) -> set[str]:
    needed = set(refs)
    for node in reversed(graph.nodes):
        if node.id in needed:
            needed.update(node.inputs)
    return needed


def _has_shortcut(part: Part) -> bool:
    return any(
        isinstance(c, Part) and c.scope is not None and c.scope.kind == "shortcut"
        for c in part.children
    )


def _helper_names() -> set[str]:
    return {
        "Normalize",
        "PatchEmbed",
        "ClassToken",
        "PositionEmbedding",
        "SelfAttention",
        "LSTM",
        "GRU",
        "LayerScale",
        "LinearAlongDim",
        "LayerNormAlongDim",
        "GroupNormAlongDim",
        "WindowPartition",
        "WindowReverse",
        "ShiftedWindowMask",
        "MergePatches",
    }


def _path(unit: Any) -> str:
    return unit.path if isinstance(unit, Part) else unit.id


def _first_shape(graph: Graph) -> tuple[int, ...]:
    return next(iter(graph.inputs.values())).shape


def _docstring(text: str) -> str:
    """One line of text that is safe inside triple double quotes."""
    return " ".join(text.replace('"', "'").replace("\\", "/").split())


def _describe_init(config) -> str:
    parts = []
    for category in (
        "conv",
        "linear",
        "norm",
        "embedding",
        "recurrent",
        "attention",
        "token",
        "bias",
    ):
        scheme = getattr(config, category)
        if scheme is not None and scheme.scheme != "default":
            parts.append(f"{category} {scheme.scheme}")
    if config.zero_init_residual:
        parts.append("zero_init_residual")
    return ", ".join(parts) or "torch's defaults"
