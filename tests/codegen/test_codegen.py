"""`nnspec codegen`: generated source against the compiled model (keys, shapes, outputs), ruff
with default settings, init schemes against hand formulas, heads in training mode, the CLI."""

from __future__ import annotations

import ast
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnspec.compiler import compile_graph
from nnspec.compiler.build import CompiledModel, build_graph_model
from nnspec.compiler.errors import ExportError
from nnspec.runtime.cli import main
from nnspec.runtime.codegen.format import Brackets, Call, Code, layout
from nnspec.runtime.codegen.generate import generate_source, network_class_name

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILES = sorted(
    p
    for folder in (ROOT / "specs", ROOT / "specs" / "examples")
    for p in folder.iterdir()
    if p.suffix in (".yaml", ".yml", ".json")
)
SMALL_PARAMS = 1_000_000  # output parity in the default run below this size; `slow` above


def _param_count(path: Path) -> int:
    try:
        graph = compile_graph(path)
    except Exception:  # a broken spec fails visibly in the tests below
        return 0
    with torch.device("meta"):
        return sum(p.numel() for p in CompiledModel(graph).parameters())


_SIZES = {p: _param_count(p) for p in SPEC_FILES}
SMALL_SPECS = [p for p in SPEC_FILES if _SIZES[p] < SMALL_PARAMS]
LARGE_SPECS = [p for p in SPEC_FILES if _SIZES[p] >= SMALL_PARAMS]


def load_generated(source: str, name: str = "generated") -> dict:
    namespace: dict = {"__name__": name}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace


def network_class(source: str, graph, class_name: str | None = None):
    return load_generated(source, graph.name)[network_class_name(graph, class_name)]


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def assert_eval_parity(graph, source: str, batch: int = 2) -> None:
    model = build_graph_model(graph, seed=0)
    net = network_class(source, graph)()
    net.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    net.eval()
    torch.manual_seed(1)
    inputs = [_sample(node, batch) for node in graph.inputs.values()]
    with torch.no_grad():
        expected, got = model(*inputs), net(*inputs)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def _sample(node, batch: int) -> torch.Tensor:
    if node.dtype == "int64":
        return torch.randint(0, 10, (batch, *node.shape))
    return torch.randn(batch, *node.shape)


