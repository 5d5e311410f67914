"""Loading: marks, YAML quirks, hostile files, templates, overrides."""

from __future__ import annotations

import json

import pytest

from nnspec.compiler import SpecError, build_model, load_spec
from nnspec.compiler.load import MAX_FILE_BYTES
from tests.compiler.fixtures import write_spec

SMALL = """
input: {shape: [3, 8, 8]}
network:
  - conv: {out: 4, kernel: 3}
  - global_avg_pool
  - linear: {out: 2}
optimizer: {type: sgd, lr: 1e-2}
"""


def test_exponent_without_dot_is_a_number(tmp_path):
    spec = load_spec(write_spec(tmp_path, SMALL))
    assert spec.optimizer.lr == pytest.approx(0.01)


def test_json_specs_load_like_yaml(tmp_path):
    data = {"nnspec": 1, "name": "j", "input": {"shape": [4]},
            "network": [{"linear": {"out": 3}}]}
    path = tmp_path / "model.json"
    path.write_text(json.dumps(data))
    model = build_model(path)
    assert model.linear1.weight.shape == (3, 4)


def test_error_points_at_line_and_column(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [3, 8, 8]}
        network:
          - conv: {out: 4, kernel: 0}
    """)
    with pytest.raises(SpecError) as info:
        load_spec_and_build(path)
    # line 5 of the file (2 header lines), the value 0 sits at column 28
    assert f"{path}:5:28: network[0].conv.kernel" in str(info.value)


def load_spec_and_build(path):
    return build_model(path)


def test_duplicate_keys_are_refused(tmp_path):
    path = write_spec(tmp_path, "input: {shape: [3]}\ninput: {shape: [4]}\nnetwork: [relu]\n")
    with pytest.raises(SpecError, match="duplicate key 'input'"):
        load_spec(path)


def test_alias_bomb_ends_quickly_with_an_error(tmp_path):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nnnspec: 1\n")
    # the value budget stops expansion long before 10^10 values (no timing assertion: flaky)
    with pytest.raises(SpecError, match="expands to more than"):
        load_spec(path)


def test_very_deep_nesting_is_an_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("nnspec: 1\nname: x\nnetwork: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SpecError, match="nesting"):
        load_spec(path)


def test_huge_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("# " + "x" * MAX_FILE_BYTES + "\n")
    with pytest.raises(SpecError, match="larger than"):
        load_spec(path)


def test_python_tags_never_construct_objects(tmp_path):
    marker = tmp_path / "pwned"
    path = write_spec(tmp_path, f"""
        input: !!python/object/apply:os.system ["touch {marker}"]
        network: [relu]
    """)
    with pytest.raises(SpecError, match="tag .* is not allowed"):
        load_spec(path)
    assert not marker.exists()


def test_template_family_renders_with_variables(tmp_path):
    path = tmp_path / "mlp.yaml.j2"
    path.write_text(
        "nnspec: 1\nname: mlp{{ width }}\ninput: {shape: [8]}\nnetwork:\n"
        "{% for i in range(depth|int) %}  - linear: {out: {{ width }}}\n  - relu\n{% endfor %}"
        "  - linear: {out: 2}\n"
    )
    model = build_model(path, variables={"width": "16", "depth": "3"})
    assert model.graph.name == "mlp16"
    assert [n.kind for n in model.graph.nodes].count("linear") == 4


def test_template_missing_variable_names_line(tmp_path):
    path = tmp_path / "f.yaml.j2"
    path.write_text("nnspec: 1\nname: f\n\nwidth: {{ width }}\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert f"{path}:4:" in str(info.value) and "width" in str(info.value)


def test_template_sandbox_blocks_attribute_escapes(tmp_path):
    path = tmp_path / "evil.yaml.j2"
    path.write_text("nnspec: 1\nname: \"{{ ''.__class__.__mro__[1].__subclasses__() }}\"\n")
    with pytest.raises(SpecError, match="unsafe|template"):
        load_spec(path)


def test_override_changes_the_model(tmp_path):
    path = write_spec(tmp_path, SMALL)
    model = build_model(path, overrides=["network[0].conv.out=7", "optimizer.lr=0.5"])
    assert model.conv1.weight.shape[0] == 7
    assert model.spec.optimizer.lr == 0.5


def test_override_of_missing_path_is_an_error(tmp_path):
    path = write_spec(tmp_path, SMALL)
    with pytest.raises(SpecError, match="index 9 is out of range: network has 3 items"):
        load_spec(path, overrides=["network[9].conv.out=7"])
    with pytest.raises(SpecError, match=r"unknown key 'optimiser' \(did you mean 'optimizer'"):
        load_spec(path, overrides=["optimiser.lr=1"])


def test_override_creates_an_absent_section(tmp_path):
    path = write_spec(tmp_path, SMALL)
    spec = load_spec(path, overrides=["loss.label_smoothing=0.2"])
    assert spec.loss.label_smoothing == 0.2


def test_override_is_type_checked_and_located(tmp_path):
    path = write_spec(tmp_path, SMALL)
    with pytest.raises(SpecError) as info:
        build_model(path, overrides=["network[0].conv.out=many"])
    text = str(info.value)
    assert "--set network[0].conv.out=many" in text and "network[0].conv.out" in text


def test_zoo_names_resolve_without_a_path():
    spec = load_spec("digits_cnn")
    assert spec.name == "digits_cnn"
    with pytest.raises(SpecError, match="did you mean 'digits_cnn'"):
        load_spec("digits_cnm")
