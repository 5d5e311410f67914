"""Expansion: ids, repeat, from, residual, branches, blocks, heads, and located errors."""

from __future__ import annotations

import pytest
import torch

from nnspec.compiler import SpecError, build_model, compile_graph
from tests.compiler.fixtures import write_spec

RESNETISH = """
input: {shape: [3, 16, 16]}
blocks:
  basic:
    args: {width: int, stride: {default: 1}}
    residual:
      body:
        - conv: {out: $width, kernel: 3, stride: $stride, padding: 1, bias: false}
        - batchnorm
        - relu
        - conv: {out: $width, kernel: 3, padding: 1, bias: false}
        - batchnorm
      shortcut: auto
      post: [relu]
network:
  - conv: {out: 8, kernel: 3, padding: 1}
    id: stem
  - sequence:
      - basic: {width: 8}
        id: block
        repeat: 2
    id: stage1
  - sequence:
      - basic: {width: 16, stride: 2}
      - basic: {width: 16}
    id: stage2
  - global_avg_pool
  - linear: {out: 5}
    id: fc
"""


def test_ids_become_state_dict_keys(tmp_path):
    model = build_model(write_spec(tmp_path, RESNETISH))
    keys = set(model.state_dict())
    assert {"stage1.block1.conv1.weight", "stage1.block2.batchnorm2.running_var",
            "stage2.basic1.shortcut.conv1.weight", "stage2.basic1.shortcut.batchnorm1.bias",
            "stage2.basic2.conv2.weight", "fc.weight"} <= keys
    # identity shortcuts where shapes agree: no projection in stage1 or in stage2's second block
    assert not any(k.startswith(("stage1.block1.shortcut", "stage2.basic2.shortcut")) for k in keys)


def test_residual_computes_body_plus_shortcut(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [4]}
        network:
          - residual:
              body: [{linear: {out: 4, bias: false}}]
              shortcut: identity
              post: [relu]
    """)
    model = build_model(path).eval()
    x = torch.randn(3, 4)
    weight = model.residual1.linear1.weight
    expected = torch.relu(x @ weight.T + x)
    torch.testing.assert_close(model(x), expected)


def test_branches_concat_along_channels(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [3, 8, 8]}
        network:
          - branches:
              merge: concat
              paths:
                - [{conv: {out: 4, kernel: 1}}]
                - [{conv: {out: 6, kernel: 3, padding: 1}}]
                - []
    """)
    graph = compile_graph(path)
    assert graph.output_shape == (13, 8, 8)
    model = build_model(path)
    x = torch.randn(2, 3, 8, 8)
    out = model(x)
    torch.testing.assert_close(out[:, 10:], x)  # the empty path is the identity
    torch.testing.assert_close(out[:, :4], model.branches1.branch1.conv1(x))


def test_long_skip_with_from_and_concat(tmp_path):
    graph = compile_graph("specs/examples/tiny_unet.yaml")
    skip = next(n for n in graph.nodes if n.kind == "concat" and "enc1.relu2" in n.inputs)
    assert skip.in_shapes == [(16, 32, 32), (16, 32, 32)]
    assert graph.output_shape == (3, 32, 32)


