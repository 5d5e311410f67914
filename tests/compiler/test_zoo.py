"""The model zoo against torchvision itself: parameter counts, published MACs, weights, outputs.

Every reference comes from torchvision (its constructors, its weights' metadata, its forward
pass); nothing downloads: state_dicts are made from randomly initialised torchvision models.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision import models as tv  # a test dependency (pyproject [test])

from nnspec.compiler import build_model, load_spec
from nnspec.compiler.errors import DataError, UsageError
from nnspec.compiler.load import render_template
from nnspec.runtime.cli import main
from nnspec.runtime.export.exporter import load_weights
from nnspec.runtime.lab.zoo_reference import ZOO_MODELS, torchvision_figures
from nnspec.runtime.train.weights import import_torchvision_weights, map_state_dict

SPECS = Path(__file__).resolve().parents[2] / "specs"
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
SMALL_VIT = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
SMALL_VIT_OVERRIDES = [
    "input.shape=[3, 32, 32]",
    "vars.patch=8",
    "vars.layers=2",
    "vars.heads=2",
    "vars.hidden=16",
    "vars.mlp=32",
]


def torchvision_model(name: str, **kwargs) -> torch.nn.Module:
    """torchvision's model as its pretrained weights run it (GoogLeNet: transform_input=True)."""
    if name == "googlenet":
        kwargs = {"aux_logits": True, "transform_input": True, "init_weights": False, **kwargs}
    return tv.get_model(name, **kwargs)


def spec_path(name: str) -> str:
    return str(SPECS / f"{name}.yaml")


