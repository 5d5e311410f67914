"""Training-practice warnings about a spec, each rule one registered function with its reason.

A rule looks at the compiled graph and the spec and yields findings; it never changes them. The
rule's docstring is its documentation (`nnspec lint --rules` prints it), and `reason` is the one
line printed with each warning. A spec switches rules off with `lint: {ignore: [name, ...]}`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from nnspec.compiler.errors import Mark, Problem, SpecError
from nnspec.compiler.layers import get_kind
from nnspec.compiler.suggest import did_you_mean

NORM_KINDS = frozenset({"batchnorm", "layernorm", "groupnorm"})
WEIGHTED_KINDS = frozenset({"conv", "conv_transpose", "linear"})
ACTIVATION_KINDS = frozenset(
    {"relu", "relu6", "leaky_relu", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid"}
)
# Layers an activation may sit behind without changing which init suits the layer before them.
TRANSPARENT_KINDS = NORM_KINDS | {"dropout", "identity", "maxpool", "avgpool"}
RELU_LIKE = frozenset({"relu", "relu6", "leaky_relu"})
SATURATING = frozenset({"tanh", "sigmoid"})

DEEP_PLAIN_LAYERS = 20
LARGE_LR = 0.1
LARGE_HEAD_FRACTION = 0.5


@dataclass(frozen=True)
class Finding:
    """One warning: which rule, where, and what exactly was found."""

    rule: str
    message: str
    mark: Mark | None
    path: str = ""

    def format(self, reason: str) -> str:
        where = f"{self.mark}: " if self.mark else ""
        path = f"{self.path}: " if self.path else ""
        return f"{where}warning[{self.rule}]: {path}{self.message}\n    why: {reason}"


@dataclass(frozen=True)
class LintRule:
    name: str
    reason: str
    doc: str
    check: Callable[..., Iterable[Finding]]


RULES: dict[str, LintRule] = {}


def lint_rule(name: str, reason: str):
    """Register `check(graph, spec) -> findings` as rule `name`; a duplicate name is refused."""

    def register(check: Callable[..., Iterable[Finding]]):
        if name in RULES:
            raise ValueError(f"lint rule {name!r} is already registered")
        doc = " ".join((check.__doc__ or "").split())
        RULES[name] = LintRule(name, reason, doc, check)
        return check

    return register


def lint(graph, spec) -> list[Finding]:
    """Every finding of every rule the spec does not ignore, in source order."""
    ignored = ignored_rules(spec)
    findings = [
        finding
        for rule in RULES.values()
        if rule.name not in ignored
        for finding in rule.check(graph, spec)
    ]
    return sorted(findings, key=_source_order)


def ignored_rules(spec) -> set[str]:
    """The spec's `lint.ignore` names, all checked against the registry."""
    names = list(spec.lint.ignore) if spec.lint else []
    problems = [
        Problem(
            f"unknown lint rule {name!r}{did_you_mean(name, RULES)}",
            path=f"lint.ignore[{i}]",
            mark=_spec_mark(spec, ("lint", "ignore", i)),
            hint=f"rules: {', '.join(sorted(RULES))}",
        )
        for i, name in enumerate(names)
        if name not in RULES
    ]
    if problems:
        raise SpecError(problems)
    return set(names)


def format_rules() -> str:
    """Every rule with its reason and documentation, for `nnspec lint --rules`."""
    blocks = [f"{rule.name}\n  why: {rule.reason}\n  {rule.doc}" for rule in RULES.values()]
    return "\n\n".join(blocks)


# ----------------------------------------------------------------------------------- rules


@lint_rule("bias-before-norm", "batch norm subtracts the mean, so a bias before it does nothing")
def bias_before_norm(graph, spec) -> Iterator[Finding]:
    """A conv or linear layer with `bias: true` whose only consumer is a batch norm: the norm
    removes any constant per channel, so the bias never changes the output and only costs
    parameters (and weight decay). Write `bias: false`."""
    for node in graph.nodes:
        if node.kind in WEIGHTED_KINDS and getattr(node.config, "bias", False):
            consumers = graph.consumers(node.id)
            if len(consumers) == 1 and consumers[0].kind == "batchnorm":
                yield _at(
                    "bias-before-norm",
                    node,
                    f"{node.kind} has a bias but feeds {consumers[0].id} (batchnorm)",
                )


@lint_rule(
    "dropout-before-norm",
    "dropout changes the variance batch norm sees between training and inference",
)
def dropout_before_norm(graph, spec) -> Iterator[Finding]:
    """Dropout directly before batch norm: in training the norm's running statistics are
    gathered on dropped-out activations, at inference dropout is the identity, so the variance
    shifts (Li et al., 2019, "Understanding the disharmony between dropout and batch norm").
    Put dropout after the last batch norm, before the classifier."""
    for node in graph.nodes:
        if node.kind == "dropout":
            for consumer in graph.consumers(node.id):
                if consumer.kind == "batchnorm":
                    yield _at(
                        "dropout-before-norm",
                        node,
                        f"dropout feeds {consumer.id} (batchnorm) directly",
                    )


