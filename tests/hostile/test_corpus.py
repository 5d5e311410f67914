"""The hostile-input corpus: templates, expressions, YAML, numbers, special files and
arguments that once hung nnspec, ate its memory or ended in a traceback.

Each case runs as a command line in a worker process (tests/hostile/worker.py) under a memory
cap, and is killed if it outlives TIME_CAP: a case passes when it exits 2 (or 0 for the
legitimate ones) with a located message that names the problem, and no traceback.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

CASES = Path(__file__).parent / "cases"
ROOT = Path(__file__).parents[2]
# The kill switch for a case that hangs: far beyond what any case takes (they are refused in
# milliseconds), so that a loaded machine never trips it.
TIME_CAP = 60.0
TEMPLATE_LIMITS = "hint: templates and ${...} expressions run under fixed budgets"


class Worker:
    """One warm `nnspec` process; replaced when a case outlives the time cap."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.hostile.worker"], cwd=ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self._answer(TIME_CAP * 2) == {"ready": True}

    def run(self, argv: list[str]) -> tuple[dict, float]:
        if self.process is None or self.process.poll() is not None:
            self.start()
        start = time.monotonic()
        self.process.stdin.write(json.dumps(argv) + "\n")
        self.process.stdin.flush()
        answer = self._answer(TIME_CAP)
        seconds = time.monotonic() - start
        if answer is None:
            self.stop()
            pytest.fail(f"`nnspec {' '.join(argv)}` ran past the {TIME_CAP:g} s cap or died")
        return answer, seconds

    def _answer(self, timeout: float) -> dict | None:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        return json.loads(line) if line else None

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture(scope="module")
def worker():
    worker = Worker()
    yield worker
    worker.stop()


def check_case(worker: Worker, argv: list[str], expected: str, code: int = 2) -> str:
    answer, _ = worker.run(argv)
    output = answer["stdout"] + answer["stderr"]
    assert "Traceback" not in output, output
    assert answer["code"] == code, output
    assert expected in output, output
    assert len(output) < 4000, "a message, not a flood"
    return output


TEMPLATES = [
    ("template_power.yaml.j2", ":2:1: template exceeds the integer size limit"),
    ("template_nested_loops.yaml.j2", ":3:1: template exceeds the steps limit"),
    ("template_string_repeat.yaml.j2", ":3:1: template exceeds the value size limit"),
    ("template_concat_doubling.yaml.j2", ":3:1: template exceeds the value size limit"),
    ("template_output_flood.yaml.j2", ":3:1: template exceeds the output size limit"),
    ("template_format_width.yaml.j2", ":3:1: template exceeds the value size limit"),
    ("template_recursive_macro.yaml.j2", ":1:1: template nests calls too deeply"),
    ("template_unsafe_attribute.yaml.j2", "unsafe operation: access to attribute '__class__'"),
    ("template_include.yaml.j2", "cannot include, import or extend other files"),
]
EXPRESSIONS = [
    ("expression_power.yaml", ":7:15: blocks.stage.layers[0].conv: expression "
                              "${ 7 ** 300000000 } exceeds the integer size limit"),
    ("expression_string.yaml", ":4:15: vars.label: expression ${ 'a' * 3000000000 } exceeds the "
                               "value size limit"),
    ("expression_big_int.yaml", "exceeds the integer size limit: 10 ** 40 would have about 132 "
                                "bits (at most 64)\n"),
    ("expression_range.yaml", "range(1000000000) would hold 1,000,000,000"),
    ("expression_subclasses.yaml", "is not allowed: access to attribute '__class__'"),
]
YAML = [
    ("yaml_billion_laughs.yaml", "the document expands to more than 200000 values"),
    ("yaml_deep_nesting.yaml", "nesting depth"),
    ("yaml_python_tag.yaml", "YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is "
                             "not allowed"),
    ("yaml_huge_int_literal.yaml", "network[1].linear.out: the number 99999999999999999999... "
                                   "is too long (5000 characters)"),
    ("json_huge_number.json", "input.shape[0]: the number 7777"),
    ("yaml_merge_key.yaml", "YAML merge keys (<<) are not supported"),
    ("spec_repeat_bomb.yaml", "the network expands to more than 20000 layers"),
    ("spec_block_recursion.yaml", "block 'a' calls itself (a -> b -> a)"),
]
NUMBERS = [
    ("number_out_1e23.yaml", ":5:17: network[0].conv.out: 100000000000000000000000 is larger "
                             "than a layer can be"),
    ("number_out_2e8.yaml", ":5:5: network[0]: the model has 7.6G parameters, more than the "
                            "budget of 4G"),
    ("number_input_huge.yaml", ":5:5: network[0]: one sample needs about 1.64 TiB"),
    ("number_input_float.yaml", "input.shape[1]: expected a valid integer, got 1e+20"),
    ("number_not_finite.yaml", "network[1].batchnorm.eps: expected a finite number, got inf"),
    ("name_parent_folder.yaml", "name: a spec name cannot be '..'"),
]


