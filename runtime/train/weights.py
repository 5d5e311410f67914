"""Import torchvision weights: a torchvision state_dict renamed onto a zoo spec's module ids.

Each zoo family has an explicit table of rules, one regular expression over torchvision's key
and the spec key it becomes. The mapping is checked as a whole before anything is written:
every torchvision tensor is used exactly once, every spec tensor is filled, shapes are equal.
All problems are reported together. torchvision itself is not needed: only its file format.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from nnspec.compiler.errors import DataError, UsageError


@dataclass(frozen=True)
class Rule:
    """Rename torchvision keys that fully match `pattern` to `target`.

    `target` is a `str.format` template over the pattern's named groups; `{name1}` is group
    `name` plus one, because torchvision counts repeated modules from 0 and spec ids from 1.
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


MAX_LISTED = 20  # problems shown in an error; the count says how many there are

_PARAM = r"(?P<p>weight|bias|running_mean|running_var|num_batches_tracked)"


def _renamed(mapping: Iterable[tuple[str, str]]) -> list[Rule]:
    """Rules that move a whole module `tv_prefix.*` to `spec_prefix.*`."""
    return [Rule(rf"{re.escape(tv)}\.{_PARAM}", f"{spec}.{{p}}") for tv, spec in mapping]


def _vgg_plan(batch_norm: bool) -> list[tuple[str, str]]:
    """(torchvision module, spec id) pairs of VGG16's `features`, walked as torchvision builds it.

    Configuration "D" of the VGG paper: conv3-64 x2, conv3-128 x2, conv3-256 x3, conv3-512 x3
    twice, a max pool after each group. Spec ids are the paper's Caffe names (conv3_2, bn3_2).
    """
    groups = [2, 2, 3, 3, 3]
    pairs, index = [], 0
    for group, convs in enumerate(groups, start=1):
        for conv in range(1, convs + 1):
            pairs.append((f"features.{index}", f"conv{group}_{conv}"))
            index += 1
            if batch_norm:
                pairs.append((f"features.{index}", f"bn{group}_{conv}"))
                index += 1
            index += 1  # relu
        index += 1  # max pool
    return pairs


_CLASSIFIER_VGG = [("classifier.0", "fc6"), ("classifier.3", "fc7"), ("classifier.6", "fc8")]

_ALEXNET = _renamed(
    [
        ("features.0", "conv1"),
        ("features.3", "conv2"),
        ("features.6", "conv3"),
        ("features.8", "conv4"),
        ("features.10", "conv5"),
        ("classifier.1", "fc6"),
        ("classifier.4", "fc7"),
        ("classifier.6", "fc8"),
    ]
)

_RESNET = [
    *_renamed([("conv1", "conv1"), ("bn1", "bn1"), ("fc", "fc")]),
    Rule(
        rf"layer(?P<s>\d)\.(?P<b>\d+)\.(?P<m>conv|bn)(?P<k>\d)\.{_PARAM}",
        "layer{s}.block{b1}.{m}{k}.{p}",
    ),
    Rule(
        rf"layer(?P<s>\d)\.(?P<b>\d+)\.downsample\.0\.{_PARAM}",
        "layer{s}.block{b1}.shortcut.conv1.{p}",
    ),
    Rule(
        rf"layer(?P<s>\d)\.(?P<b>\d+)\.downsample\.1\.{_PARAM}",
        "layer{s}.block{b1}.shortcut.batchnorm1.{p}",
    ),
]

# torchvision's BasicConv2d (conv + bn) and the spec's `basic_conv` block share the names conv, bn;
# inception paths get the paper's column names (#1x1, #3x3 reduce, #3x3, ..., pool proj).
_BASIC_CONV = rf"(?P<l>conv|bn)\.{_PARAM}"
_INCEPTION = r"(?P<i>inception\d[a-e])"
_GOOGLENET = [
    Rule(rf"(?P<m>conv[123])\.{_BASIC_CONV}", "{m}.{l}.{p}"),
    Rule(rf"{_INCEPTION}\.branch1\.{_BASIC_CONV}", "{i}.branch1.conv1x1.{l}.{p}"),
    Rule(rf"{_INCEPTION}\.branch2\.0\.{_BASIC_CONV}", "{i}.branch2.reduce.{l}.{p}"),
    Rule(rf"{_INCEPTION}\.branch2\.1\.{_BASIC_CONV}", "{i}.branch2.conv3x3.{l}.{p}"),
    Rule(rf"{_INCEPTION}\.branch3\.0\.{_BASIC_CONV}", "{i}.branch3.reduce.{l}.{p}"),
    Rule(rf"{_INCEPTION}\.branch3\.1\.{_BASIC_CONV}", "{i}.branch3.conv5x5.{l}.{p}"),
    Rule(rf"{_INCEPTION}\.branch4\.1\.{_BASIC_CONV}", "{i}.branch4.proj.{l}.{p}"),
    Rule(rf"(?P<a>aux[12])\.conv\.{_BASIC_CONV}", "{a}.conv.{l}.{p}"),
    Rule(rf"(?P<a>aux[12])\.(?P<fc>fc[12])\.{_PARAM}", "{a}.{fc}.{p}"),
    *_renamed([("fc", "fc")]),
]