def test_training_only_head_runs_in_training_only(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [6]}
        network:
          - linear: {out: 8}
            id: trunk
          - relu
          - linear: {out: 3}
        heads:
          - id: aux
            from: trunk
            loss_weight: 0.3
            network: [{linear: {out: 3}}]
    """)
    model = build_model(path)
    model.train()
    out, heads = model(torch.randn(2, 6))
    assert out.shape == (2, 3) and heads["aux"].shape == (2, 3)
    assert model.head_loss_weights == {"aux": 0.3}
    model.eval()
    assert isinstance(model(torch.randn(2, 6)), torch.Tensor)
    assert "aux.linear1" not in {step[0] for step in model._eval_plan}


def test_named_inputs_two_streams(tmp_path):
    path = write_spec(tmp_path, """
        inputs:
          image: {shape: [1, 8, 8]}
          meta: {shape: [5]}
        network:
          - conv: {out: 4, kernel: 3}
            from: image
          - global_avg_pool:
            id: pooled
          - linear: {out: 4}
            from: meta
            id: meta_fc
          - concat: {}
            from: [pooled, meta_fc]
          - linear: {out: 2}
    """)
    model = build_model(path)
    out = model(torch.randn(3, 1, 8, 8), torch.randn(3, 5))
    assert out.shape == (3, 2)
    assert model(image=torch.randn(1, 1, 8, 8), meta=torch.randn(1, 5)).shape == (1, 2)


def test_block_expressions_and_when(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [8, 4, 4]}
        blocks:
          inverted:
            args: {cin: int, cout: int, expand: {default: 1}}
            residual:
              body:
                - conv: {out: "${cin * expand}", kernel: 1}
                  when: ${expand != 1}
                - conv: {out: "${cin * expand}", kernel: 3, padding: 1, groups: "${cin * expand}"}
                - conv: {out: $cout, kernel: 1}
              shortcut: none_if_mismatch
        network:
          - inverted: {cin: 8, cout: 8, expand: 6}
          - inverted: {cin: 8, cout: 16}
    """)
    graph = compile_graph(path)
    kinds = [(n.id, n.shape) for n in graph.nodes]
    assert ("inverted1.conv1", (48, 4, 4)) in kinds      # expansion conv kept
    assert ("inverted1.add1", (8, 4, 4)) in kinds         # shapes agree: residual add
    assert not any(i.startswith("inverted2.add") for i, _ in kinds)  # 8 -> 16: no add
    assert graph.node("inverted2.conv1").config.groups == 8  # expand=1: no expansion conv


def test_all_problems_are_reported_together(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [3, 8, 8]}
        blocks:
          unit:
            args: {out: int}
            layers:
              - conv: {out: $out, kernel: 3}
              - batchnrom
        network:
          - conv: {out: 4, kernel: 3, kernal: 2}
          - unit: {out: 4, outt: 5}
          - unit: {out: 4}
          - linear: {out: 10}
    """)
    with pytest.raises(SpecError) as info:
        compile_graph(path)
    text = str(info.value)
    assert "network[0].conv.kernal: unknown key 'kernal' (did you mean 'kernel'?)" in text
    assert "block 'unit' has no argument 'outt' (did you mean 'out'?)" in text
    assert "unknown layer 'batchnrom' (did you mean 'batchnorm'?)" in text
    assert "in block 'unit' called at network[2]" in text
    assert f"{path}:9:9: blocks.unit.layers[1].batchnrom" in text  # the line inside the block
    assert "problems found" in text


def test_shape_mismatch_names_the_node(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [3, 16, 16]}
        network:
          - conv: {out: 64, kernel: 3, padding: 1}
            id: a
          - conv: {out: 128, kernel: 3, padding: 1}
            id: b
          - add: {}
            from: [a, b]
    """)
    with pytest.raises(SpecError) as info:
        compile_graph(path)
    assert f"{path}:9:5: network[2].add: add needs equal shapes, got (64, 16, 16) and " \
           "(128, 16, 16)" in str(info.value)


def test_linear_after_image_needs_flatten(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [3, 8, 8]}
        network:
          - conv: {out: 4, kernel: 3}
          - linear: {out: 10}
    """)
    with pytest.raises(SpecError) as info:
        compile_graph(path)
    assert "network[1].linear" in str(info.value) and "flatten" in str(info.value)


def test_unknown_from_suggests_a_name(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [4]}
        network:
          - linear: {out: 4}
            id: encoder
          - add: {}
            from: [encodr, encoder]
    """)
    with pytest.raises(SpecError, match="unknown node 'encodr' \\(did you mean 'encoder'\\?\\)"):
        compile_graph(path)


def test_huge_repeat_is_refused_quickly(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [4]}
        network:
          - linear: {out: 4}
            repeat: 1000000000
    """)
    with pytest.raises(SpecError, match="repeat must be an integer from 1 to"):
        compile_graph(path)


def test_recursive_block_is_an_error(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [4]}
        blocks:
          loop:
            layers: [loop]
        network: [loop]
    """)
    with pytest.raises(SpecError, match="calls itself"):
        compile_graph(path)