@pytest.mark.parametrize(("name", "expected"), TEMPLATES + EXPRESSIONS + YAML + NUMBERS,
                         ids=[case[0] for case in TEMPLATES + EXPRESSIONS + YAML + NUMBERS])
def test_check_refuses_hostile_files_with_a_located_message(worker, name, expected):
    path = CASES / name
    output = check_case(worker, ["check", str(path)], expected)
    assert f"{path}:" in output or f"{path}: invalid" in output
    if name.startswith(("template_power", "template_nested", "expression_power")):
        assert TEMPLATE_LIMITS in output


def test_a_template_that_works_within_its_budget_still_renders(worker):
    check_case(worker, ["check", str(CASES / "template_legit_loop.yaml.j2")],
               "ok (10 layers, output 6)", code=0)


@pytest.mark.parametrize(("command", "name", "expected"), [
    (["summary"], "number_out_1e23.yaml", "is larger than a layer can be"),
    (["resolve"], "expression_power.yaml", "exceeds the integer size limit"),
    (["codegen"], "template_nested_loops.yaml.j2", "exceeds the steps limit"),
    (["lint"], "yaml_python_tag.yaml", "python/object/apply:os.system' is not allowed"),
])
def test_other_commands_refuse_them_too(worker, command, name, expected):
    check_case(worker, [*command, str(CASES / name)], expected)


def test_family_variables_are_checked_like_spec_values(worker, tmp_path):
    out = tmp_path / "new.yaml"
    check_case(worker, ["new", "plain_cnn", "--var", "widths=32,99999999999", "-o", str(out)],
               "99999999999 is larger than a layer can be")
    # jinja2's `int` filter reads a number it cannot convert as 0
    check_case(worker, ["new", "plain_cnn", "--var", "size=" + "9" * 5000, "-o", str(out)],
               "input.shape[1]: expected a positive integer, got 0")
    assert not out.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"),
                    reason="needs POSIX special files")
def test_special_files_are_refused_before_they_are_read(worker, tmp_path):
    zero = tmp_path / "zero.yaml"
    zero.symlink_to("/dev/zero")
    check_case(worker, ["check", str(zero)], "it is a character device, not a regular file")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    check_case(worker, ["check", str(fifo)], "it is a FIFO (named pipe), not a regular file")
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    check_case(worker, ["check", str(folder)], "is a directory, not a spec file")
    sparse = tmp_path / "sparse.yaml"
    with open(sparse, "wb") as handle:
        handle.truncate(5 * 2**30)  # 5 GiB that take no disk
    check_case(worker, ["check", str(sparse)], "it is larger than 4 MiB (5,368,709,120 bytes)")


@pytest.mark.parametrize(("argv", "expected"), [
    (["--set", "description=[&a [1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], "
               "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], "
               "&e [*d,*d,*d,*d,*d,*d,*d,*d,*d], [*e,*e,*e,*e,*e,*e,*e,*e,*e]]"],
     "expands to more than 200000 values"),
    (["--set", "network[0].linear.out=" + "9" * 5000], "is too long (5000 characters)"),
    (["--set", "network[0].linear.out=${ 7 ** 300000000 }"], "exceeds the integer size limit"),
    (["--max-memory", "1e999"], "expected an amount of memory such as 16GiB"),
])
def test_hostile_arguments(worker, tmp_path, argv, expected):
    spec = tmp_path / "spec.yaml"
    spec.write_text("nnspec: 1\nname: t\ninput: {shape: [4]}\nnetwork: [{linear: {out: 2}}]\n")
    check_case(worker, ["check", str(spec), *argv], expected)


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"),
                    reason="needs POSIX special files")
def test_special_files_named_as_data_or_weights_are_refused_unread(worker, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("nnspec: 1\nname: t\ninput: {shape: [4]}\nnetwork: [{linear: {out: 2}}]\n")
    zero = tmp_path / "zero.npz"
    zero.symlink_to("/dev/zero")
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    out = ["--out", str(tmp_path / "run"), "--no-progress"]
    check_case(worker, ["train", str(spec), "--data", str(zero), *out],
               f"data file {zero} is a character device, not a regular file")
    check_case(worker, ["train", str(spec), "--data", str(fifo), *out],
               f"data file {fifo} is a FIFO (named pipe), not a regular file")
    weights = tmp_path / "w.safetensors"
    weights.symlink_to("/dev/zero")
    check_case(worker, ["import-weights", str(spec), str(weights), "-o", str(tmp_path / "o")],
               "is a character device, not a regular file")
