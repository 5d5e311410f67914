"""`nnspec import-weights`: any PyTorch state_dict (torchvision, timm, a Lightning or DDP
checkpoint, safetensors) onto any spec's module ids, saved as safetensors.

Tensors are matched by name after known renames (each torchvision family of the zoo and the
examples has an explicit table of rules, one regular expression over torchvision's key and the
spec key it becomes), then by structure (see weight_mapping.py). The mapping is checked as a
whole before anything is written: every source tensor is used once, every spec tensor is
filled, shapes are equal, nothing is guessed. All problems are reported together.
torchvision and timm themselves are not needed: only their file formats.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nnspec.compiler.errors import DataError, UsageError
from nnspec.runtime.train.state_dict_files import read_state_dict
from nnspec.runtime.train.weight_mapping import (
    Pair,
    Rule,
    WeightMapping,
    match_weights,
    strip_common_prefix,
)

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



def _swin_rules() -> list[Rule]:
    """torchvision's SwinTransformer (V1 and V2): `features` holds the patch embedding, the
    four stages (features.1, .3, .5, .7) and the patch merging between them (.2, .4, .6)."""
    block = {
        r"norm1\.(?P<p>weight|bias)": "attention.norm1.{p}",
        r"attn\.qkv\.(?P<p>weight|bias)": "attention.attn.in_proj_{p}",
        r"attn\.proj\.(?P<p>weight|bias)": "attention.attn.out_proj.{p}",
        r"attn\.(?P<t>relative_position_bias_table|relative_position_index|logit_scale"
        r"|relative_coords_table|cpb_mlp\.[02]\.weight|cpb_mlp\.0\.bias)":
            "attention.attn.{t}",
        r"norm2\.(?P<p>weight|bias)": "mlp.norm2.{p}",
        r"mlp\.0\.(?P<p>weight|bias)": "mlp.fc1.{p}",
        r"mlp\.3\.(?P<p>weight|bias)": "mlp.fc2.{p}",
    }
    rules = _renamed([("features.0.0", "patch_embed.proj"), ("features.0.2", "patch_embed.norm")])
    for stage in range(1, 5):
        rules += [Rule(rf"features\.{2 * stage - 1}\.(?P<b>\d+)\.{pattern}",
                       f"stage{stage}.block{{b1}}.{target}") for pattern, target in block.items()]
    for merge in range(1, 4):
        rules.append(Rule(rf"features\.{2 * merge}\.(?P<m>reduction|norm)\.(?P<p>weight|bias)",
                          f"merge{merge}.{{m}}.{{p}}"))
    return rules


def _maxvit_rules() -> list[Rule]:
    """torchvision's MaxVit: `blocks.i.layers.j.layers` holds MBconv, window_attention and
    grid_attention; the stem and classifier are Sequentials."""
    layer = r"blocks\.(?P<s>\d)\.layers\.(?P<b>\d+)\.layers\."
    spec = "stage{s1}.block{b1}."
    attention = r"(?P<a>window|grid)_attention\."
    inner = {
        r"MBconv\.proj\.1\.": "mbconv.shortcut.proj.",
        r"MBconv\.layers\.pre_norm\.": "mbconv.pre_norm.",
        r"MBconv\.layers\.(?P<c>conv_[ab])\.0\.": "mbconv.{c}.conv.",
        r"MBconv\.layers\.(?P<c>conv_[ab])\.1\.": "mbconv.{c}.bn.",
        r"MBconv\.layers\.squeeze_excitation\.(?P<f>fc[12])\.":
            "mbconv.squeeze_excitation.branch2.{f}.",
        r"MBconv\.layers\.conv_c\.": "mbconv.conv_c.",
        attention + r"attn_layer\.0\.": "{a}_attention.attention.norm.",
        attention + r"attn_layer\.1\.merge\.": "{a}_attention.attention.attn.out_proj.",
        attention + r"mlp_layer\.0\.": "{a}_attention.mlp.norm.",
        attention + r"mlp_layer\.1\.": "{a}_attention.mlp.fc1.",
        attention + r"mlp_layer\.3\.": "{a}_attention.mlp.fc2.",
    }
    rules = [Rule(layer + pattern + _PARAM, spec + target + "{p}")
             for pattern, target in inner.items()]
    rules += [
        Rule(layer + attention + r"attn_layer\.1\.to_qkv\.(?P<p>weight|bias)",
             spec + "{a}_attention.attention.attn.in_proj_{p}"),
        Rule(layer + attention
             + r"attn_layer\.1\.(?P<t>relative_position_bias_table|relative_position_index)",
             spec + "{a}_attention.attention.attn.{t}"),
        *_renamed([("stem.0.0", "stem.conv1.conv"), ("stem.0.1", "stem.conv1.bn"),
                   ("stem.1.0", "stem.conv2"), ("classifier.2", "norm"),
                   ("classifier.3", "pre_logits"), ("classifier.5", "head")]),
    ]
    return rules


_TIMM_BLOCK = r"blocks\.(?P<i>\d+)"
_TIMM_VIT = [  # timm's VisionTransformer (its safetensors files keep no order: names needed)
    Rule(r"cls_token", "class_token.token"),
    Rule(r"pos_embed", "encoder.pos_embedding.embedding"),
    Rule(r"patch_embed\.proj\.(?P<p>weight|bias)", "conv_proj.proj.{p}"),
    Rule(rf"{_TIMM_BLOCK}\.norm1\.(?P<p>weight|bias)", "encoder.layer{i1}.attention.ln_1.{p}"),
    Rule(rf"{_TIMM_BLOCK}\.attn\.qkv\.(?P<p>weight|bias)",
         "encoder.layer{i1}.attention.self_attention.in_proj_{p}"),
    Rule(rf"{_TIMM_BLOCK}\.attn\.proj\.(?P<p>weight|bias)",
         "encoder.layer{i1}.attention.self_attention.out_proj.{p}"),
    Rule(rf"{_TIMM_BLOCK}\.norm2\.(?P<p>weight|bias)", "encoder.layer{i1}.mlp.ln_2.{p}"),
    Rule(rf"{_TIMM_BLOCK}\.mlp\.(?P<f>fc[12])\.(?P<p>weight|bias)",
         "encoder.layer{i1}.mlp.{f}.{p}"),
    Rule(r"norm\.(?P<p>weight|bias)", "encoder.ln.{p}"),
]

# family -> (spec names it covers, its rules)
FAMILIES: dict[str, tuple[str, list[Rule]]] = {
    "alexnet": (r"alexnet", _ALEXNET),
    "vgg": (r"vgg16", _renamed([*_vgg_plan(False), *_CLASSIFIER_VGG])),
    "vgg_bn": (r"vgg16_bn", _renamed([*_vgg_plan(True), *_CLASSIFIER_VGG])),
    "googlenet": (r"googlenet", _GOOGLENET),
    "resnet": (r"resnet\d+", _RESNET),
    "vit": (r"vit_.+", _VIT),
    "swin": (r"swin_(v2_)?[tsb]", _swin_rules()),
    "maxvit": (r"maxvit_t", _maxvit_rules()),
    "timm_vit": (r"(?!)", _TIMM_VIT),  # never chosen by name: --family timm_vit
}


def family_of(spec_name: str) -> str | None:
    """The zoo family whose rules fit a spec name (`resnet50` -> `resnet`), or None."""
    return next((f for f, (names, _) in FAMILIES.items() if re.fullmatch(names, spec_name)), None)


def rules_of(family: str | None) -> list[Rule]:
    if family is None:
        return []
    if family not in FAMILIES:
        raise UsageError(f"unknown weight family {family!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[family][1]


@dataclass(frozen=True)
class ImportResult:
    """What `import_weights` wrote, and how each tensor was found."""

    path: Path
    family: str | None
    tensors: int
    parameters: int
    initialised_heads: tuple[str, ...] = ()  # training-only heads the source lacked
    pairs: tuple[Pair, ...] = ()  # spec key <- source key, in the spec's order
    recomputed: tuple[Pair, ...] = ()  # source buffers the spec rebuilds (checked equal)
    excluded: tuple[str, ...] = ()  # spec keys left as the spec initialises them
    entry: str = ""  # the checkpoint entry that held the weights ("" for a plain state_dict)
    counts: dict[str, int] = field(default_factory=dict)  # how -> tensors


def import_weights(spec, source_path: str | Path, out_path: str | Path,
                   family: str | None = None, exclude: Iterable[str] = ()) -> ImportResult:
    """Map a state_dict file onto `spec`'s module ids and save it as safetensors.

    Args:
        spec: a loaded Spec (or anything `compile_graph` accepts).
        source_path: a torch file (state_dict or a checkpoint holding one; read with
            `weights_only=True`) or a safetensors file.
        out_path: the safetensors file to write; load it with `nnspec export --weights` or
            `nnspec.runtime.export.load_weights`.
        family: rename rules to use first (a key of `FAMILIES`); default: chosen by the spec's
            name, none for other specs (names and structure only).
        exclude: regular expressions; spec and source keys they match (re.search) take no
            part: those spec tensors keep the spec's initialisation (a new classifier).

    Raises:
        UsageError: an unknown family or a bad pattern.
        DataError: the file is unreadable or does not fit the spec (every problem listed).
    """
    from safetensors.torch import save_file

    from nnspec.compiler import CompiledModel, compile_graph

    graph = compile_graph(spec)
    with torch.device("meta"):  # only names and shapes are needed: no memory, no init
        model = CompiledModel(graph)
    family = family or family_of(model.spec.name)
    rules = rules_of(family)
    patterns = _patterns(exclude)
    read = read_state_dict(source_path)
    target = {k: v for k, v in model.state_dict().items() if not _excluded(k, patterns)}
    source = {k: v for k, v in strip_common_prefix(read.tensors, target).items()
              if not _excluded(k, patterns)}
    heads = {k: h for k in target if (h := _head_of(k, graph.heads)) is not None}
    mapping = match_weights(source, target, rules, family or "", recomputed_buffers(graph),
                            optional=heads, ordered=read.ordered)
    filled = {p.target for p in mapping.pairs}
    absent = [h for h in graph.heads if not any(heads.get(k) == h for k in filled)]
    mapping.problems += [f"spec tensor {k!r} of head {h!r} has no source" for k, h in heads.items()
                         if h not in absent and k not in filled]
    if mapping.problems:
        raise DataError(_report(mapping, source_path))
    tensors = {p.target: source[p.source] for p in mapping.pairs}
    excluded = tuple(k for k in model.state_dict() if k not in target)
    if absent or excluded:  # pretrained files drop training-only heads (GoogLeNet's aux)
        from nnspec.compiler.build import build_graph_model

        initialised = build_graph_model(graph).state_dict()
        tensors.update({k: initialised[k] for k in (*excluded, *(k for k in heads
                                                                   if heads[k] in absent))})
    tensors = {k: tensors[k] for k in model.state_dict()}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "nnspec.spec": model.spec.name,
        "nnspec.spec_hash": model.spec.spec_hash,
        "nnspec.imported_from": Path(source_path).name,
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_path), metadata=metadata)
    counts: dict[str, int] = {}
    for pair in mapping.pairs:
        counts[pair.how] = counts.get(pair.how, 0) + 1
    return ImportResult(
        out_path, family, len(tensors), sum(p.numel() for p in model.parameters()),
        tuple(absent), tuple(mapping.pairs), tuple(mapping.recomputed), excluded, read.entry,
        counts)


#: the former name, from when only torchvision's zoo families were supported
import_torchvision_weights = import_weights


def recomputed_buffers(graph) -> dict[str, torch.Tensor]:
    """The non-persistent buffers of the spec's layers, by key (built on the CPU: they are
    computed from the spec's sizes, e.g. the relative position index of windowed attention)."""
    from nnspec.compiler.layers import get_kind

    out = {}
    for node in graph.nodes:
        kind = get_kind(node.kind)
        with torch.device("meta"):
            probe = kind.build(node.config, node.in_shapes)
        names = [(module_name, name) for module_name, sub in probe.named_modules()
                 for name in sub._non_persistent_buffers_set]
        if not names:
            continue
        module = kind.build(node.config, node.in_shapes)
        for module_name, name in names:
            key = ".".join(filter(None, (node.id, module_name, name)))
            out[key] = module.get_submodule(module_name).get_buffer(name)
    return out


def _patterns(exclude: Iterable[str]) -> list[re.Pattern]:
    try:
        return [re.compile(p) for p in exclude]
    except re.error as error:
        raise UsageError(f"--exclude: not a regular expression: {error}") from None


def _excluded(key: str, patterns: list[re.Pattern]) -> bool:
    return any(p.search(key) for p in patterns)


def _head_of(key: str, heads: Iterable[str]) -> str | None:
    return next((h for h in heads if key.startswith(h + ".")), None)


def _report(mapping: WeightMapping, source_path) -> str:
    problems = mapping.problems  # every one: each unmatched tensor is something to fix
    return (f"{Path(source_path).name} does not fit the spec ({len(problems)} problems):\n  "
            + "\n  ".join(problems)
            + "\n  hint: was it saved from a model of the same design and size? Keys that "
              "differ only in name match by structure when both models register their "
              "tensors in the same order; --exclude leaves a part (a new head) as initialised")
