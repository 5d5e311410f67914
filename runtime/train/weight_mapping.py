"""Which source tensor fills which spec tensor: by name (after a family's renames), then by
structure, refusing what it cannot tell apart.

1. Names. A family's rules rename the source's keys (torchvision's `layer1.0.conv1` is the
   spec's `layer1.block1.conv1`); keys equal to a spec key match as they are.
2. Structure. The tensors left on each side are grouped by signature (shape, dtype, and the
   batch-norm statistic a name says it is) and zipped in each side's own order: the k-th
   source tensor of shape [96] fills the k-th spec tensor of shape [96]. A model that
   registers its parameters in another order only within one signature (ConvNeXt's
   `layer_scale` first) still lines up. Where the counts of a signature differ, nothing is
   guessed: the tensors are reported as ambiguous.
3. Integrity. A module's weight and bias (and batch-norm statistics) belong together: if
   zipping by structure would split one source module over two spec modules (or feed one spec
   module from two), the orders differ in a way shapes cannot resolve, and those structure
   matches are refused.
4. Recomputed buffers. Buffers that a spec rebuilds from its own sizes (the relative position
   index of windowed attention) are not copied; the source's copy is checked equal.

A safetensors file does not keep the order in which a model registered its tensors (it sorts
them). Its keys are then put in natural order (`blocks.2` before `blocks.10`), and tensors of
one signature are told apart only where their names differ by numbers alone (`norm1` and
`norm2`, `blocks.2` and `blocks.10`; not `q_norm` and `k_norm`).

Everything left over on either side is a problem; the caller refuses the import if any.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

BATCHNORM_STATS = ("running_mean", "running_var", "num_batches_tracked")
_PAIRED = ("weight", "bias", *BATCHNORM_STATS)


@dataclass(frozen=True)
class Rule:
    """Rename source keys that fully match `pattern` to `target`.

    `target` is a `str.format` template over the pattern's named groups; `{name1}` is group
    `name` plus one, because PyTorch counts repeated modules from 0 and spec ids from 1.
    """

    pattern: str
    target: str

    def apply(self, key: str) -> str | None:
        match = re.fullmatch(self.pattern, key)
        if match is None:
            return None
        groups = match.groupdict()
        shifted = {f"{k}1": str(int(v) + 1) for k, v in groups.items() if v and v.isdigit()}
        return self.target.format(**groups, **shifted)


@dataclass(frozen=True)
class Pair:
    target: str  # the spec's key
    source: str  # the source's key
    how: str  # "name" | "rule" | "structure" | "recomputed"


@dataclass
class WeightMapping:
    """The outcome: pairs in the spec's order, recomputed buffers, and every problem."""

    pairs: list[Pair]
    recomputed: list[Pair] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def module_of(key: str) -> str:
    return key.rpartition(".")[0]


def leaf_of(key: str) -> str:
    return key.rpartition(".")[2]


def _signature(key: str, tensor: torch.Tensor) -> tuple:
    leaf = leaf_of(key)
    role = leaf if leaf in BATCHNORM_STATS else "tensor"
    kind = "float" if tensor.dtype.is_floating_point else str(tensor.dtype)
    return role, tuple(tensor.shape), kind


def _paired(key: str) -> bool:
    """A tensor that belongs with its module's others: weight, bias, batch-norm statistics
    (`in_proj_weight` / `in_proj_bias` too)."""
    leaf = leaf_of(key)
    return leaf in _PAIRED or leaf.endswith(("_weight", "_bias"))


def _shape(tensor: torch.Tensor) -> list[int]:
    return list(tensor.shape)


def strip_common_prefix(source: Mapping[str, torch.Tensor],
                        target: Iterable[str]) -> dict[str, torch.Tensor]:
    """Drop a first key segment every source key shares and no spec key has (`model.`, as
    Lightning saves, `backbone.`)."""
    heads = {k.split(".", 1)[0] for k in source}
    if len(heads) != 1 or not all("." in k for k in source):
        return dict(source)
    head = heads.pop()
    if any(k.split(".", 1)[0] == head for k in target):
        return dict(source)
    return {k.split(".", 1)[1]: v for k, v in source.items()}


_NUMBER = re.compile(r"(\d+)")


