"""The tree reads as the pipeline: imports point one way (import-linter), every stage's front
door resolves its public names, and no module grows past ~400 lines without saying why."""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["compiler", "runtime.train", "runtime.export", "runtime.serve", "runtime.codegen",
          "runtime.lab", "runtime.common"]  # fmt: skip
MAX_LINES = 420
SIZE_NOTE = "Size:"  # a docstring paragraph starting so says why a module is longer


def _lint_imports(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("lint-imports")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "importlinter.cli"]
    return subprocess.run(
        [*command, str(cwd / "pyproject.toml"), "--no-cache"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_import_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_wrong_way_import_fails_with_its_line(tmp_path):
    """A copy of the tree in which training imports the server breaks the contract, and
    import-linter names the importing module and the line."""
    package = tmp_path / "nnspec"  # a namespace package, as installed
    for name in ("compiler", "runtime"):
        shutil.copytree(ROOT / name, package / name,
                        ignore=shutil.ignore_patterns("__pycache__", "assets"))  # fmt: skip
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    trainer = package / "runtime" / "train" / "trainer.py"
    lines = trainer.read_text().splitlines()
    lines.append("from nnspec.runtime.serve import app  # the wrong way")
    trainer.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = _lint_imports(tmp_path, env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout
    assert f"nnspec.runtime.train.trainer -> nnspec.runtime.serve.app (l.{len(lines)})" in \
        result.stdout


@pytest.mark.parametrize("stage", STAGES)
def test_every_public_name_of_a_stage_resolves(stage):
    module = importlib.import_module(f"nnspec.{stage}")
    assert module.__doc__ and module.__all__
    for name in module.__all__:
        assert getattr(module, name) is not None, f"nnspec.{stage}.{name}"


def test_the_documented_python_api_imports():
    from nnspec.compiler import build_model, compile_graph, load_spec  # noqa: F401
    from nnspec.runtime.codegen import generate_source  # noqa: F401
    from nnspec.runtime.export import export_onnx  # noqa: F401
    from nnspec.runtime.lab import lint, run_sweep  # noqa: F401
    from nnspec.runtime.serve import create_app, predict  # noqa: F401
    from nnspec.runtime.train import TrainOptions, evaluate_run, load_trained_model, train

    assert callable(train) and callable(evaluate_run) and callable(load_trained_model)
    assert "epochs" in TrainOptions.__dataclass_fields__


def test_serve_and_the_cli_start_without_torch():
    code = ("import sys, nnspec.runtime.serve.models, nnspec.runtime.export.metadata, "
            "nnspec.runtime.serve.server, nnspec.runtime.serve.grpc_server, "
            "nnspec.runtime.serve.workers, nnspec.runtime.cli; print('torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _long_modules_without_a_reason() -> list[str]:
    offenders = []
    for path in sorted([*ROOT.glob("compiler/**/*.py"), *ROOT.glob("runtime/**/*.py")]):
        text = path.read_text()
        if text.count("\n") <= MAX_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if not any(p.startswith(SIZE_NOTE) for p in docstring.split("\n\n")):
            offenders.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    return offenders


def test_no_module_is_long_without_saying_why():
    assert _long_modules_without_a_reason() == []


def test_every_package_ships_in_the_wheel():
    """pyproject.toml lists packages by hand (its package-dir maps three top-level folders into
    `nnspec`): a sub-package left out would be missing from a non-editable install."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])  # fmt: skip
    found = {
        "nnspec." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("compiler", "runtime")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, sorted(found - listed)