def ruff(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff")
    command = [exe] if exe else [sys.executable, "-m", "ruff"]
    return subprocess.run([*command, *args], capture_output=True, text=True)


# ------------------------------------------------------------------ every spec in the repo


@pytest.fixture(scope="module", params=SPEC_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def generated(request):
    graph = compile_graph(request.param)
    return graph, generate_source(graph)


def test_spec_codegen_matches_compiled_state_dict(generated):
    graph, source = generated
    with torch.device("meta"):
        compiled = CompiledModel(graph)
        net = network_class(source, graph)()
    assert shapes(net) == shapes(compiled)


def test_spec_codegen_imports_only_torch_and_names_its_spec(generated):
    graph, source = generated
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module.split(".")[0])
    assert modules <= {"torch", "collections"}
    header = source.split('"""', 1)[0]
    assert f'"{graph.name}"' in header and graph.spec.spec_hash in header


def test_spec_codegen_passes_ruff_with_default_settings(generated, tmp_path):
    graph, source = generated
    path = tmp_path / f"{graph.name}.py"
    path.write_text(source)
    check = ruff("check", "--isolated", "--no-cache", str(path))
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = ruff("format", "--isolated", "--no-cache", "--diff", str(path))
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.parametrize("path", SMALL_SPECS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_small_spec_codegen_gives_compiled_outputs(path):
    graph = compile_graph(path)
    assert_eval_parity(graph, generate_source(graph))


@pytest.mark.slow
@pytest.mark.parametrize("path", LARGE_SPECS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_large_spec_codegen_gives_compiled_outputs(path):
    graph = compile_graph(path)
    assert_eval_parity(graph, generate_source(graph), batch=1)


# ------------------------------------------------------------------ zoo designs, made small

SMALL_VARIANTS = {
    "resnet50_32px": ("resnet50", ["input.shape=[3,32,32]"]),
    "vit_b_16_tiny": (
        "vit_b_16",
        ["vars.layers=2", "vars.hidden=32", "vars.heads=4", "vars.mlp=64", "input.shape=[3,32,32]"],
    ),
    "densenet121_32px": ("examples/densenet121", ["input.shape=[3,32,32]"]),
    "mobilenet_v2_32px": ("examples/mobilenet_v2", ["input.shape=[3,32,32]"]),
}


@pytest.mark.parametrize("name", sorted(SMALL_VARIANTS))
def test_small_variants_of_zoo_designs_give_compiled_outputs(name):
    spec, overrides = SMALL_VARIANTS[name]
    graph = compile_graph(spec, overrides)
    assert_eval_parity(graph, generate_source(graph))


def test_runs_of_equal_blocks_are_added_in_a_loop_like_make_layer():
    graph = compile_graph("resnet34")
    source = generate_source(graph)
    assert "for i in range(2, 7):" in source  # layer3: block1 projects, block2..block6 repeat
    with torch.device("meta"):
        net = network_class(source, graph)()
    assert [name for name, _ in net.layer3.named_children()] == [f"block{i}" for i in range(1, 7)]
    assert type(net.layer3.block6).__name__ == "Basic"


FAMILY_VARIABLES = {
    "plain_cnn": {"widths": "8,16"},
    "resnet": {"depth": "50", "width": "4", "size": "32", "classes": "10"},
    "unet": {"base": "4", "levels": "2", "size": "16"},
    "vit_small": {"dim": "32", "depth": "2", "heads": "4", "size": "16"},
}


@pytest.mark.parametrize("family", sorted(FAMILY_VARIABLES))
def test_specs_started_from_families_give_compiled_outputs(family, tmp_path):
    from nnspec.runtime.codegen.families import write_family

    path = tmp_path / f"{family}.yaml"
    write_family(family, FAMILY_VARIABLES[family], path)
    graph = compile_graph(path)
    assert_eval_parity(graph, generate_source(graph))


def test_resnet_blocks_become_classes_with_a_projection_variant():
    graph = compile_graph("resnet18")
    source = generate_source(graph)
    namespace = load_generated(source)
    with torch.device("meta"):
        net = namespace["Resnet18"]()
    assert type(net.layer1.block1).__name__ == "Basic"
    assert type(net.layer2.block1).__name__ == "BasicProjection"
    assert type(net.layer2.block2).__name__ == "Basic"
    assert isinstance(net.layer1, torch.nn.Sequential)
    # widths and strides come from the block's arguments, not from copied literals
    assert "def __init__(self, in_channels: int, width: int, stride: int) -> None:" in source
    assert "BasicProjection(in_channels=64, width=128, stride=2)" in source


# ------------------------------------------------------------------ heads, inputs, init


HEADS_SPEC = {
    "nnspec": 1,
    "name": "with_heads",
    "input": {"shape": [3, 8, 8]},
    "normalize": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.4]},
    "network": [
        {"conv": {"out": 8, "kernel": 3, "padding": 1}},
        "batchnorm",
        "relu",
        {"id": "trunk", "conv": {"out": 8, "kernel": 3, "padding": 1}},
        "global_avg_pool",
        {"id": "fc", "linear": {"out": 4}},
    ],
    "heads": [
        {
            "id": "aux",
            "from": "trunk",
            "loss_weight": 0.3,
            "network": ["global_avg_pool", {"linear": {"out": 4}}],
        }
    ],
}


def test_heads_run_in_training_mode_only_with_the_compiled_return_convention():
    graph = compile_graph(HEADS_SPEC)
    model = build_graph_model(graph, seed=0)
    net = network_class(generate_source(graph), graph)()
    net.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(4, 3, 8, 8)
    model.train()
    net.train()
    out, heads = net(x)
    expected_out, expected_heads = model(x)
    torch.testing.assert_close(out, expected_out, atol=1e-6, rtol=0)
    assert heads.keys() == {"aux"}
    torch.testing.assert_close(heads["aux"], expected_heads["aux"], atol=1e-6, rtol=0)
    model.eval()
    net.eval()
    with torch.no_grad():
        got = net(x)
    assert isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, model(x), atol=1e-6, rtol=0)


def test_googlenet_auxiliary_heads_match_in_training_mode_and_vanish_in_eval():
    graph = compile_graph("googlenet", ["input.shape=[3,64,64]"])
    model = build_graph_model(graph, seed=0)
    net = network_class(generate_source(graph), graph)()
    net.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    results = []
    for module in (model, net):
        module.train()
        torch.manual_seed(3)  # the same dropout masks: both run the layers in graph order
        with torch.no_grad():
            results.append(module(x))
    (expected, expected_heads), (out, heads) = results
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert heads.keys() == expected_heads.keys() == set(graph.heads)
    for head in heads:
        torch.testing.assert_close(heads[head], expected_heads[head], atol=1e-6, rtol=0)
    model.eval()
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), atol=1e-6, rtol=0)


