"""Expansion: the spec's network (blocks, repeats, residuals, branches, heads) becomes a flat,
shape-checked graph of layer nodes with unique dotted ids.

Shapes are inferred node by node as the graph is built (see `shapes.py`), because some structure
depends on them: `shortcut: auto` is the identity only when the body keeps the input's shape.
Problems are collected, not raised one at a time; a node that fails gets an unknown shape so the
nodes after it are still checked without a cascade of follow-on errors: what a block computes
from an unknown shape is `UNKNOWN` (compiler/unknown.py), and a node that needs it, like a
problem already reported from another call of the same block, is counted ("and 46 problems
that follow from it"), not reported again.

Size: one recursive walk (the Expander) over every node form of the language - layers, sequences,
residuals, branches, block calls, repeat, when - sharing the context of the node being expanded;
cutting it apart would pass that context through every function.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from nnspec.compiler.errors import Problem, SpecError
from nnspec.compiler.graph import Graph, Head, InputNode, Node, Residual, Scope, Shape
from nnspec.compiler.layers import get_kind, kind_names
from nnspec.compiler.load import PathKey, format_path
from nnspec.compiler.magnitude import layer_magnitude_problems, shape_problem
from nnspec.compiler.schema import NodeInit, Spec
from nnspec.compiler.shapes import infer_node
from nnspec.compiler.substitute import FollowOnError, SubstitutionError, substitute
from nnspec.compiler.suggest import did_you_mean
from nnspec.compiler.unknown import UNKNOWN, contains_unknown
from nnspec.compiler.validation import problems_from_validation

MAX_REPEAT = 10_000
MAX_NODES = 20_000  # resnet152 has 514 layer nodes; this bounds hostile specs
META_KEYS = ("id", "repeat", "from", "init", "when")
STRUCTURAL = ("sequence", "residual", "branches")
ARG_TYPES = {"int": int, "float": (int, float), "bool": bool, "str": str, "list": list,
             "dict": dict, "any": object}


class _NodeFailed(Exception):
    """Abort the node being expanded; its problem is already recorded."""


@dataclass
class _Ctx:
    prefix: str
    scopes: list[Scope]
    env: dict[str, Any]
    parent: _Ctx | None = None
    head: str | None = None
    context: str = ""
    blocks: tuple[str, ...] = ()
    names: dict[str, str] = field(default_factory=dict)
    counters: Counter = field(default_factory=Counter)

    def full(self, local: str) -> str:
        return f"{self.prefix}.{local}" if self.prefix else local

    def child(self, local: str, scope: Scope, **changes) -> _Ctx:
        fields = {"env": self.env, "head": self.head, "context": self.context,
                  "blocks": self.blocks, **changes}
        return _Ctx(prefix=self.full(local), scopes=[*self.scopes, scope], parent=self, **fields)


class Expander:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.source = spec.source_map
        self.nodes: list[Node] = []
        self.problems: list[Problem] = []
        self.residuals: list[Residual] = []
        self.inputs = {name: InputNode(name, tuple(s.shape), s.dtype)
                       for name, s in spec.input_specs.items()}
        self.shapes: dict[str, Shape | None] = {n: i.shape for n, i in self.inputs.items()}
        self.aliases: dict[str, str] = {}  # scope / repeat-group id -> output ref
        self.taken: set[str] = set(self.inputs)
        self.leaves: set[str] = set()  # ids of layer nodes
        self.scope_ids: set[str] = set()  # every proper dotted prefix of a taken id
        self.reported: set[tuple] = set()  # (message, path, mark) of each problem reported
        self.follow_ons = 0  # problems not reported: they follow from an earlier one

    # ------------------------------------------------------------------ problems
    def problem(self, message: str, path: PathKey, ctx: _Ctx | None = None, hint: str = "") -> None:
        self.add_problems([Problem(
            message, path=format_path(path), mark=self.source.mark(path) if self.source else None,
            hint=hint, context=ctx.context if ctx else "",
        )])

    def add_problems(self, problems: list[Problem]) -> None:
        """Record problems; one already reported at the same place (the same line of a block
        called again) is counted as following from it."""
        for problem in problems:
            key = (problem.message, problem.path, problem.mark)
            if key in self.reported:
                self.follow_ons += 1
            else:
                self.reported.add(key)
                self.problems.append(problem)

    def fail(self, message: str, path: PathKey, ctx: _Ctx | None = None, hint: str = ""):
        self.problem(message, path, ctx, hint)
        raise _NodeFailed

    def follow_on(self):
        """Abort a node whose problem follows from an earlier one: counted, not reported."""
        self.follow_ons += 1
        raise _NodeFailed

    def error(self) -> SpecError:
        return SpecError(self.problems, follow_on=self.follow_ons)

    def subst(self, value: Any, ctx: _Ctx, path: PathKey) -> Any:
        try:
            value = substitute(value, ctx.env)
        except FollowOnError:
            self.follow_on()
        except SubstitutionError as e:
            self.fail(str(e), path, ctx, e.hint)
        if contains_unknown(value):
            self.follow_on()
        return value

    # ------------------------------------------------------------------ entry point
    def run(self) -> Graph:
        from nnspec.compiler.budget import budget

        with budget():  # every expression of the spec draws on one budget
            return self._run()

    def _run(self) -> Graph:
        spec = self.spec
        env = {}
        for name, value in spec.vars.items():
            try:
                env[name] = substitute(value, {})
            except SubstitutionError as e:
                self.problem(str(e), ("vars", name), hint=e.hint)
                env[name] = UNKNOWN  # its uses follow from this problem
        root = _Ctx(prefix="", scopes=[], env=env)
        first_input = next(iter(self.inputs))
        out = self.expand_sequence(spec.network, ("network",), root, first_input)
        if not self.nodes and not self.problems:
            self.problem("the network has no layers", ("network",))
        if spec.output is not None:
            try:
                out = self.resolve_ref(spec.output, root, ("output",))
            except _NodeFailed:
                pass
        heads = {}
        for i, head in enumerate(spec.heads):
            heads_path = ("heads", i)
            try:
                source = self.resolve_ref(head.from_, root, heads_path + ("from",))
                scope = Scope("head", head.id, path=format_path(heads_path))
                hctx = root.child(head.id, scope, head=head.id,
                                  context=f"in training-only head {head.id!r}")
                self.claim(root.full(head.id), heads_path, root)
                hout = self.expand_sequence(head.network, heads_path + ("network",), hctx, source)
                heads[head.id] = Head(head.id, hout, head.loss_weight)
            except _NodeFailed:
                pass
        if self.problems:
            raise self.error()
        return Graph(name=spec.name, inputs=self.inputs, nodes=self.nodes, output=out,
                     heads=heads, residuals=self.residuals, spec=spec)

    # ------------------------------------------------------------------ sequences and items
    def expand_sequence(self, items: Any, path: PathKey, ctx: _Ctx, x: str | None) -> str | None:
        if not isinstance(items, list):
            self.problem(f"expected a list of layers, got {type(items).__name__}", path, ctx)
            return x
        for i, item in enumerate(items):
            try:
                x = self.expand_item(item, path + (i,), ctx, x)
            except _NodeFailed:
                x = self.unknown(ctx)
                local = item.get("id") if isinstance(item, dict) else None
                if isinstance(local, str) and _valid_id(local) and local not in ctx.names:
                    ctx.names[local] = x  # `from: <its id>` finds an unknown shape, not a typo
        return x

    def unknown(self, ctx: _Ctx) -> str:
        """A placeholder ref with an unknown shape, standing in for a node that failed."""
        ref = f"<failed {len(self.shapes)}>"
        self.shapes[ref] = None
        return ref

    def expand_item(self, item: Any, path: PathKey, ctx: _Ctx, x: str | None) -> str | None:
        if isinstance(item, list):  # an anonymous nested sequence: [conv, relu]
            return self.expand_sequence(item, path, ctx, x)
        kind, value, meta = self.split_item(item, path, ctx)
        meta = self.subst(meta, ctx, path)
        if "when" in meta:
            keep = meta["when"]
            if not isinstance(keep, bool):
                self.fail(f"`when` must be true or false, got {keep!r}", path + ("when",), ctx)
            if not keep:
                return x
        repeat = meta.get("repeat", 1)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= MAX_REPEAT:
            self.fail(f"repeat must be an integer from 1 to {MAX_REPEAT}, got {repeat!r}",
                      path + ("repeat",), ctx)
        local = meta.get("id")
        if local is not None and (not isinstance(local, str) or not _valid_id(local)):
            self.fail(f"invalid id {local!r}: use letters, digits and _ (dots separate scopes)",
                      path + ("id",), ctx)
        inputs = self.resolve_from(meta.get("from"), ctx, path + ("from",)) \
            if "from" in meta else None
        init = self.parse_init(meta["init"], path + ("init",), ctx) if "init" in meta else None
        for r in range(repeat):
            this_local = f"{local}{r + 1}" if local is not None and repeat > 1 else local
            node_inputs = inputs if (r == 0 and inputs is not None) else [x]
            if len(node_inputs) == 1 and kind in ("add", "concat", "multiply") and \
                    inputs is not None and r == 0:
                node_inputs = [x, *node_inputs]  # `- add: {}` + `from: skip` = previous + skip
            x = self.expand_one(kind, value, path, ctx, node_inputs, this_local, init)
        if local is not None and repeat > 1:
            ctx.names[local] = x
            self.aliases[ctx.full(local)] = x
        return x

    def split_item(self, item: Any, path: PathKey, ctx: _Ctx) -> tuple[str, Any, dict]:
        if isinstance(item, str):
            return item, None, {}
        if not isinstance(item, dict):
            self.fail(f"expected a layer name or a one-key mapping, got {item!r}", path, ctx,
                      hint="e.g. `- relu` or `- conv: {out: 64, kernel: 3}`")
        meta = {k: v for k, v in item.items() if k in META_KEYS}
        kinds = [k for k in item if k not in META_KEYS]
        if len(kinds) != 1:
            what = ", ".join(repr(k) for k in kinds) or "none"
            self.fail(f"a node needs exactly one layer key, found {what}", path, ctx,
                      hint="`id`, `repeat`, `from`, `init` and `when` sit beside one layer key")
        return kinds[0], item[kinds[0]], meta

    def expand_one(self, kind: str, value: Any, path: PathKey, ctx: _Ctx,
                   inputs: list[str | None], local: str | None, init: NodeInit | None) -> str:
        kpath = path + (kind,)
        if kind in STRUCTURAL:
            if init is not None:
                self.fail("`init` on a structural node is not supported; set it on its layers",
                          path + ("init",), ctx)
            x = self.single_input(inputs, path, ctx)
            local = local or self.auto_id(ctx, kind)
            self.claim(ctx.full(local), path, ctx)
            scope = Scope(kind, ctx.full(local), path=format_path(path))
            inner = ctx.child(local, scope)
            if kind == "sequence":
                out = self.expand_sequence(value, kpath, inner, x)
            elif kind == "residual":
                out = self.expand_residual(value, kpath, inner, x)
            else:
                out = self.expand_branches(value, kpath, inner, x)
            return self.bind_scope(ctx, local, out)
        if kind in self.spec.blocks:
            if init is not None:
                self.fail("`init` on a block call is not supported; set it inside the block",
                          path + ("init",), ctx)
            x = self.single_input(inputs, path, ctx)
            local = local or self.auto_id(ctx, kind)
            out = self.expand_block(kind, value, kpath, ctx, x, local)
            return self.bind_scope(ctx, local, out)
        try:
            get_kind(kind)
        except KeyError:
            names = [*kind_names(), *self.spec.blocks, *STRUCTURAL]
            self.fail(f"unknown layer {kind!r}{did_you_mean(kind, names)}", kpath, ctx,
                      hint="`nnspec layers` lists the layer kinds; blocks are defined under `blocks`")
        params = self.subst(value, ctx, kpath)
        if params is None:
            params = {}
        if not isinstance(params, dict):
            self.fail(f"parameters of {kind!r} must be a mapping, got {params!r}", kpath, ctx,
                      hint=f"e.g. `{kind}: {{...}}` or just `{kind}`")
        return self.add_layer(kind, params, inputs, local, ctx, path, init)

    def bind_scope(self, ctx: _Ctx, local: str, out: str) -> str:
        ctx.names[local] = out
        self.aliases[ctx.full(local)] = out
        return out

    def single_input(self, inputs: list[str | None], path: PathKey, ctx: _Ctx) -> str:
        if len(inputs) != 1:
            self.fail(f"this node takes one input but `from` names {len(inputs)}", path, ctx)
        if inputs[0] is None:
            self.fail("no input: name one with `from:`", path, ctx)
        return inputs[0]

    # ------------------------------------------------------------------ ids and references
    def auto_id(self, ctx: _Ctx, base: str) -> str:
        while True:
            ctx.counters[base] += 1
            local = f"{base}{ctx.counters[base]}"
            if ctx.full(local) not in self.taken and local not in ctx.names:
                return local

    def claim(self, full: str, path: PathKey, ctx: _Ctx, leaf: bool = False) -> None:
        """Reserve an id; a module cannot be both a leaf and a scope holding other modules."""
        if full in self.taken:
            self.fail(f"duplicate id {full!r}", path + ("id",), ctx,
                      hint="ids must be unique within their scope (repeat numbers them 1..N)")
        parts = full.split(".")
        prefixes = [".".join(parts[:i]) for i in range(1, len(parts))]
        clash = next((p for p in prefixes if p in self.leaves), None)
        if clash is None and leaf and full in self.scope_ids:
            clash = full
        if clash is not None:
            self.fail(f"id {full!r} collides with layer {clash!r} (a layer cannot hold others)",
                      path + ("id",), ctx)
        self.taken.add(full)
        self.scope_ids.update(prefixes)
        if leaf:
            self.leaves.add(full)

    def resolve_from(self, value: Any, ctx: _Ctx, path: PathKey) -> list[str]:
        refs = value if isinstance(value, list) else [value]
        if not refs or not all(isinstance(r, str) for r in refs):
            self.fail(f"`from` must be an id or a list of ids, got {value!r}", path, ctx)
        return [self.resolve_ref(r, ctx, path) for r in refs]

    def resolve_ref(self, name: str, ctx: _Ctx, path: PathKey) -> str:
        scope: _Ctx | None = ctx
        while scope is not None:
            if name in scope.names:
                return scope.names[name]
            scope = scope.parent
        if name in self.aliases:
            return self.aliases[name]
        if name in self.leaves:
            return name
        if name in self.inputs:
            return name
        visible = set(self.inputs) | set(self.aliases) | self.leaves
        scope = ctx
        while scope is not None:
            visible |= set(scope.names)
            scope = scope.parent
        self.fail(f"unknown node {name!r}{did_you_mean(name, visible)}", path, ctx,
                  hint="`from` names an earlier node's id, a scope id, or an input")

    # ------------------------------------------------------------------ layers
    def add_layer(self, kind: str, params: dict, inputs: list[str | None], local: str | None,
                  ctx: _Ctx, path: PathKey, init: NodeInit | None = None) -> str:
        local = local or self.auto_id(ctx, kind)
        full = ctx.full(local)
        if len(self.nodes) >= MAX_NODES:  # stop at once: a hostile spec must not run on
            self.problem(f"the network expands to more than {MAX_NODES} layers", path, ctx,
                         hint="check `repeat` counts")
            raise self.error()
        self.claim(full, path, ctx, leaf=True)
        layer = get_kind(kind)
        kpath = path + (kind,)
        if layer.arity is None:  # merges: `from` lists all their inputs
            if len(inputs) < 2:
                self.fail(f"{kind} needs two or more inputs: give `from: [a, b]`", path, ctx)
        elif len(inputs) != layer.arity:
            self.fail(f"{kind} takes {layer.arity} input, but `from` names {len(inputs)}", path, ctx,
                      hint="merge several inputs with add, concat or multiply")
        if any(i is None for i in inputs):
            self.fail("no input: name one with `from:`", path, ctx)
        config = None
        try:
            from nnspec.compiler.layers import layer_adapter

            config = layer_adapter().validate_python({"type": kind, **params})
        except ValidationError as e:
            self.add_problems(problems_from_validation(
                e, params, kpath, self.source, model=layer.Config, context=ctx.context,
                strip_first=True))
        if config is not None:
            for loc, message, hint in layer_magnitude_problems(config):
                self.problem(message, kpath + loc, ctx, hint)
                config = None
        in_shapes = [self.shapes.get(i) for i in inputs]
        shape = None
        if config is not None and all(s is not None for s in in_shapes):
            dtypes = {self.inputs[i].dtype for i in inputs if i in self.inputs}
            shape, problem = infer_node(layer, config, in_shapes, dtypes)
            if shape is not None and shape_problem(shape):
                shape, problem = None, (shape_problem(shape), "")
            if problem:
                message, hint = problem
                self.add_problems([Problem(  # the layer's path, the node's line
                    message, path=format_path(kpath), hint=hint, context=ctx.context,
                    mark=self.source.mark(path) if self.source else None)])
        self.shapes[full] = shape
        ctx.names[local] = full
        if config is not None and shape is not None:
            self.nodes.append(Node(
                id=full, kind=kind, config=config, inputs=list(inputs), shape=shape,
                in_shapes=list(in_shapes), path=format_path(path),
                mark=self.source.mark(path) if self.source else None, head=ctx.head,
                scopes=list(ctx.scopes), init=init,
            ))
        return full

    def parse_init(self, value: Any, path: PathKey, ctx: _Ctx) -> NodeInit:
        try:
            return NodeInit.model_validate(value)
        except ValidationError as e:
            self.add_problems(problems_from_validation(e, value, path, self.source,
                                                       model=NodeInit, context=ctx.context))
            raise _NodeFailed from None

    # ------------------------------------------------------------------ combinators
    def expand_residual(self, value: Any, path: PathKey, ctx: _Ctx, x: str) -> str:
        value = self.structural_fields(value, path, ctx, "residual", ("body", "shortcut", "post"),
                                       required=("body",))
        start = len(self.nodes)
        body_out = self.expand_sequence(value["body"], path + ("body",), ctx, x)
        body_ids = tuple(n.id for n in self.nodes[start:])
        shortcut = value.get("shortcut", "auto")
        shortcut = self.subst(shortcut, ctx, path + ("shortcut",)) if isinstance(shortcut, str) \
            else shortcut
        in_shape, out_shape = self.shapes.get(x), self.shapes.get(body_out)
        same = in_shape is None or out_shape is None or in_shape == out_shape
        sc_start = len(self.nodes)
        if shortcut == "identity" or (shortcut in ("auto", "none_if_mismatch") and same):
            sc_out = x
        elif shortcut == "none_if_mismatch":
            sc_out = None
        elif shortcut == "auto":
            sc_out = self.projection(x, in_shape, out_shape, path, ctx)
        elif isinstance(shortcut, list):
            sctx = ctx.child("shortcut", Scope("shortcut", ctx.full("shortcut"),
                                               path=format_path(path + ("shortcut",))))
            sc_out = self.expand_sequence(shortcut, path + ("shortcut",), sctx, x)
        else:
            self.fail(f"shortcut must be auto, identity, none_if_mismatch or a list of layers, "
                      f"got {shortcut!r}", path + ("shortcut",), ctx)
        sc_ids = tuple(n.id for n in self.nodes[sc_start:])
        out, add_id = body_out, None
        if sc_out is not None:
            out = add_id = self.add_layer("add", {}, [body_out, sc_out], None, ctx, path)
        self.residuals.append(Residual(ctx.prefix, body_ids, sc_ids, add_id))
        return self.expand_sequence(value.get("post", []), path + ("post",), ctx, out)

    def projection(self, x: str, in_shape: Shape, out_shape: Shape, path: PathKey,
                   ctx: _Ctx) -> str:
        """`shortcut: auto` when shapes differ: 1x1 conv (stride from the size ratio) + BN."""
        if len(in_shape) != len(out_shape) or len(in_shape) < 2:
            self.fail(f"shortcut: auto cannot project {in_shape} to {out_shape}", path, ctx,
                      hint="give the shortcut layers explicitly")
        strides = []
        for a, b in zip(in_shape[1:], out_shape[1:], strict=True):
            if a % b:
                self.fail(f"shortcut: auto cannot project {in_shape} to {out_shape} "
                          "(spatial sizes are not an integer ratio)", path, ctx)
            strides.append(a // b)
        stride = strides[0] if len(set(strides)) == 1 else strides
        sctx = ctx.child("shortcut", Scope("shortcut", ctx.full("shortcut"),
                                           path=format_path(path)))
        conv = self.add_layer("conv", {"out": out_shape[0], "kernel": 1, "stride": stride,
                                       "bias": False}, [x], None, sctx, path)
        return self.add_layer("batchnorm", {}, [conv], None, sctx, path)

    def expand_branches(self, value: Any, path: PathKey, ctx: _Ctx, x: str) -> str:
        value = self.structural_fields(value, path, ctx, "branches", ("merge", "dim", "paths"),
                                       required=("paths",))
        merge = self.subst(value.get("merge", "concat"), ctx, path + ("merge",))
        if merge not in ("concat", "add", "multiply"):
            self.fail(f"merge must be concat, add or multiply, got {merge!r}", path + ("merge",), ctx)
        paths = value["paths"]
        if not isinstance(paths, list) or len(paths) < 2:
            self.fail("branches needs `paths`: a list of two or more layer lists",
                      path + ("paths",), ctx)
        outs = []
        for k, branch in enumerate(paths):
            bpath = path + ("paths", k)
            local = f"branch{k + 1}"
            bctx = ctx.child(local, Scope("branch", ctx.full(local), path=format_path(bpath)))
            outs.append(self.expand_sequence(branch, bpath, bctx, x) if branch else x)
        params = {}
        if "dim" in value:
            if merge != "concat":
                self.fail("`dim` applies to merge: concat only", path + ("dim",), ctx)
            params["dim"] = self.subst(value["dim"], ctx, path + ("dim",))
        return self.add_layer(merge, params, outs, None, ctx, path)

    def structural_fields(self, value: Any, path: PathKey, ctx: _Ctx, kind: str,
                          allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            self.fail(f"{kind} needs a mapping with {', '.join(allowed)}", path, ctx)
        for key in value:
            if key not in allowed:
                self.fail(f"unknown key {key!r} in {kind}{did_you_mean(key, allowed)}",
                          path + (key,), ctx)
        for key in required:
            if key not in value:
                self.fail(f"{kind} needs `{key}`", path, ctx)
        return value

    # ------------------------------------------------------------------ blocks
    def expand_block(self, name: str, value: Any, path: PathKey, ctx: _Ctx, x: str,
                     local: str) -> str:
        block = self.spec.blocks[name]
        if name in ctx.blocks:
            chain = " -> ".join([*ctx.blocks, name])
            self.fail(f"block {name!r} calls itself ({chain})", path, ctx)
        in_shape = self.shapes.get(x)
        # Blocks may read their input's shape: `${in_channels // 2}` (DenseNet's transition).
        shape_env = {"in_shape": list(in_shape) if in_shape else UNKNOWN,
                     "in_channels": in_shape[0] if in_shape else UNKNOWN}
        args = self.bind_args(name, block.args, self.subst(value, ctx, path), path,
                              replace(ctx, env={**ctx.env, **shape_env}))
        self.claim(ctx.full(local), path, ctx)
        mark = self.source.mark(path[:-1]) if self.source else None
        where = f"{format_path(path[:-1])}" + (f" ({mark})" if mark else "")
        scope = Scope("block", ctx.full(local), block=name, args=tuple(args.items()),
                      path=format_path(path[:-1]))
        inner = ctx.child(local, scope, env={**ctx.env, **shape_env, **args},
                          context=f"in block {name!r} called at {where}",
                          blocks=(*ctx.blocks, name))
        body = ("blocks", name)
        if block.residual is not None:
            return self.expand_residual(block.residual, body + ("residual",), inner, x)
        if block.branches is not None:
            return self.expand_branches(block.branches, body + ("branches",), inner, x)
        return self.expand_sequence(block.layers, body + ("layers",), inner, x)

    def bind_args(self, name: str, declared: dict[str, Any], given: Any, path: PathKey,
                  ctx: _Ctx) -> dict[str, Any]:
        given = {} if given is None else given
        if not isinstance(given, dict):
            self.fail(f"arguments of block {name!r} must be a mapping, got {given!r}", path, ctx)
        out: dict[str, Any] = {}
        ok = True
        for arg in given:
            if arg not in declared:
                self.problem(f"block {name!r} has no argument {arg!r}{did_you_mean(arg, declared)}",
                             path + (arg,), ctx, hint=f"its arguments: {', '.join(declared)}")
                ok = False
        for arg, decl in declared.items():
            type_name, default, has_default = _arg_decl(decl)
            if type_name not in ARG_TYPES:
                self.problem(f"argument {arg!r} of block {name!r} has unknown type {type_name!r}"
                             f"{did_you_mean(type_name, ARG_TYPES)}", ("blocks", name, "args", arg))
                ok = False
                continue
            if arg in given:
                value = given[arg]
            elif has_default:
                value = self.subst(default, replace(ctx, env={**ctx.env, **out}),
                                   ("blocks", name, "args", arg))
            else:
                self.problem(f"block {name!r} needs argument {arg!r}", path, ctx)
                ok = False
                continue
            if contains_unknown(value):
                self.follow_on()
            expected = ARG_TYPES[type_name]
            if (isinstance(value, bool) and type_name in ("int", "float")) or \
                    not isinstance(value, expected):
                self.problem(f"argument {arg!r} of block {name!r} must be {type_name}, "
                             f"got {value!r}", path + (arg,), ctx)
                ok = False
                continue
            out[arg] = value
        if not ok:
            raise _NodeFailed
        return out


def _arg_decl(decl: Any) -> tuple[str, Any, bool]:
    """`int` | {type: int, default: 1} | {default: 1} -> (type name, default, has default)."""
    if isinstance(decl, str) and not decl.startswith("$"):
        return decl, None, False
    if isinstance(decl, dict) and set(decl) <= {"type", "default", "doc"}:
        if "default" in decl:
            default = decl["default"]
            inferred = next((n for n, t in (("bool", bool), ("int", int), ("float", float),
                                            ("str", str), ("list", list), ("dict", dict))
                             if isinstance(default, t)), "any")
            return decl.get("type", inferred), default, True
        return decl.get("type", "any"), None, False
    return "any", decl, True  # a bare literal default: `stride: 1`


def _valid_id(text: str) -> bool:
    import re

    return re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", text) is not None


def expand(spec: Spec) -> Graph:
    """Expand and shape-check `spec`; raises SpecError listing every problem found."""
    return Expander(spec).run()

