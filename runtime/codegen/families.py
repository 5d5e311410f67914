"""Spec families: `templates/families/*.yaml.j2` rendered into a new, validated spec file.

A family template opens with a jinja comment that documents it::

    {#- One or more lines describing the family.
    vars:
      depth: 18      # layers; choices: 10, 18, 34
      width: 64      # channels of the first stage
    -#}

Each `vars:` line gives a variable, its default and a description; `choices:` in the
description restricts the values. Values stay strings, as `--var` gives them (the template
converts them, e.g. `depth | int`), and the template renders in compiler/load.py's sandbox.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from nnspec.compiler.errors import UsageError
from nnspec.compiler.suggest import did_you_mean

SUFFIX = ".yaml.j2"
_HEADER = re.compile(r"^\{#-?(?P<body>.*?)-?#\}", re.S)
_VAR = re.compile(
    r"^\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*):\s*(?P<default>[^#]*?)\s*(#\s*(?P<doc>.*))?$"
)
_CHOICES = re.compile(r"choices:\s*(?P<values>.+)$")


@dataclass(frozen=True)
class FamilyVar:
    name: str
    default: str
    doc: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    variables: tuple[FamilyVar, ...]
    path: Path

    def defaults(self) -> dict[str, str]:
        return {v.name: v.default for v in self.variables}


def families_dir() -> Path:
    """The folder of family templates (`templates/families`, shipped as package data)."""
    from nnspec.compiler.resources import templates_dir

    folder = templates_dir() / "families"
    if not folder.is_dir():
        raise UsageError("the family templates are missing from this installation of nnspec")
    return folder


def parse_header(text: str, name: str) -> tuple[str, tuple[FamilyVar, ...]]:
    """The description and variables documented in a family's leading jinja comment."""
    match = _HEADER.match(text.lstrip())
    if not match:
        raise UsageError(f"family {name!r} lacks its leading {{# ... vars: ... #}} comment")
    description, variables, in_vars = [], [], False
    for line in match.group("body").splitlines():
        if line.strip() == "vars:":
            in_vars = True
        elif in_vars and (var := _VAR.match(line)):
            doc = (var.group("doc") or "").strip()
            choices = _CHOICES.search(doc)
            values = tuple(v.strip() for v in choices.group("values").split(",")) if choices else ()
            variables.append(FamilyVar(var.group("name"), var.group("default"), doc, values))
        elif not in_vars and line.strip():
            description.append(line.strip())
    return " ".join(description), tuple(variables)


def list_families() -> list[Family]:
    """Every family template, sorted by name."""
    out = []
    for path in sorted(families_dir().glob(f"*{SUFFIX}")):
        name = path.name[: -len(SUFFIX)]
        description, variables = parse_header(path.read_text(encoding="utf-8"), name)
        out.append(Family(name, description, variables, path))
    return out


def get_family(name: str) -> Family:
    families = {f.name: f for f in list_families()}
    if name not in families:
        raise UsageError(
            f"no spec family named {name!r}{did_you_mean(name, families)}; "
            f"families: {', '.join(families)} (see `nnspec new --list`)"
        )
    return families[name]


def resolve_variables(family: Family, given: dict[str, str]) -> dict[str, str]:
    """The family's defaults updated with `given`; unknown names and bad choices refused."""
    declared = family.defaults()
    problems = []
    for name, value in given.items():
        var = next((v for v in family.variables if v.name == name), None)
        if var is None:
            problems.append(
                f"family {family.name!r} has no variable {name!r}"
                f"{did_you_mean(name, declared)}; its variables: {', '.join(declared)}"
            )
        elif var.choices and value not in var.choices:
            problems.append(f"--var {name}={value}: choose one of {', '.join(var.choices)}")
    if problems:
        raise UsageError("; ".join(problems))
    return {**declared, **given}


def render_family(name: str, given: dict[str, str]) -> str:
    """Render family `name` with `given` variables and check the result compiles.

    Returns:
        The spec text (YAML), validated by `load_spec` and shape-checked by `compile_graph`.
    Raises:
        UsageError: unknown family, unknown variable or a value outside its choices.
        SpecError: the rendered spec is invalid (locations refer to the rendered text).
    """
    from nnspec.compiler import compile_graph, load_spec
    from nnspec.compiler.load import render_template

    family = get_family(name)
    variables = resolve_variables(family, given)
    compile_graph(load_spec(family.path, variables=variables))
    text = render_template(family.path.read_text(encoding="utf-8"), str(family.path), variables)
    header = (
        f"# Started with `nnspec new {name}"
        + "".join(f" --var {k}={v}" for k, v in given.items())
        + "`: edit freely.\n"
    )
    return header + text.lstrip("\n")


def write_family(name: str, given: dict[str, str], output: Path, force: bool = False) -> str:
    """Render family `name` into `output` (refused if it exists, unless `force`)."""
    if output.exists() and not force:
        raise UsageError(f"{output} already exists; pass --force to overwrite it")
    text = render_family(name, given)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    return text