def test_input_normalisation_is_non_persistent_buffers():
    graph = compile_graph(HEADS_SPEC)
    net = network_class(generate_source(graph), graph)()
    buffers = dict(net.named_buffers())
    torch.testing.assert_close(
        buffers["input_normalization.mean"].flatten(), torch.tensor([0.5, 0.4, 0.3])
    )
    torch.testing.assert_close(
        buffers["input_normalization.std"].flatten(), torch.tensor([0.2, 0.3, 0.4])
    )
    assert not any(k.startswith("input_normalization") for k in net.state_dict())


def test_named_inputs_become_forward_arguments():
    spec = {
        "nnspec": 1,
        "name": "two_inputs",
        "inputs": {"image": {"shape": [4]}, "meta": {"shape": [3]}},
        "network": [
            {"id": "a", "linear": {"out": 5}, "from": "image"},
            {"id": "b", "linear": {"out": 5}, "from": "meta"},
            {"id": "both", "concat": {}, "from": ["a", "b"]},
            {"linear": {"out": 2}},
        ],
    }
    graph = compile_graph(spec)
    source = generate_source(graph)
    assert "def forward(self, image: torch.Tensor, meta: torch.Tensor)" in source
    assert_eval_parity(graph, source)


KINDS_SPEC = {
    "nnspec": 1,
    "name": "every_kind",
    "input": {"shape": [4, 16, 16]},
    "network": [
        {"id": "norm_in", "normalize": {"mean": [0.1, 0.2, 0.3, 0.4], "std": [1, 2, 3, 4]}},
        {"conv": {"out": 8, "kernel": 3, "padding": "same", "groups": 2, "dilation": 1}},
        {"groupnorm": {"groups": 4}},
        {"leaky_relu": {"slope": 0.2}},
        {"local_response_norm": {"size": 3}},
        {"dropout": {"p": 0.1, "channel": True}},
        {"stochastic_depth": {"p": 0.1}},
        {"avgpool": {"kernel": 2, "count_include_pad": False}},
        {"conv_transpose": {"out": 6, "kernel": 2, "stride": 2}},
        "hardswish",
        {"adaptive_max_pool": {"size": 4}},
        {"upsample": {"scale": 2, "mode": "bilinear", "align_corners": False}},
        {"id": "gate_in", "identity": {}},
        {"id": "gate", "sequence": [{"global_max_pool": {"keep_dims": True}}, "sigmoid"]},
        {"id": "gated", "multiply": {}, "from": ["gate_in", "gate"]},
        {"adaptive_avg_pool": {"size": [2, 4]}},
        {"reshape": {"shape": [6, 8]}},
        {"permute": {"dims": [1, 0]}},
        {"layernorm": {}},
        {"gru": {"hidden": 5, "bidirectional": True}},
        {"scale": {"learnable": True, "value": 0.5, "dim": -1}},
        {"scale": {"value": 2.0}},
        {"slice": {"dim": 0, "start": 1, "end": 7}},
        {"gelu": {"approximate": "tanh"}},
        "silu",
        "tanh",
        "hardsigmoid",
        {"mean": {"dims": [-1], "keep_dims": True}},
        {"select": {"dim": 0, "index": -1}},
        {"linear": {"out": 3}},
        {"softmax": {}},
    ],
}


def test_every_layer_kind_is_written_and_gives_compiled_outputs():
    from nnspec.compiler.layers import kind_names

    graph = compile_graph(KINDS_SPEC)
    assert_eval_parity(graph, generate_source(graph))
    covered = {n.kind for n in graph.nodes}
    for path in SPEC_FILES:
        covered |= {n.kind for n in compile_graph(path).nodes}
    # a new layer kind needs a codegen rule and a spec (here or in specs/) that exercises it
    assert set(kind_names()) <= covered, sorted(set(kind_names()) - covered)


INIT_SPEC = {
    "nnspec": 1,
    "name": "init_check",
    "input": {"shape": [64, 6, 6]},
    "init": {
        "conv": {"scheme": "kaiming_normal", "mode": "fan_out", "nonlinearity": "relu"},
        "linear": {"scheme": "constant", "value": 0.25},
        "bias": "ones",
        "zero_init_residual": True,
    },
    "blocks": {
        "res": {
            "args": {"c": "int"},
            "residual": {
                "body": [
                    {"conv": {"out": "$c", "kernel": 3, "padding": 1}},
                    "batchnorm",
                    "relu",
                    {"conv": {"out": "$c", "kernel": 3, "padding": 1}},
                    "batchnorm",
                ],
                "shortcut": "identity",
            },
        }
    },
    "network": [
        {"id": "block", "res": {"c": 64}},
        "global_avg_pool",
        {"id": "fc", "linear": {"out": 32}},
        {"id": "out", "linear": {"out": 32}, "init": {"weight": "orthogonal", "bias": "zeros"}},
    ],
}