def summary(name: str, capsys) -> dict:
    assert main(["summary", spec_path(name), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def lively(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights and BN statistics on an O(1) scale, so a 1e-4 agreement means something
    (torchvision's own inits give GoogLeNet outputs of ~0.03 and ViT a zero head)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0, (2 / fan_in) ** 0.5, generator=generator)
                if module.bias is not None:
                    module.bias.uniform_(-0.1, 0.1, generator=generator)
            elif isinstance(module, torch.nn.BatchNorm2d | torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.1, 0.1, generator=generator)
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.1, 0.1, generator=generator)
                    module.running_var.uniform_(0.5, 1.5, generator=generator)
        for name, param in model.named_parameters():
            if name in ("class_token", "encoder.pos_embedding"):
                param.normal_(0, 0.5, generator=generator)
    return model


def imported(name, tmp_path, tv_model, spec, overrides=()):
    """The spec's model with tv_model's weights, through `nnspec import-weights`."""
    pth = tmp_path / f"{name}.pth"
    torch.save(tv_model.state_dict(), pth)
    out = tmp_path / f"{name}.safetensors"
    args = ["import-weights", spec_path(spec), str(pth), "-o", str(out)]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 0
    model = build_model(spec_path(spec), overrides=list(overrides))
    load_weights(model, out)
    return model


def assert_same_eval_output(tv_model, model, image_size=224, batch=2):
    """nnspec's model on raw images equals torchvision's on ImageNet-normalised ones."""
    raw = torch.rand(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = tv_model.eval()((raw - IMAGENET_MEAN) / IMAGENET_STD)
        got = model.eval()(raw)
    assert got.shape == expected.shape and expected.std() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def import_and_compare(name, tmp_path, tv_model, spec, overrides=(), image_size=224, batch=2):
    """Import tv_model's (randomised) weights onto the spec, compare eval outputs on one batch."""
    model = imported(name, tmp_path, lively(tv_model), spec, overrides)
    assert_same_eval_output(tv_model, model, image_size, batch)


@pytest.fixture(scope="module")
def googlenet_pair(tmp_path_factory):
    """torchvision's GoogLeNet with random O(1) weights, and the spec's model with them imported."""
    reference = lively(torchvision_model("googlenet"))
    directory = tmp_path_factory.mktemp("googlenet")
    return reference, imported("googlenet", directory, reference, "googlenet")


# ------------------------------------------------------------------------ the spec family


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_rendered_resnet_specs_equal_the_template_output(depth):
    template = SPECS / "resnet.yaml.j2"
    rendered = render_template(template.read_text(), str(template), {"depth": str(depth)})
    assert (SPECS / f"resnet{depth}.yaml").read_text() == rendered, (
        f"specs/resnet{depth}.yaml is stale: re-render it from specs/resnet.yaml.j2 (README: One ResNet family)"
    )


# ------------------------------------------------------------------------ size and compute


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_parameter_count_equals_torchvision(name, capsys):
    with torch.device("meta"):  # counting needs shapes only
        reference = (
            torchvision_model(name, aux_logits=False) if name == "googlenet" else tv.get_model(name)
        )
    expected = sum(p.numel() for p in reference.parameters())
    assert summary(name, capsys)["params"] == expected


def test_googlenet_aux_heads_count_like_torchvision_inception_aux(capsys):
    with torch.device("meta"):
        reference = torchvision_model("googlenet")
    expected = {
        h: sum(p.numel() for p in getattr(reference, h).parameters()) for h in ("aux1", "aux2")
    }
    report = summary("googlenet", capsys)
    assert {h: figures["params"] for h, figures in report["heads"].items()} == expected


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_macs_within_three_percent_of_torchvision_published_gmacs(name, capsys):
    published = tv.get_model_weights(name).DEFAULT.meta["_ops"] * 1e9
    macs = summary(name, capsys)["macs"]
    assert abs(macs - published) / published < 0.03, (
        f"{name}: {macs / 1e9:.3f} vs {published / 1e9:.3f} GMACs"
    )


def test_zoo_reference_reports_torchvision_figures():
    figures = torchvision_figures("resnet50")
    with torch.device("meta"):
        params = sum(p.numel() for p in tv.resnet50().parameters())
    assert (figures.params, figures.gmacs) == (params, tv.ResNet50_Weights.DEFAULT.meta["_ops"])
    assert torchvision_figures("not_a_zoo_model") is None


# ------------------------------------------------------------------------ imported weights


def test_resnet18_with_imported_weights_equals_torchvision(tmp_path):
    import_and_compare(
        "resnet18", tmp_path, torchvision_model("resnet18"), "resnet18", image_size=64
    )


def test_googlenet_with_imported_weights_equals_torchvision_transform_input(googlenet_pair):
    reference, model = googlenet_pair
    assert_same_eval_output(reference, model, image_size=64)


def test_googlenet_aux_heads_in_training_equal_torchvision_inception_aux(googlenet_pair):
    reference, model = googlenet_pair
    for module in [*reference.modules(), *model.modules()]:
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0  # training mode without randomness: batch-statistics BN stays on
    raw = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    expected = reference.train()((raw - IMAGENET_MEAN) / IMAGENET_STD)
    logits, heads = model.train()(raw)
    assert set(heads) == {"aux1", "aux2"} and model.head_loss_weights == {"aux1": 0.3, "aux2": 0.3}
    for got, want in (
        (logits, expected.logits),
        (heads["aux1"], expected.aux_logits1),
        (heads["aux2"], expected.aux_logits2),
    ):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_small_vit_with_imported_weights_equals_torchvision(tmp_path):
    reference = tv.VisionTransformer(**SMALL_VIT)
    import_and_compare(
        "vit", tmp_path, reference, "vit_b_16", overrides=SMALL_VIT_OVERRIDES, image_size=32
    )


def test_imported_file_holds_spec_keys_and_torchvision_tensors(tmp_path):
    from safetensors.torch import load_file

    reference = tv.resnet18()
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    result = import_torchvision_weights(
        spec_path("resnet18"), tmp_path / "r18.pth", tmp_path / "r18.safetensors"
    )
    written = load_file(str(result.path))
    assert set(written) == set(build_model(spec_path("resnet18")).state_dict())
    torch.testing.assert_close(
        written["layer2.block1.conv1.weight"], reference.layer2[0].conv1.weight
    )
    torch.testing.assert_close(written["fc.bias"], reference.fc.bias)


def test_import_weights_unwraps_a_training_checkpoint(tmp_path):
    reference = tv.VisionTransformer(**SMALL_VIT)
    torch.save({"model": reference.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pth")
    spec = load_spec(spec_path("vit_b_16"), overrides=SMALL_VIT_OVERRIDES)
    out = tmp_path / "vit.safetensors"
    result = import_torchvision_weights(spec, tmp_path / "checkpoint.pth", out)
    assert (result.family, result.tensors) == ("vit", len(reference.state_dict()))
    assert out.is_file()


def test_mapping_lists_every_leftover_missing_and_misshapen_tensor():
    source = dict(tv.resnet18().state_dict())
    target = {k: tuple(v.shape) for k, v in build_model(spec_path("resnet18")).state_dict().items()}
    source["extra.weight"] = torch.zeros(3)
    del source["layer1.0.conv1.weight"]
    source["fc.weight"] = torch.zeros(10, 512)
    with pytest.raises(DataError) as error:
        map_state_dict(source, target, "resnet")
    message = str(error.value)
    assert "'extra.weight' matches no resnet rule" in message
    assert "spec tensor 'layer1.block1.conv1.weight' has no torchvision source" in message
    assert "'fc.weight' has shape [10, 512], spec 'fc.weight' has [1000, 512]" in message
    assert "3 problems" in message


def test_import_weights_refuses_another_models_state_dict(tmp_path, capsys):
    torch.save(tv.resnet34().state_dict(), tmp_path / "r34.pth")
    code = main(
        [
            "import-weights",
            spec_path("resnet18"),
            str(tmp_path / "r34.pth"),
            "-o",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "does not fit the spec" in err and "layer1.2.conv1.weight" in err
    assert not (tmp_path / "x").exists()


def test_import_weights_refuses_pickled_code(tmp_path, capsys):
    torch.save(tv.resnet18(), tmp_path / "model.pth")  # a whole pickled module, not a state_dict
    code = main(
        [
            "import-weights",
            spec_path("resnet18"),
            str(tmp_path / "model.pth"),
            "-o",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    assert "torch.save(model.state_dict(), path)" in capsys.readouterr().err


def test_import_weights_needs_a_known_family(tmp_path):
    torch.save(tv.resnet18().state_dict(), tmp_path / "r18.pth")
    spec = {"nnspec": 1, "name": "mynet", "input": {"shape": [3, 8, 8]}, "network": ["flatten"]}
    with pytest.raises(UsageError, match="known families: alexnet, vgg, vgg_bn"):
        import_torchvision_weights(spec, tmp_path / "r18.pth", tmp_path / "out.safetensors")


# ------------------------------------------------------------------------ full size (slow)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_full_size_imported_weights_equal_torchvision(name, tmp_path):
    import_and_compare(name, tmp_path, torchvision_model(name), name, batch=1)


def test_googlenet_pretrained_layout_without_aux_heads_imports(tmp_path, capsys):
    # torchvision's pretrained GoogLeNet drops its auxiliary classifiers from the state_dict
    reference = lively(torchvision_model("googlenet", aux_logits=False))
    model = imported("googlenet", tmp_path, reference, "googlenet")
    assert "initialised as the spec says: aux1, aux2" in capsys.readouterr().out
    assert_same_eval_output(reference, model)
