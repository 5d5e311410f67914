"""`nnspec new`: family templates render into valid specs, documented variables, safe writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from nnspec.compiler import build_model, compile_graph, load_spec
from nnspec.compiler.build import CompiledModel
from nnspec.compiler.errors import UsageError
from nnspec.runtime.cli import main
from nnspec.runtime.codegen.families import list_families, parse_header, render_family

FAMILIES = ("plain_cnn", "resnet", "unet", "vit_small")
SMALL = {  # variables that keep each family quick to build
    "plain_cnn": {"widths": "8,16"},
    "resnet": {"depth": "10", "width": "8", "size": "32", "classes": "10"},
    "unet": {"base": "4", "levels": "2", "size": "16"},
    "vit_small": {"dim": "32", "depth": "2", "heads": "4", "size": "16"},
}


def test_list_shows_every_family_with_its_variables_and_defaults(capsys):
    assert main(["new", "--list"]) == 0
    text = capsys.readouterr().out
    for family in FAMILIES:
        assert f"{family}: " in text
    assert "--var depth=18" in text and "choices: 10, 18, 34, 50, 101, 152" in text
    assert "--var widths=32,64,128" in text and "--var levels=3" in text


def test_header_parsing_reads_defaults_docs_and_choices():
    text = """{#- A family.
    Second line.
vars:
  depth: 18      # layers; choices: 10, 18
  name: net      # spec name
-#}
nnspec: 1
"""
    description, variables = parse_header(text, "x")
    assert description == "A family. Second line."
    assert [(v.name, v.default, v.choices) for v in variables] == [
        ("depth", "18", ("10", "18")),
        ("name", "net", ()),
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_writes_a_spec_that_compiles_and_runs(family, tmp_path, capsys):
    out = tmp_path / f"{family}.yaml"
    args = ["new", family, "-o", str(out)]
    for name, value in SMALL[family].items():
        args += ["--var", f"{name}={value}"]
    assert main(args) == 0
    assert str(out) in capsys.readouterr().out
    model = build_model(out)
    model.eval()
    spec = load_spec(out)
    x = torch.randn(2, *spec.input.shape)
    with torch.no_grad():
        y = model(x)
    assert tuple(y.shape[1:]) == model.graph.output_shape
    assert torch.isfinite(y).all()


def test_family_defaults_are_documented_and_valid():
    names = {f.name for f in list_families()}
    assert set(FAMILIES) <= names
    for family in list_families():
        assert family.description and family.variables
        compile_graph(load_spec(family.path, variables=family.defaults()))


def _write(text: str, path: Path) -> Path:
    path.write_text(text)
    return path


def test_resnet_family_at_depth_18_and_50_matches_torchvision_parameter_counts(tmp_path):
    for depth, reference in ((18, torchvision.models.resnet18), (50, torchvision.models.resnet50)):
        text = render_family("resnet", {"depth": str(depth)})
        graph = compile_graph(load_spec(_write(text, tmp_path / f"r{depth}.yaml")))
        with torch.device("meta"):
            ours = sum(p.numel() for p in CompiledModel(graph).parameters())
            theirs = sum(p.numel() for p in reference().parameters())
        assert ours == theirs


def test_width_and_depth_change_the_resnet(tmp_path):
    text = render_family("resnet", SMALL["resnet"])
    small = compile_graph(load_spec(_write(text, tmp_path / "small.yaml")))
    widths = [n.shape[0] for n in small.nodes if n.kind == "conv"]
    assert max(widths) == 8 * 8  # four stages double the base width three times
    blocks = {s.id for n in small.nodes for s in n.scopes if s.kind == "block"}
    assert len(blocks) == 4  # depth 10: one basic block per stage


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "net.yaml"
    out.write_text("mine\n")
    assert main(["new", "plain_cnn", "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "mine\n"
    assert main(["new", "plain_cnn", "-o", str(out), "--force"]) == 0
    assert load_spec(out).name == "plain_cnn"


def test_an_invalid_rendered_spec_is_an_error_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "vit.yaml"
    # 5 heads cannot split a width of 192: the spec renders but does not compile
    assert main(["new", "vit_small", "--var", "heads=5", "-o", str(out)]) == 2
    assert "heads=5" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["new", "resnett"], "did you mean 'resnet'"),
        (["new", "resnet", "--var", "dpth=50"], "did you mean 'depth'"),
        (["new", "resnet", "--var", "depth=51"], "choose one of 10, 18"),
        (["new", "resnet", "--var", "depth"], "NAME=VALUE"),
        (["new"], "nnspec new --list"),
    ],
)
def test_usage_errors_exit_2_with_a_hint(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_written_spec_records_how_it_was_made(tmp_path):
    out = tmp_path / "r.yaml"
    assert main(["new", "resnet", "--var", "depth=34", "-o", str(out)]) == 0
    first = out.read_text().splitlines()[0]
    assert first == "# Started with `nnspec new resnet --var depth=34`: edit freely."
    assert load_spec(out).description.startswith("ResNet-34")


def test_unknown_family_raises_usage_error_from_the_api():
    with pytest.raises(UsageError, match="families: .*plain_cnn"):
        render_family("nope", {})