def test_init_weights_follow_the_spec_scheme():
    graph = compile_graph(INIT_SPEC)
    torch.manual_seed(0)
    net = network_class(generate_source(graph), graph)()
    conv = net.block.conv1.weight
    # Kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (out_channels * 3 * 3))
    assert conv.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)
    assert torch.all(net.block.conv1.bias == 1)
    assert torch.all(net.fc.weight == 0.25) and torch.all(net.fc.bias == 1)
    w = net.out.weight
    torch.testing.assert_close(w @ w.T, torch.eye(32), atol=1e-4, rtol=0)
    assert torch.all(net.out.bias == 0)
    # zero_init_residual: the last batchnorm of the residual body starts at zero
    assert torch.all(net.block.batchnorm2.weight == 0)
    assert torch.all(net.block.batchnorm1.weight == 1)


# ------------------------------------------------------------------ errors, formatting, CLI


def test_unknown_module_class_is_an_export_error_naming_it():
    from nnspec.runtime.codegen.modules import rule_for

    class Mystery(torch.nn.Module):
        pass

    node = type("N", (), {"id": "x.y", "kind": "mystery"})()
    with pytest.raises(ExportError, match="(?s)Mystery.*'x.y'.*register_codegen"):
        rule_for(Mystery(), node)


def test_layout_matches_ruff_format_on_long_nested_calls(tmp_path):
    inner = Call("Block", (), tuple((f"argument_{i}", i * 1000) for i in range(6)))
    expr = Call("nn.Sequential", (Call("OrderedDict", (), (("first", inner), ("second", inner))),))
    lines = [
        "def f():",
        *layout("result = ", expr, depth=1),
        *layout("pair = ", Brackets("[", (Code("alpha_beta_gamma"),) * 9), depth=1),
        "    return result, pair",
        "",
    ]
    path = tmp_path / "layout.py"
    path.write_text("\n".join(lines))
    fmt = ruff("format", "--isolated", "--no-cache", "--diff", str(path))
    assert fmt.returncode == 0, fmt.stdout


def test_cli_writes_the_file_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "model.py"
    spec = str(ROOT / "specs" / "digits_cnn.yaml")
    assert main(["codegen", spec, "-o", str(out), "--class-name", "Digits"]) == 0
    source = out.read_text()
    graph = compile_graph(spec)
    assert "class Digits(nn.Module):" in source
    with torch.device("meta"):
        net = load_generated(source)["Digits"]()
    assert shapes(net) == shapes(CompiledModel(graph).to("meta"))
    assert main(["codegen", spec, "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == source
    assert (
        main(
            ["codegen", spec, "-o", str(out), "--force", "--set", "network[0].conv_bn_relu.out=16"]
        )
        == 0
    )
    assert "ConvBnRelu(in_channels=1, out=16" in out.read_text()


def test_ids_that_are_not_python_names_are_reported(capsys):
    spec = {
        "nnspec": 1,
        "name": "odd",
        "input": {"shape": [4]},
        "network": [{"id": "1x1", "linear": {"out": 2}}],
    }
    with pytest.raises(ExportError, match="'1x1' is not"):
        generate_source(compile_graph(spec))


def test_a_spec_named_like_a_helper_class_gets_a_distinct_network_class():
    spec = {
        "nnspec": 1,
        "name": "normalize",
        "input": {"shape": [3, 4, 4]},
        "normalize": {"mean": [0, 0, 0], "std": [1, 1, 1]},
        "network": ["global_avg_pool", {"linear": {"out": 2}}],
    }
    graph = compile_graph(spec)
    source = generate_source(graph)
    assert "class Normalize(nn.Module):" in source and "class NormalizeNet(nn.Module):" in source
    assert_eval_parity(graph, source)


def test_cli_rejects_a_bad_class_name(capsys):
    assert main(["codegen", str(ROOT / "specs" / "digits_cnn.yaml"), "--class-name", "1x"]) == 2
    assert "not a Python identifier" in capsys.readouterr().err