_ENCODER_LAYER = r"encoder\.layers\.encoder_layer_(?P<i>\d+)"
_VIT = [
    Rule(r"conv_proj\.(?P<p>weight|bias)", "conv_proj.proj.{p}"),
    Rule(r"class_token", "class_token.token"),
    Rule(r"encoder\.pos_embedding", "encoder.pos_embedding.embedding"),
    Rule(rf"{_ENCODER_LAYER}\.ln_1\.(?P<p>weight|bias)", "encoder.layer{i1}.attention.ln_1.{p}"),
    Rule(
        rf"{_ENCODER_LAYER}\.self_attention\.(?P<p>in_proj_(weight|bias)|out_proj\.(weight|bias))",
        "encoder.layer{i1}.attention.self_attention.{p}",
    ),
    Rule(rf"{_ENCODER_LAYER}\.ln_2\.(?P<p>weight|bias)", "encoder.layer{i1}.mlp.ln_2.{p}"),
    Rule(rf"{_ENCODER_LAYER}\.mlp\.0\.(?P<p>weight|bias)", "encoder.layer{i1}.mlp.fc1.{p}"),
    Rule(rf"{_ENCODER_LAYER}\.mlp\.3\.(?P<p>weight|bias)", "encoder.layer{i1}.mlp.fc2.{p}"),
    Rule(r"encoder\.ln\.(?P<p>weight|bias)", "encoder.ln.{p}"),
    Rule(r"heads\.head\.(?P<p>weight|bias)", "head.{p}"),
]

# family -> (spec names it covers, its rules)
FAMILIES: dict[str, tuple[str, list[Rule]]] = {
    "alexnet": (r"alexnet", _ALEXNET),
    "vgg": (r"vgg16", _renamed([*_vgg_plan(False), *_CLASSIFIER_VGG])),
    "vgg_bn": (r"vgg16_bn", _renamed([*_vgg_plan(True), *_CLASSIFIER_VGG])),
    "googlenet": (r"googlenet", _GOOGLENET),
    "resnet": (r"resnet\d+", _RESNET),
    "vit": (r"vit_.+", _VIT),
}


def family_of(spec_name: str) -> str:
    """The zoo family whose rules fit a spec name (`resnet50` -> `resnet`)."""
    for family, (names, _) in FAMILIES.items():
        if re.fullmatch(names, spec_name):
            return family
    raise UsageError(
        f"no torchvision weight mapping for a spec named {spec_name!r}; "
        f"known families: {', '.join(FAMILIES)}",
    )