def test_duplicate_ids_are_refused(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [4]}
        network:
          - linear: {out: 4}
            id: fc
          - linear: {out: 4}
            id: fc
    """)
    with pytest.raises(SpecError, match="duplicate id 'fc'"):
        compile_graph(path)


def test_nested_repeats_stop_at_the_node_budget(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [4]}
        blocks:
          ten:
            layers: [relu, relu, relu, relu, relu, relu, relu, relu, relu, relu]
        network:
          - ten:
            repeat: 10000
    """)
    with pytest.raises(SpecError) as info:
        compile_graph(path)
    assert "expands to more than 20000 layers" in str(info.value)
    assert len(info.value.problems) == 1


def test_expressions_have_arithmetic_helpers(tmp_path):
    graph = compile_graph(write_spec(tmp_path, """
        input: {shape: [20, 4, 4]}
        blocks:
          squeeze:
            args: {ratio: {default: 0.25}}
            layers:
              - conv: {out: "${max(8, int(in_channels * ratio + 4) // 8 * 8)}", kernel: 1}
        network: [squeeze]
    """))
    assert graph.output_shape == (8, 4, 4)  # int(20 * 0.25 + 4) // 8 * 8 = 8


# ------------------------------------------------------------------ copy indices


def test_repeat_copies_see_their_index_and_count(tmp_path):
    graph = compile_graph(write_spec(tmp_path, """
        input: {shape: [4]}
        network:
          - linear: {out: "${4 + index * count}"}
            repeat: 3
            id: fc
          - linear: {out: "${100 + index + count}"}   # outside a repeat: copy 0 of 1
            id: last
    """))
    assert [n.shape for n in graph.nodes] == [(4,), (7,), (10,), (101,)]


def test_block_bodies_see_the_copy_and_the_network_wide_call_index(tmp_path):
    graph = compile_graph(write_spec(tmp_path, """
        input: {shape: [3]}
        vars: {rate: 0.3, blocks: 4}
        blocks:
          unit:
            args: {step: int}
            layers:
              - dropout: {p: "${rate * block_index / (blocks - 1)}"}
              - linear: {out: "${10 * step + index}"}
        network:
          - sequence:
              - unit: {step: "${index + 1}"}
                repeat: 2
                id: block
            id: stage1
          - sequence:
              - unit: {step: 7}
                repeat: 2
                id: block
            id: stage2
    """))
    drop = [n.config.p for n in graph.nodes if n.kind == "dropout"]
    assert drop == pytest.approx([0.0, 0.1, 0.2, 0.3])   # one line, across both stages
    widths = [n.shape[0] for n in graph.nodes if n.kind == "linear"]
    assert widths == [10, 21, 70, 71]   # args per copy; `index` in the body too


def test_a_nested_repeat_shadows_the_outer_index_and_args_win(tmp_path):
    graph = compile_graph(write_spec(tmp_path, """
        input: {shape: [3]}
        blocks:
          inner:
            args: {index: int}
            layers:
              - linear: {out: "${100 + index}"}
          outer:
            layers:
              - linear: {out: "${10 + index}"}
                repeat: 2
              - inner: {index: 5}
              - linear: {out: "${20 + index}"}
        network:
          - outer:
            repeat: 2
    """))
    widths = [n.shape[0] for n in graph.nodes]
    assert widths == [10, 11, 105, 20, 10, 11, 105, 21]


def test_make_divisible_equals_torchvisions_channel_rounding(tmp_path):
    from torchvision.models._utils import _make_divisible

    from nnspec.compiler.substitute import evaluate

    cases = [(72 / 4, 8, None), (18, 8, None), (240 / 4, 8, None), (3.5, 8, None), (100, 16, None),
             (27.9, 4, 16), (120 * 0.25, 8, None), (960 // 4, 8, None), (7, 3, 1)]
    for value, divisor, minimum in cases:
        got = evaluate("make_divisible(v, d, m)", {"v": value, "d": divisor, "m": minimum})
        assert got == _make_divisible(value, divisor, minimum), (value, divisor, minimum)
    assert evaluate("make_divisible(c // 4)", {"c": 72}) == 24  # MobileNetV3's 72 -> 24


def test_make_divisible_refuses_a_bad_divisor(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [3]}
        network:
          - linear: {out: "${make_divisible(10, 0)}"}
    """)
    with pytest.raises(SpecError, match="make_divisible needs a positive integer divisor"):
        compile_graph(path)