def natural_key(key: str) -> list:
    """Sort key that orders numbers by value: `blocks.2` before `blocks.10`."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in _NUMBER.split(key)]


def _told_apart_by_numbers(keys: list[str]) -> bool:
    """Whether naturally sorted keys differ, pair by pair, first in a segment where only the
    numbers differ (so their order is the numbers' order, not the alphabet's)."""
    for a, b in zip(keys, keys[1:], strict=False):
        for x, y in zip(a.split("."), b.split("."), strict=False):
            if x != y:
                if _NUMBER.sub("#", x) != _NUMBER.sub("#", y):
                    return False
                break
    return True


class _Matcher:
    def __init__(self, source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                 rules: list[Rule], family: str, buffers: Mapping[str, torch.Tensor],
                 ordered: bool):
        if not ordered:
            source = {k: source[k] for k in sorted(source, key=natural_key)}
        self.ordered = ordered
        self.source, self.target, self.rules, self.family = source, target, rules, family
        self.buffers = buffers
        self.pairs: dict[str, Pair] = {}  # target key -> pair
        self.by_source: dict[str, str] = {}  # source key -> target key
        self.settled: set[str] = set()  # keys handled otherwise: problems, recomputed buffers
        self.problems: list[str] = []
        self.recomputed: list[Pair] = []

    def add(self, target: str, source: str, how: str) -> None:
        self.pairs[target] = Pair(target, source, how)
        self.by_source[source] = target

    # ------------------------------------------------------------------ 1. names
    def by_name(self) -> None:
        for key, tensor in self.source.items():
            renamed = next((t for t in (r.apply(key) for r in self.rules) if t is not None), None)
            name, how = (renamed, "rule") if renamed is not None else (key, "name")
            if name not in self.target and name in self.buffers:
                self.recompute(key, name)
                continue
            if name not in self.target:
                if renamed is not None:
                    self.problems.append(f"source tensor {key!r} maps to {name!r} by the "
                                         f"{self.family} rules, which the spec does not have")
                    self.settled.add(key)
                continue
            if name in self.pairs:
                self.problems.append(f"{key!r} and {self.pairs[name].source!r} both map to "
                                     f"{name!r}")
                self.settled.update((key, name))
                continue
            want = self.target[name]
            if tuple(tensor.shape) != tuple(want.shape):
                self.problems.append(f"{key!r} has shape {_shape(tensor)}, spec {name!r} has "
                                     f"{_shape(want)}")
                self.settled.update((key, name))
                continue
            self.add(name, key, how)

    # ------------------------------------------------------------------ 2. structure
    def by_module_structure(self) -> None:
        """Zip whole modules first: the k-th conv with a [64, 64, 1, 1] weight and a [64]
        bias on one side is the k-th such module on the other, wherever each model registers
        it (MaxViT's shortcut before its body, ConvNeXt's layer scale before its block)."""
        sources = self._module_groups(self.source, self.by_source)
        targets = self._module_groups(self.target, self.pairs)
        for signature in sources.keys() & targets.keys():
            have, want = sources[signature], targets[signature]
            if len(have) != len(want) or not self._order_known([module_of(k[0]) for k in have]):
                continue  # left to the tensor-by-tensor pass, which reports what stays unclear
            for source_keys, target_keys in zip(have, want, strict=True):
                self._zip(source_keys, target_keys)

    def _module_groups(self, tensors, done) -> dict[tuple, list[list[str]]]:
        modules: dict[str, list[str]] = {}
        for key in tensors:
            if key not in done and key not in self.settled:
                modules.setdefault(module_of(key), []).append(key)
        groups: dict[tuple, list[list[str]]] = {}
        for keys in modules.values():
            signature = tuple(sorted(_signature(k, tensors[k]) for k in keys))
            groups.setdefault(signature, []).append(keys)
        return groups

    def _zip(self, source_keys: list[str], target_keys: list[str]) -> None:
        """Pair two modules' tensors: by leaf name where both have it with one signature, else
        in order within each signature (which a file without an order cannot tell)."""
        targets = {leaf_of(k): k for k in target_keys}
        pairs, rest = [], []
        for key in source_keys:
            same = targets.get(leaf_of(key))
            if same is not None and _signature(same, self.target[same]) == \
                    _signature(key, self.source[key]):
                pairs.append((targets.pop(leaf_of(key)), key))
            else:
                rest.append(key)
        by_signature: dict[tuple, list[str]] = {}
        for key in (k for k in target_keys if k in targets.values()):
            by_signature.setdefault(_signature(key, self.target[key]), []).append(key)
        if not self.ordered and any(len(keys) > 1 for keys in by_signature.values()):
            return  # left to the tensor-by-tensor pass, which reports it
        for key in rest:
            pairs.append((by_signature[_signature(key, self.source[key])].pop(0), key))
        for target, key in pairs:
            self.add(target, key, "structure")

    def by_structure(self) -> None:
        sources = self._groups(self.source, self.by_source)
        targets = self._groups(self.target, self.pairs)
        for signature in dict.fromkeys([*sources, *targets]):
            have, want = sources.get(signature, []), targets.get(signature, [])
            if have and want and (len(have) != len(want) or not self._order_known(have)):
                role, shape, _ = signature
                what = f"shape {list(shape)}" + (f" ({role})" if role != "tensor" else "")
                why = "" if len(have) != len(want) else \
                    " (safetensors files do not keep the order a model registers its tensors " \
                    "in; save its state_dict with torch.save, or rename with --family)"
                self.problems.append(
                    f"cannot tell which of {len(have)} source tensors of {what} "
                    f"({_few(have)}) fill the {len(want)} spec tensors of that shape "
                    f"({_few(want)}){why}")
                self.settled.update((*have, *want))
            elif have and want:
                for key, target in zip(have, want, strict=True):
                    self.add(target, key, "structure")

    def _order_known(self, keys: list[str]) -> bool:
        return self.ordered or len(keys) < 2 or _told_apart_by_numbers(keys)

    def _groups(self, tensors: Mapping[str, torch.Tensor], done) -> dict[tuple, list[str]]:
        groups: dict[tuple, list[str]] = {}
        for key, tensor in tensors.items():
            if key not in done and key not in self.settled:
                groups.setdefault(_signature(key, tensor), []).append(key)
        return groups

    # ------------------------------------------------------------------ 3. integrity
    def check_integrity(self) -> None:
        """Refuse structure matches that split a module's weight and bias across modules."""
        reported: set[str] = set()
        for side, other in (("source", "target"), ("target", "source")):
            owners: dict[str, dict[str, str]] = {}  # module -> {its key: other side's key}
            for pair in self.pairs.values():
                key = getattr(pair, side)
                if _paired(key):
                    owners.setdefault(module_of(key), {})[key] = getattr(pair, other)
            for module, keys in owners.items():
                if len({module_of(k) for k in keys.values()}) < 2 or reported & set(keys.values()):
                    continue
                refused = [self.pairs[k if side == "target" else self.by_source[k]]
                           for k in keys]
                if all(p.how != "structure" for p in refused):
                    continue
                where = ", ".join(f"{leaf_of(k)} -> {v!r}" for k, v in keys.items())
                self.problems.append(
                    f"matching by structure would split {side} module {module!r} ({where}): the "
                    "two models order these tensors differently, and shapes cannot tell them "
                    "apart")
                reported.update(keys)
                for pair in refused:
                    if pair.how == "structure":
                        del self.pairs[pair.target]
                        del self.by_source[pair.source]
                        self.settled.update((pair.source, pair.target))

    # ------------------------------------------------------------------ 4. recomputed buffers
    def recompute_leftovers(self) -> None:
        """Source tensors left over that, in a module already matched, are buffers the spec
        rebuilds itself (by the same leaf name)."""
        modules = {module_of(p.source): module_of(p.target) for p in self.pairs.values()}
        for key in self.source:
            if key in self.by_source or key in self.settled or module_of(key) not in modules:
                continue
            target = ".".join(filter(None, (modules[module_of(key)], leaf_of(key))))
            if target in self.buffers:
                self.recompute(key, target)

    def recompute(self, key: str, target: str) -> None:
        tensor, ours = self.source[key], self.buffers[target]
        if tensor.numel() != ours.numel() or \
                not torch.equal(tensor.reshape(ours.shape).to(ours.dtype), ours):
            self.problems.append(f"source buffer {key!r} differs from the spec's {target!r}, "
                                 "which the spec computes from its sizes (other windows?)")
        self.recomputed.append(Pair(target, key, "recomputed"))
        self.settled.add(key)

    # ------------------------------------------------------------------ 5. leftovers
    def leftovers(self, skip: Iterable[str]) -> None:
        skip = set(skip)
        how = f"no {self.family} rule, name or structure" if self.rules else \
            "no spec tensor by name or structure"
        for key, tensor in self.target.items():  # the spec's gaps first: usually fewer
            if key not in self.pairs and key not in self.settled and key not in skip:
                self.problems.append(f"spec tensor {key!r} {_shape(tensor)} has no source")
        for key, tensor in self.source.items():
            if key not in self.by_source and key not in self.settled:
                self.problems.append(f"source tensor {key!r} {_shape(tensor)} matches {how}")