def rename_keys(family: str, keys: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Map torchvision keys to spec keys with a family's rules.

    Returns the mapping (torchvision key -> spec key) and the keys no rule matched.
    """
    if family not in FAMILIES:
        raise UsageError(f"unknown weight family {family!r}; choose one of {', '.join(FAMILIES)}")
    rules = FAMILIES[family][1]
    mapping: dict[str, str] = {}
    unmatched: list[str] = []
    for key in keys:
        target = next((t for t in (r.apply(key) for r in rules) if t is not None), None)
        if target is None:
            unmatched.append(key)
        else:
            mapping[key] = target
    return mapping, unmatched


def map_state_dict(
    source: Mapping[str, torch.Tensor],
    target_shapes: Mapping[str, tuple[int, ...]],
    family: str,
) -> dict[str, torch.Tensor]:
    """Rename a torchvision state_dict onto spec keys, checking that it fits exactly.

    Args:
        source: torchvision's state_dict.
        target_shapes: the spec model's state_dict keys and their shapes.
        family: a key of `FAMILIES`.

    Returns:
        The tensors under spec keys, in the spec's key order.

    Raises:
        DataError: listing every torchvision tensor left over (no rule, or no such spec
            tensor), every spec tensor left missing, every key used twice and every shape
            that differs.
    """
    mapping, unmatched = rename_keys(family, source)
    problems = [f"torchvision tensor {k!r} matches no {family} rule" for k in unmatched]
    used: dict[str, str] = {}
    for tv_key, spec_key in mapping.items():
        if spec_key not in target_shapes:
            problems.append(f"torchvision tensor {tv_key!r} maps to {spec_key!r}, not in the spec")
        elif spec_key in used:
            problems.append(f"{tv_key!r} and {used[spec_key]!r} both map to {spec_key!r}")
        else:
            used[spec_key] = tv_key
            got, want = tuple(source[tv_key].shape), tuple(target_shapes[spec_key])
            if got != want:
                problems.append(
                    f"{tv_key!r} has shape {list(got)}, spec {spec_key!r} has {list(want)}"
                )
    problems += [
        f"spec tensor {k!r} has no torchvision source" for k in target_shapes if k not in used
    ]
    if problems:
        shown = problems[:MAX_LISTED] + (
            [f"... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        )
        raise DataError(
            f"the torchvision state_dict does not fit the spec ({len(problems)} problems):\n  "
            + "\n  ".join(shown)
            + "\n  hint: was it saved from the torchvision model of the same name and depth?",
        )
    return {k: source[used[k]] for k in target_shapes}


def load_torchvision_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a torchvision `.pth` state_dict safely (`weights_only=True`, no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike
        raise DataError(
            f"{path}: cannot read it as a state_dict ({type(error).__name__}: {error})\n"
            "    hint: only plain tensors load safely; save one with "
            "torch.save(model.state_dict(), path)",
        ) from error
    if isinstance(data, Mapping) and not all(isinstance(v, torch.Tensor) for v in data.values()):
        data = next(
            (data[k] for k in ("state_dict", "model") if isinstance(data.get(k), Mapping)), data
        )
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise DataError(
            f"{path}: expected a state_dict (a mapping of names to tensors); "
            "save one with torch.save(model.state_dict(), path)",
        )
    return dict(data)


@dataclass(frozen=True)
class ImportResult:
    """What `import_torchvision_weights` wrote."""

    path: Path
    family: str
    tensors: int
    parameters: int
    initialised_heads: tuple[str, ...] = ()  # training-only heads the source lacked


def import_torchvision_weights(
    spec, state_dict_path: str | Path, out_path: str | Path, family: str | None = None
) -> ImportResult:
    """Map a torchvision `.pth` state_dict onto `spec`'s module ids and save it as safetensors.

    Args:
        spec: a loaded Spec (or anything `compile_graph` accepts) of a zoo family.
        state_dict_path: the torchvision state_dict, read with `torch.load(weights_only=True)`.
        out_path: the safetensors file to write; load it with `nnspec export --weights` or
            `nnspec.runtime.export.load_weights`.
        family: the rules to use (a key of `FAMILIES`); default: chosen by the spec's name.

    Raises:
        UsageError: no rules for the spec's name, or an unknown family.
        DataError: the file is unreadable or does not fit the spec (every problem listed).
    """
    from safetensors.torch import save_file

    from nnspec.compiler import CompiledModel, compile_graph

    graph = compile_graph(spec)
    with torch.device("meta"):  # only names and shapes are needed: no memory, no init
        model = CompiledModel(graph)
    family = family or family_of(model.spec.name)
    target = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    source = load_torchvision_state_dict(state_dict_path)
    absent = absent_heads(graph, target, rename_keys(family, source)[0].values())
    main = {k: v for k, v in target.items() if _head_of(k, absent) is None}
    tensors = map_state_dict(source, main, family)
    if absent:  # pretrained checkpoints drop training-only heads (torchvision's GoogLeNet does)
        from nnspec.compiler.build import build_graph_model

        initialised = build_graph_model(graph).state_dict()
        tensors = {k: tensors[k] if k in tensors else initialised[k] for k in target}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "nnspec.spec": model.spec.name,
        "nnspec.spec_hash": model.spec.spec_hash,
        "nnspec.imported_from": f"torchvision:{Path(state_dict_path).name}",
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_path), metadata=metadata)
    parameters = sum(p.numel() for p in model.parameters())
    return ImportResult(out_path, family, len(tensors), parameters, tuple(absent))


def _head_of(key: str, heads: Iterable[str]) -> str | None:
    return next((h for h in heads if key.startswith(h + ".")), None)


def absent_heads(graph, target: Mapping, mapped: Iterable[str]) -> list[str]:
    """Training-only heads none of whose tensors the source provides (a partial head is not
    absent: map_state_dict then reports what is missing)."""
    mapped = set(mapped)
    return [h for h in graph.heads
            if not any(_head_of(k, [h]) for k in mapped)
            and any(_head_of(k, [h]) for k in target)]
