"""The manual stays true: every `nnspec ...` command line in README.md and docs/ parses with the
real argument parser, the layer catalogue page is what the registry prints, MkDocs builds the
site strictly (no broken link or anchor), and the README starts with its two set-up commands."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from nnspec.runtime.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(\s*)```(\S*)")
INLINE = re.compile(r"`(nnspec [^`]+)`")
#: a command as a module: `python -m nnspec.runtime.cli ARGS`, also under torchrun
AS_MODULE = re.compile(r"-m nnspec\.runtime\.cli\s+(.*)$")
NOT_SHELL = {"yaml", "yml", "json", "python", "py", "toml", "html", "text"}


def _normalise_synopsis(text: str) -> str | None:
    """A synopsis (`[--top-k N]`, `INPUT...`, `best|last`) as one concrete command line:
    optional parts kept, repetition marks dropped, the first of alternatives taken, a
    one-letter placeholder (`N`, `K`) read as 1. None for an elided line (`nnspec sweep ...`)."""
    words = []
    depth = 0
    for word in text.replace("\\|", "|").split():
        if word == "...":
            return None
        while word.startswith("["):
            word, depth = word[1:], depth + 1
        while depth and word.endswith("]"):
            word, depth = word[:-1], depth - 1
        word = word.removesuffix("...")
        if "|" in word and not word.startswith(("'", '"')):
            word = word.split("|")[0]
        words.append("1" if re.fullmatch(r"[A-Z]", word) else word)
    return " ".join(w for w in words if w)


def _command_args(line: str) -> list[str] | None:
    """The arguments after `nnspec` of one shell line, or None when it runs no nnspec command."""
    line = line.strip().removeprefix("$ ")
    module = AS_MODULE.search(line)
    if module:
        line = "nnspec " + module.group(1)
    # the first pipeline/list element that runs nnspec, with env assignments dropped
    for part in re.split(r"\s(?:&&|\|\||;|\|)\s", line):
        try:
            words = shlex.split(part, comments=True)
        except ValueError:
            words = part.split()
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            words = words[1:]
        if words and words[0] == "nnspec" and len(words) > 1:
            words = words[1:]
            cut = next((i for i, w in enumerate(words) if w in (">", ">>", "2>&1", "&")), None)
            return words[:cut]
    return None


def _documented_commands() -> list[tuple[str, list[str]]]:
    """(file:line, args) of every nnspec command line in fenced shell blocks and inline code."""
    found = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        fence = None
        pending = ""
        for number, line in enumerate(lines, 1):
            opening = FENCE.match(line)
            if opening:
                fence = None if fence is not None else opening.group(2).lower()
                pending = ""
                continue
            where = f"{page.relative_to(ROOT)}:{number}"
            if fence is not None and fence not in NOT_SHELL:
                text = pending + line
                if text.rstrip().endswith("\\"):
                    pending = text.rstrip()[:-1] + " "
                    continue
                pending = ""
                text = _normalise_synopsis(text.split("  #")[0])
                args = text and _command_args(text)
                if args:
                    found.append((where, args))
                continue
            for match in INLINE.finditer(line):
                text = _normalise_synopsis(match.group(1))
                args = text and _command_args(text)
                # `nnspec train` alone names a command in prose; with arguments it is a line
                if args and args[0] in COMMANDS and len(args) > 1:
                    found.append((where, args))
    return found


DOCUMENTED = _documented_commands()


def test_the_manual_documents_every_command():
    documented = {args[0] for _, args in DOCUMENTED}
    assert set(COMMANDS) <= documented, sorted(set(COMMANDS) - documented)


@pytest.mark.parametrize(
    "args", [args for _, args in DOCUMENTED], ids=[where for where, _ in DOCUMENTED]
)
def test_documented_command_line_parses(args):
    assert args[0] in COMMANDS, f"`nnspec {args[0]}` is not a command"
    error = io.StringIO()
    try:
        with contextlib.redirect_stderr(error), contextlib.redirect_stdout(io.StringIO()):
            build_parser(args).parse_args(args)
    except SystemExit as exit_:
        assert exit_.code == 0, f"nnspec {shlex.join(args)}\n{error.getvalue()}"


def test_layer_catalogue_page_is_current(capsys):
    from nnspec.runtime.cli import main

    assert main(["layers", "--markdown"]) == 0
    generated = capsys.readouterr().out
    assert (ROOT / "docs" / "layers.md").read_text() == generated, (
        "docs/layers.md is stale: run `nnspec layers --markdown > docs/layers.md`"
    )


def test_mkdocs_builds_the_site_strictly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "training" / "index.html").exists()


def test_mkdocs_refuses_a_broken_link(tmp_path):
    """The strict build is a real check: a page linking to a missing anchor fails it."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [nowhere](other.md#no-such-heading).\n")
    (docs / "other.md").write_text("# Other\n")
    config = (ROOT / "mkdocs.yml").read_text()
    config = re.sub(r"(?ms)^nav:.*?(?=^\S|\Z)", "nav: [index.md, other.md]\n", config)
    (tmp_path / "mkdocs.yml").write_text(config)
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "no-such-heading" in result.stdout + result.stderr


def test_readme_starts_with_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)[:2]
    assert [b.strip() for b in blocks] == [
        "pip install . && nnspec train specs/digits_cnn.yaml",
        'pip install ".[test]" && python -m pytest -q',
    ]
    assert text.index("```bash") < 200  # at the top, before anything else
    assert text.count("\n") <= 320