def _few(keys: list[str], shown: int = 3) -> str:
    text = ", ".join(repr(k) for k in keys[:shown])
    return text + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def match_weights(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                  rules: Iterable[Rule] = (), family: str = "",
                  buffers: Mapping[str, torch.Tensor] | None = None,
                  optional: Iterable[str] = (), ordered: bool = True) -> WeightMapping:
    """Map `source` tensors onto `target` (the spec model's state_dict; meta tensors will do).

    Args:
        source: the tensors read from a file (see `strip_common_prefix`).
        target: the spec's state_dict, in the model's order.
        rules: a family's renames, tried before names and structure.
        family: the rules' name, for messages.
        buffers: the spec's recomputed (non-persistent) buffers, by key, with their values.
        optional: spec keys that may stay unfilled (training-only heads absent from the source).
        ordered: whether `source` is in the model's registration order (False: safetensors).

    Returns:
        A WeightMapping; its `problems` list everything that stops an exact import.
    """
    matcher = _Matcher(source, target, list(rules), family, buffers or {}, ordered)
    matcher.by_name()
    matcher.by_module_structure()
    matcher.by_structure()
    matcher.check_integrity()
    matcher.recompute_leftovers()
    matcher.leftovers(optional)
    order = {k: i for i, k in enumerate(target)}
    pairs = sorted(matcher.pairs.values(), key=lambda p: order[p.target])
    return WeightMapping(pairs, matcher.recomputed, matcher.problems)
