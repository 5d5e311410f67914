"""The compiler's commands through the real console script: exit codes, messages, contracts."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

from nnspec.compiler.layers import kind_names
from nnspec.runtime.cli import main
from tests.compiler.fixtures import write_spec


def nnspec(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI in this process (importing torch once) and capture what it prints."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's own usage errors
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_console_script_runs_as_a_process(tmp_path):
    path = write_spec(tmp_path, "input: {shape: [4]}\nnetwork: [{linear: {out: 0}}]\n")
    result = subprocess.run([sys.executable, "-m", "nnspec.runtime.cli", "check", str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "network[0].linear.out: expected a positive integer, got 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_bad_spec_exits_2_with_location_and_no_traceback(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [3, 8, 8]}
        network:
          - conv: {out: 4, kernel: 3}
          - batchnrom
    """)
    result = nnspec("check", str(path))
    assert result.returncode == 2
    assert f"{path}:6:5: network[1].batchnrom: unknown layer 'batchnrom' " \
           "(did you mean 'batchnorm'?)" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_good_specs_exit_0():
    result = nnspec("check", "specs/digits_cnn.yaml", "specs/examples/tiny_unet.yaml")
    assert result.returncode == 0, result.stderr
    assert "digits_cnn.yaml: ok" in result.stdout


def test_bad_arguments_exit_2():
    assert nnspec("summary").returncode == 2
    result = nnspec("summary", "digits_cnn", "--set", "nonsense")
    assert result.returncode == 2 and "PATH=VALUE" in result.stderr


def test_summary_json_contract():
    result = nnspec("summary", "digits_cnn", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["name"] == "digits_cnn"
    assert summary["input_shape"] == [1, 8, 8] and summary["output_shape"] == [10]
    assert summary["params"] == summary["trainable_params"] == sum(
        layer["params"] for layer in summary["layers"])
    assert summary["macs"] == sum(layer["macs"] for layer in summary["layers"])
    first = summary["layers"][0]
    assert set(first) >= {"id", "kind", "output_shape", "params", "macs"}
    assert first == {**first, "id": "stage1.conv1", "kind": "conv", "output_shape": [32, 8, 8],
                     "params": 32 * 9, "macs": 32 * 64 * 9}


def test_summary_with_override():
    result = nnspec("summary", "digits_cnn", "--json", "--set", "network[5].linear.out=3")
    assert json.loads(result.stdout)["output_shape"] == [3]


def test_layers_lists_the_registry():
    result = nnspec("layers")
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert listed == kind_names()


def test_schema_describes_every_kind(tmp_path):
    result = nnspec("schema")
    schema = json.loads(result.stdout)
    forms = schema["$defs"]["Node"]["anyOf"]
    described = {next(iter(f["required"])) for f in forms if f.get("required")}
    assert set(kind_names()) <= described
    assert schema["properties"]["network"]["items"] == {"$ref": "#/$defs/Node"}


def test_resolve_prints_a_loadable_spec(tmp_path):
    out = tmp_path / "r.yaml"
    assert nnspec("resolve", "specs/examples/inception_net.yaml", "-o", str(out)).returncode == 0
    again = nnspec("summary", str(out), "--json")
    original = nnspec("summary", "specs/examples/inception_net.yaml", "--json")
    assert json.loads(again.stdout)["params"] == json.loads(original.stdout)["params"]


def test_compare_prints_a_row_per_spec():
    result = nnspec("compare", "digits_cnn", "specs/examples/inception_net.yaml", "--json")
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["digits_cnn", "inception_net"]
    assert rows[0]["depth"] == 4  # three convs and one linear
