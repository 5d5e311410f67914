"""One mistake gives one problem: what follows from it is counted, not reported again."""

from __future__ import annotations

import pytest

from nnspec.compiler import compile_graph, load_spec
from nnspec.compiler.errors import Problem, SpecError

from .fixtures import write_spec


def problems_of(path, overrides=()) -> SpecError:
    with pytest.raises(SpecError) as info:
        compile_graph(load_spec(path, overrides=list(overrides)))
    return info.value


def test_a_typo_early_in_mobilenet_is_one_problem_and_a_count():
    # network[0] fails, so every later block's `${in_channels * expand}` is unknown
    error = problems_of("examples/mobilenet_v2", ["network[0].conv_bn_relu6.outt=32"])
    assert [p.message for p in error.problems] == [
        "block 'conv_bn_relu6' has no argument 'outt' (did you mean 'out'?)"]
    assert error.follow_on == 33
    assert str(error).endswith("\nand 33 problems that follow from it")
    assert "NoneType" not in str(error) and "got None" not in str(error)


def test_a_typo_inside_a_block_called_many_times_is_reported_once(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [3, 16, 16]}
        blocks:
          unit:
            args: {width: int}
            layers:
              - conv: {out: $widht, kernel: 3, padding: 1}
              - relu
        network:
          - unit: {width: 8}
            repeat: 6
          - global_avg_pool
          - linear: {out: 10}
    """)
    error = problems_of(path)
    assert len(error.problems) == 1
    assert error.problems[0].message == "unknown variable $widht (did you mean 'width'?)"
    assert error.follow_on == 5
    assert "and 5 problems that follow from it" in str(error)


def test_a_failed_variable_and_a_failed_node_id_do_not_cascade(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [3, 16, 16]}
        vars: {width: "${ 10 ** 40 }"}
        network:
          - conv: {out: 0, kernel: 3}
            id: stem
          - conv: {out: $width, kernel: 3}
          - conv: {out: 8, kernel: 3}
            from: stem
          - global_avg_pool
          - linear: {out: 10}
    """)
    error = problems_of(path)
    assert [p.path for p in error.problems] == ["vars.width", "network[0].conv.out"]
    assert error.follow_on == 1  # the layer that uses $width; `from: stem` finds stem
    assert str(error).endswith("2 problems found, and 1 problem that follows from them")


def test_independent_problems_are_all_reported(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [3, 16, 16]}
        network:
          - conv: {out: 0, kernel: 3}
          - conv: {out: 8, kernel: 0}
          - linear: {outt: 10}
    """)
    error = problems_of(path)
    assert len(error.problems) == 3 and error.follow_on == 0
    assert str(error).endswith("3 problems found")


def test_spec_error_wording_of_counts():
    one = Problem("x")
    assert str(SpecError([one], follow_on=1)).endswith("\nand 1 problem that follows from it")
    assert str(SpecError([one, one], follow_on=2)).endswith(
        "2 problems found, and 2 problems that follow from them")
    assert str(SpecError([one])) == "x"
