"""check validates magnitudes: integers within int32, finite numbers, shapes any tensor can
hold, and a footprint budget, so that it refuses what summary or train would crash on."""

from __future__ import annotations

import pytest

from nnspec.compiler import compile_graph, load_spec
from nnspec.compiler.errors import SpecError, UsageError
from nnspec.compiler.footprint import (
    estimate_footprint,
    footprint_problems,
    parse_bytes,
    parse_count,
)
from nnspec.compiler.summary import summarize

from .fixtures import write_spec


def spec_with(tmp_path, layer: str, shape: str = "[3, 8, 8]"):
    return write_spec(tmp_path, f"""
        input: {{shape: {shape}}}
        network:
          - {layer}
          - flatten
          - linear: {{out: 10}}
    """)


@pytest.mark.parametrize(("layer", "path", "message"), [
    ("conv: {out: 100000000000000000000000, kernel: 3}", "network[0].conv.out",
     "100000000000000000000000 is larger than a layer can be"),
    ("conv: {out: 8, kernel: [3, 2147483648]}", "network[0].conv.kernel[1]",
     "2147483648 is larger than a layer can be"),
    ("leaky_relu: {slope: .inf}", "network[0].leaky_relu.slope",
     "expected a finite number, got inf"),
    ("upsample: {scale: 1.0e300}", "network[0].upsample",
     "has a dim larger than 2**31 - 1"),
    ("upsample: {scale: 1.0e308}", "network[0].upsample", "cannot infer the output shape"),
])
def test_absurd_magnitudes_are_located_errors(tmp_path, layer, path, message):
    with pytest.raises(SpecError) as info:
        compile_graph(load_spec(spec_with(tmp_path, layer)))
    problem = info.value.problems[0]
    assert problem.path == path
    assert message in problem.message
    assert problem.mark.line == 5  # the layer's line (after the 2-line header and `input`)


def test_input_dims_beyond_int32_are_refused(tmp_path):
    with pytest.raises(SpecError, match=r"input.shape\[1\]: expected less than or equal to "
                                        "2147483647"):
        load_spec(spec_with(tmp_path, "relu", shape="[1, 10000000000000, 8]"))


def test_footprint_refuses_a_model_too_big_for_one_sample_at_its_largest_layer(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [3, 8, 8]}
        network:
          - conv: {out: 200000000, kernel: 3}
          - global_avg_pool
          - linear: {out: 10}
    """)
    footprint = estimate_footprint(compile_graph(load_spec(path)))
    # by hand: conv 3*3*3 weights + 1 bias per output channel; linear 2e8 -> 10
    conv, linear = 28 * 200_000_000, 200_000_000 * 10 + 10
    assert footprint.params == conv + linear
    activations = 3 * 8 * 8 + 200_000_000 * 6 * 6 + 200_000_000 + 10
    assert footprint.activation_bytes == 4 * activations
    params, memory = footprint_problems(footprint)
    assert params.path == "network[0]"
    assert params.message == ("the model has 7.6G parameters, more than the budget of 4G; "
                              "this layer has 5.6G of them")
    assert memory.path == "network[0]" and memory.mark.line == 5
    assert memory.message.startswith("one sample needs about 55.9 GiB (28.3 GiB of parameters, "
                                     "27.6 GiB of activations), more than the budget of 16 GiB")
    assert "--max-memory" in memory.hint
    assert footprint_problems(footprint, max_params=10**10, max_memory=2**40) == []


def test_footprint_of_an_input_too_large_to_allocate(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [1, 300000, 300000]}
        network: [{conv: {out: 4, kernel: 3}}, global_avg_pool, {linear: {out: 10}}]
    """)
    graph = compile_graph(load_spec(path))
    (problem,) = footprint_problems(estimate_footprint(graph))
    assert "one sample needs about 1.64 TiB" in problem.message


def test_the_zoo_fits_the_default_budget_and_counts_match_summary():
    for name in ("resnet152", "vit_b_16"):
        graph = compile_graph(name)
        footprint = estimate_footprint(graph)
        assert footprint_problems(footprint) == []
        assert footprint.params == summarize(graph)["params"]


@pytest.mark.parametrize(("text", "count"), [("4G", 4 * 10**9), ("500M", 5 * 10**8),
                                              ("25000000", 25_000_000), ("1.5e9", 1_500_000_000)])
def test_parse_count(text, count):
    assert parse_count(text) == count


@pytest.mark.parametrize(("text", "size"), [("16GiB", 16 * 2**30), ("512MB", 512 * 10**6),
                                             ("8G", 8 * 2**30), ("1e12", 10**12)])
def test_parse_bytes(text, size):
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["", "4X", "-1G", "0", "1e999", "nan", "1e99999999999"])
def test_bad_amounts_are_usage_errors(text):
    with pytest.raises(UsageError, match="expected an amount of memory"):
        parse_bytes(text)


def test_summary_counts_layers_that_only_a_training_head_uses(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [3, 8, 8]}
        network:
          - conv: {out: 4, kernel: 3}
            id: c1
          - conv: {out: 8, kernel: 3}
            id: side
          - global_avg_pool: {}
            from: c1
          - linear: {out: 10}
        heads:
          - id: aux
            from: side
            network: [global_avg_pool, {linear: {out: 10}}]
    """)
    summary = summarize(compile_graph(path))
    side = 4 * 9 * 8 + 8  # reads c1 (4 channels)
    assert summary["params"] == (3 * 9 * 4 + 4) + (4 * 10 + 10)
    assert summary["heads"]["aux"]["params"] == side + 8 * 10 + 10
    assert summary["training_params"] == sum(layer["params"] for layer in summary["layers"])


def test_googlenet_training_params_equal_torchvision_with_aux_heads():
    import torch
    import torchvision

    with torch.device("meta"):
        reference = torchvision.models.googlenet(aux_logits=True, init_weights=False)
    summary = summarize(compile_graph("googlenet"))
    assert summary["training_params"] == sum(p.numel() for p in reference.parameters())


def test_build_refuses_parameters_the_machine_cannot_hold_before_allocating(monkeypatch):
    from nnspec.compiler import build_model, footprint

    monkeypatch.setattr(footprint, "physical_memory", lambda: 100_000)  # a 100 kB machine
    with pytest.raises(SpecError) as info:
        build_model("digits_cnn")  # 56,714 parameters: 227 kB
    problem = info.value.problems[0]
    assert problem.message.startswith("the model's parameters need 222 KiB, more than this "
                                      "machine's 97.7 KiB of memory; this layer holds")
    # stage3's 64 -> 64 conv holds the most; its path is in the block's body
    assert problem.path == "blocks.conv_bn_relu.layers[0]"
    assert problem.context == "in block 'conv_bn_relu' called at network[2] (node stage3.conv1)"
