"""specs/examples/swin_t.yaml, swin_v2_t.yaml and maxvit_t.yaml equal torchvision's swin_t,
swin_v2_t and maxvit_t:
parameters, state_dict shapes, the drop-path schedule, MACs against the published `_ops`, and
eval outputs after `nnspec import-weights` from torchvision's own state_dict.

Each model is built once per module (28M to 31M parameters) and compared on one image (224x224,
Swin V2's 256x256); nothing downloads: torchvision's weights are random, made lively below.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torchvision import models as tv

from nnspec.compiler import compile_graph, load_spec
from nnspec.compiler.build import CompiledModel
from nnspec.runtime.cli import main
from nnspec.runtime.export.exporter import load_weights
from nnspec.runtime.train.weights import FAMILIES, import_weights

EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
MODELS = {"swin_t": "swin", "swin_v2_t": "swin", "maxvit_t": "maxvit"}
RECOMPUTED = ("relative_position_index", "relative_coords_table")  # from the window size


def lively(model: torch.nn.Module) -> torch.nn.Module:
    """O(1) position biases, temperatures, key biases and batch-norm statistics (torchvision
    starts them near zero, at 10 and at the identity), so an agreement to 1e-4 covers them."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("relative_position_bias_table", "cpb_mlp.0.weight")):
                param.normal_(generator=generator)
            elif name.endswith("cpb_mlp.2.weight"):
                param.normal_(0, 0.1, generator=generator)
            elif name.endswith("logit_scale"):
                param.uniform_(1.0, 3.0, generator=generator)
            elif name.endswith("qkv.bias"):  # Swin V2 ignores the keys' part
                param.normal_(0, 0.1, generator=generator)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.1, 0.1, generator=generator)
                module.running_mean.uniform_(-0.1, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
    return model.eval()


def renamed(name: str, key: str) -> str:
    """torchvision's key under the family's rules: the spec's key (`norm`, `head`: the same)."""
    return next((t for t in (r.apply(key) for r in FAMILIES[MODELS[name]][1]) if t), key)


@pytest.fixture(scope="module", params=sorted(MODELS))
def pair(request, tmp_path_factory):
    """(name, torchvision's model, the spec's model with its weights imported, the folder
    holding torchvision's state_dict `tv.pth` and the imported `weights.safetensors`)."""
    name = request.param
    torch.manual_seed(0)
    reference = lively(tv.get_model(name))
    directory = tmp_path_factory.mktemp(name)
    torch.save(reference.state_dict(), directory / "tv.pth")
    out = directory / "weights.safetensors"
    spec = str(EXAMPLES / f"{name}.yaml")
    assert main(["import-weights", spec, str(directory / "tv.pth"), "-o", str(out), "-q"]) == 0
    model = CompiledModel(compile_graph(spec)).eval()  # no init: every weight is loaded
    load_weights(model, out)
    return name, reference, model, directory


def test_state_dict_is_torchvisions_under_the_rename_rules(pair):
    name, reference, model, _ = pair
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {renamed(name, k): tuple(v.shape) for k, v in reference.state_dict().items()
              if not k.endswith(RECOMPUTED)}
    assert ours == theirs
    assert sum(p.numel() for p in model.parameters()) == \
        sum(p.numel() for p in reference.parameters())


def test_eval_output_equals_torchvision_with_the_same_weights(pair):
    name, reference, model, _ = pair
    size = 256 if name == "swin_v2_t" else 224
    raw = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference((raw - MEAN) / STD)
        got = model(raw)
    assert expected.std() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_drop_path_grows_linearly_over_all_blocks_like_torchvisions(pair):
    name, reference, model, _ = pair
    if name.startswith("swin"):
        theirs = [block.stochastic_depth.p for i in (1, 3, 5, 7) for block in reference.features[i]]
        last = "attention.stochastic_depth1"
    else:
        theirs = [layer.layers.window_attention.stochastic_dropout.p
                  for block in reference.blocks for layer in block.layers]
        last = "window_attention.mlp.stochastic_depth1"
    ours = [n.config.p for n in model.graph.nodes if n.id.endswith(last)]
    assert ours == pytest.approx(theirs) and ours[-1] == pytest.approx(0.2)
    # every stochastic depth of a block has its block's rate
    by_block = {}
    for node in model.graph.nodes:
        if node.kind == "stochastic_depth":
            by_block.setdefault(".".join(node.id.split(".")[:2]), set()).add(node.config.p)
    assert all(len(rates) == 1 for rates in by_block.values())


def test_structure_alone_finds_what_the_rename_rules_say(pair):
    """For a spec of another name (no rules apply), names and structure give the same file."""
    name, _, _, directory = pair
    spec = load_spec(EXAMPLES / f"{name}.yaml", overrides=["name=my_windowed_net"])
    result = import_weights(spec, directory / "tv.pth", directory / "by_structure.safetensors")
    assert result.family is None and set(result.counts) <= {"structure", "name"}
    by_rules = load_file(str(directory / "weights.safetensors"))
    by_structure = load_file(str(directory / "by_structure.safetensors"))
    assert by_structure.keys() == by_rules.keys()
    assert all(torch.equal(by_structure[k], by_rules[k]) for k in by_rules)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_macs_within_three_percent_of_torchvisions_published_ops(name, capsys):
    published = tv.get_model_weights(name).DEFAULT.meta["_ops"] * 1e9
    assert main(["summary", str(EXAMPLES / f"{name}.yaml"), "--json"]) == 0
    macs = json.loads(capsys.readouterr().out)["macs"]
    assert abs(macs - published) / published < 0.03, f"{macs / 1e9:.3f} vs {published / 1e9:.3f}"