@lint_rule("init-activation-mismatch", "init variance should match the activation that follows")
def init_activation_mismatch(graph, spec) -> Iterator[Finding]:
    """Kaiming/He init (W ~ N(0, 2/n)) is derived for ReLU, which halves the variance; before
    tanh or sigmoid it makes activations saturate. Xavier/Glorot (and LeCun's N(0, 1/n), the
    lecture's "Xavier") are derived for symmetric activations; before ReLU the variance halves
    at every layer and deep stacks vanish. The activation is the first one after the layer,
    looking through norms, dropout and pooling."""
    for node in graph.nodes:
        if node.kind not in WEIGHTED_KINDS:
            continue
        scheme = _weight_init(node, spec)
        activation = _next_activation(graph, node)
        if scheme is None or activation is None:
            continue
        name = scheme.scheme
        if name.startswith("kaiming") and activation.kind in SATURATING:
            gain_for = scheme.nonlinearity or spec.init.nonlinearity or "relu"
            if gain_for in ("relu", "leaky_relu"):
                yield _at(
                    "init-activation-mismatch",
                    node,
                    f"{name} init before {activation.kind} ({activation.id})",
                )
        elif name.startswith(("xavier", "lecun")) and activation.kind in RELU_LIKE:
            yield _at(
                "init-activation-mismatch",
                node,
                f"{name} init before {activation.kind} ({activation.id})",
            )


@lint_rule(
    "deep-plain-stack",
    f"{DEEP_PLAIN_LAYERS}+ weighted layers without normalisation or residuals train badly",
)
def deep_plain_stack(graph, spec) -> Iterator[Finding]:
    """A network with at least 20 conv/linear layers and neither normalisation layers nor
    residual connections: gradients vanish or explode with depth and SGD stalls (He et al.
    2015 show a plain 56-layer net doing worse than a 20-layer one). Add batch norm or
    residual blocks."""
    weighted = [n for n in graph.nodes if n.kind in WEIGHTED_KINDS and n.head is None]
    has_norm = any(n.kind in NORM_KINDS for n in graph.nodes)
    has_residual = bool(graph.residuals) or any(n.kind == "add" for n in graph.nodes)
    if len(weighted) >= DEEP_PLAIN_LAYERS and not has_norm and not has_residual:
        yield _at(
            "deep-plain-stack",
            weighted[0],
            f"{len(weighted)} weighted layers in a row, no normalisation and no residuals",
        )


@lint_rule("no-input-normalization", "inputs on different scales make ravines in the loss")
def no_input_normalization(graph, spec) -> Iterator[Finding]:
    """The spec has no `normalize`: raw inputs with channels on different scales make the loss
    steep along some weights and flat along others, so SGD bounces across the ravine. Use
    `normalize: auto` (per-channel mean/std from the training split) or give mean and std.
    Integer inputs (token ids) are exempt."""
    float_inputs = [s for s in spec.input_specs.values() if s.dtype == "float32"]
    if spec.normalize is None and float_inputs:
        yield Finding(
            "no-input-normalization",
            "no input normalisation (add `normalize: auto`)",
            _spec_mark(spec, ("input",)),
        )


@lint_rule("decay-on-norm-and-bias", "weight decay on biases and norm scales only hurts")
def decay_on_norm_and_bias(graph, spec) -> Iterator[Finding]:
    """Weight decay is on, but biases or norm parameters are not excluded with
    `optimizer.no_decay: [bias, norm]`. Decaying a batch norm's scale fights the norm (the
    layer's output scale does not depend on the weights before it) and decaying biases
    regularises nothing useful."""
    optimizer = spec.optimizer
    if optimizer is None or optimizer.weight_decay == 0:
        return
    missing = [p for p in ("bias", "norm") if p not in optimizer.no_decay]
    has_norm = any(n.kind in NORM_KINDS for n in graph.nodes)
    if "norm" in missing and not has_norm:
        missing.remove("norm")
    if missing:
        yield Finding(
            "decay-on-norm-and-bias",
            f"weight_decay {optimizer.weight_decay:g} also decays {' and '.join(missing)} "
            f"parameters (add them to optimizer.no_decay)",
            _spec_mark(spec, ("optimizer", "weight_decay")),
        )


@lint_rule("adam-with-l2", "with Adam, L2 is not weight decay: use AdamW (decoupled)")
def adam_with_l2(graph, spec) -> Iterator[Finding]:
    """Adam (or RMSprop) with weight decay as an L2 term: the decay gradient is divided by the
    running RMS of the gradient like everything else, so weights with large gradients are
    barely decayed. Weight decay equals L2 only for plain SGD (Loshchilov & Hutter, 2019);
    use `type: adamw` (or `weight_decay_mode: decoupled`)."""
    optimizer = spec.optimizer
    adaptive = optimizer is not None and optimizer.type in ("adam", "rmsprop")
    if adaptive and optimizer.weight_decay > 0 and optimizer.decay_mode == "l2":
        yield Finding(
            "adam-with-l2",
            f"{optimizer.type} with weight_decay {optimizer.weight_decay:g} as L2 "
            "(weight_decay_mode: l2)",
            _spec_mark(spec, ("optimizer", "type")),
        )


@lint_rule("momentum-without-schedule", "high momentum at a large lr from step 0 can diverge")
def momentum_without_schedule(graph, spec) -> Iterator[Finding]:
    """SGD with momentum >= 0.9 and lr >= 0.1 but neither an lr warmup nor a momentum schedule:
    the effective step is lr / (1 - momentum), ten times the lr, from the very first step, when
    the loss is at its roughest. Sutskever et al. (2013) ramp momentum up slowly
    (`schedule.momentum: {type: sutskever}`); Goyal et al. (2017) warm the lr up. `one_cycle`
    is a warmup of its own: it starts at lr / div_factor (and, cycling momentum, replaces
    `optimizer.momentum`)."""
    optimizer, schedule = spec.optimizer, spec.schedule
    if optimizer is None or optimizer.type != "sgd":
        return
    if optimizer.momentum < 0.9 or optimizer.lr < LARGE_LR:
        return
    warmup = schedule is not None and (schedule.lr.warmup_epochs > 0
                                       or schedule.lr.type == "one_cycle")
    ramp = schedule is not None and schedule.momentum.type != "constant"
    if not warmup and not ramp:
        yield Finding(
            "momentum-without-schedule",
            f"momentum {optimizer.momentum:g} at lr {optimizer.lr:g} from the first step",
            _spec_mark(spec, ("optimizer", "momentum")),
        )


@lint_rule(
    "large-fc-head",
    "a flatten + fully-connected head holds most parameters; global average pooling does not",
)
def large_fc_head(graph, spec) -> Iterator[Finding]:
    """A linear layer on a flattened spatial feature map that holds at least half of the
    network's parameters: AlexNet's and VGG's parameter sink (VGG16's first FC layer alone has
    103M of its 138M). Global average pooling before the classifier (GoogLeNet, ResNet) keeps
    accuracy with a fraction of the parameters."""
    candidates = []
    for node in (n for n in graph.nodes if n.kind == "linear"):
        source = _source_through(graph, node, ("dropout", "identity"))
        if source is not None and source.kind == "flatten":
            feature_map = source.in_shapes[0]
            if len(feature_map) >= 3 and math.prod(feature_map[1:]) > 1:
                candidates.append((node, feature_map))
    if not candidates:
        return  # the summary (a meta-device build) is only worth it when there is a candidate
    from nnspec.compiler.summary import summarize

    summary = summarize(graph)
    params = {layer["id"]: layer["params"] for layer in summary["layers"]}
    for node, feature_map in candidates:
        share = params[node.id] / max(summary["params"], 1)
        if share >= LARGE_HEAD_FRACTION:
            yield _at(
                "large-fc-head",
                node,
                f"{params[node.id]:,} parameters ({share:.0%} of the network) on a flattened "
                f"{'x'.join(map(str, feature_map))} map; try global_avg_pool",
            )


# --------------------------------------------------------------------------------- helpers


def _at(rule: str, node, message: str) -> Finding:
    return Finding(rule, message, node.mark, f"{node.path} ({node.id})")


def _spec_mark(spec, path: tuple) -> Mark | None:
    source = spec.source_map
    return source.mark(path) if source is not None else None


def _weight_init(node, spec):
    """The init scheme applied to the node's weight: its own override, else its category's."""
    if node.init is not None and node.init.weight is not None:
        return node.init.weight
    return getattr(spec.init, get_kind(node.kind).category or "", None)


def _source_through(graph, node, skipped: tuple[str, ...]):
    """The node feeding `node`, looking back through kinds in `skipped`; None at an input."""
    current = node
    while True:
        ref = current.inputs[0]
        if ref in graph.inputs:
            return None
        current = graph.node(ref)
        if current.kind not in skipped:
            return current


def _next_activation(graph, node):
    current = node
    while True:
        consumers = graph.consumers(current.id)
        if len(consumers) != 1:
            return None
        current = consumers[0]
        if current.kind in ACTIVATION_KINDS:
            return current
        if current.kind not in TRANSPARENT_KINDS:
            return None


def _source_order(finding: Finding):
    mark = finding.mark
    return (mark.file, mark.line, mark.column) if mark else ("", 0, 0)
