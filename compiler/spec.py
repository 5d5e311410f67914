"""`load_spec`: any spec source (path, zoo name, dict, Spec) becomes a validated `Spec`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nnspec.compiler.errors import Problem, SpecError
from nnspec.compiler.load import SourceMap, apply_overrides, read_source
from nnspec.compiler.resources import specs_dir
from nnspec.compiler.schema import FORMAT_VERSION, MIGRATIONS, Spec
from nnspec.compiler.suggest import did_you_mean
from nnspec.compiler.task_check import spec_task_problems
from nnspec.compiler.training_check import spec_training_problems
from nnspec.compiler.validation import problems_from_validation

SPEC_SUFFIXES = (".yaml", ".yml", ".json", ".yaml.j2", ".yml.j2", ".json.j2")


def zoo_dir() -> Path:
    """The folder of bundled specs (the repository's `specs/`, installed as package data)."""
    return specs_dir()


def zoo_names() -> list[str]:
    root = zoo_dir()
    names = set()
    for path in root.iterdir():
        for suffix in SPEC_SUFFIXES:
            if path.name.endswith(suffix):
                names.add(path.name[: -len(suffix)])
    return sorted(names)


def find_spec_file(source: str) -> Path:
    """A path as given, or a zoo name (`resnet50`, `examples/tiny_unet`) resolved in specs/."""
    path = Path(source)
    if path.exists():
        if path.is_dir():
            raise SpecError(Problem(f"{source} is a directory, not a spec file"))
        return path
    looks_like_path = any(source.endswith(s) for s in SPEC_SUFFIXES) or "/" in source \
        and Path(source).parent.exists()
    if not looks_like_path:
        for suffix in SPEC_SUFFIXES:
            candidate = zoo_dir() / f"{source}{suffix}"
            if candidate.exists():
                return candidate
    raise SpecError(Problem(
        f"no spec file or zoo model named {source!r}{did_you_mean(source, zoo_names())}",
        hint=f"zoo models: {', '.join(zoo_names()) or 'none'}",
    ))


def load_spec(source: Any, overrides: list[str] | tuple[str, ...] = (),
              variables: dict[str, Any] | None = None) -> Spec:
    """Load and validate a spec; raises SpecError listing every problem with its location.

    Args:
        source: a path (.yaml, .json, .yaml.j2), a zoo name, a dict, or a Spec.
        overrides: `path=value` strings (`optimizer.lr=0.05`, `network[3].conv.out=32`).
        variables: values for a *.yaml.j2 family's template variables.
    """
    if isinstance(source, Spec):
        data, smap = source.to_data(), copy.deepcopy(source.source_map) or SourceMap("<spec>")
    elif isinstance(source, dict):
        data, smap = copy.deepcopy(source), SourceMap("<dict>")
    elif isinstance(source, str | Path):
        data, smap = read_source(find_spec_file(str(source)), variables)
    else:
        raise SpecError(Problem(f"cannot load a spec from a {type(source).__name__}"))
    if not isinstance(data, dict):
        raise SpecError(Problem("a spec must be a mapping at the top level",
                                mark=smap.mark(())))
    if overrides:
        apply_overrides(data, smap, list(overrides))
    data = migrate(data, smap)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as e:
        raise SpecError(problems_from_validation(e, data, (), smap, model=Spec)) from None
    spec._data = data
    spec._source = smap
    problems = spec_task_problems(spec) + spec_training_problems(spec)
    if problems:
        raise SpecError(problems)
    return spec


def migrate(data: dict, smap: SourceMap) -> dict:
    """Bring an older format version up to the current one, one migration at a time."""
    version = data.get("nnspec")
    if version is None:
        raise SpecError(Problem("missing the format version key `nnspec: 1`", mark=smap.mark(()),
                                hint="add `nnspec: 1` as the first line"))
    if isinstance(version, bool) or not isinstance(version, int):
        raise SpecError(Problem(f"format version must be an integer, got {version!r}",
                                path="nnspec", mark=smap.mark(("nnspec",))))
    if version > FORMAT_VERSION:
        raise SpecError(Problem(
            f"format version {version} is newer than this nnspec understands ({FORMAT_VERSION})",
            path="nnspec", mark=smap.mark(("nnspec",)), hint="upgrade nnspec"))
    while version < FORMAT_VERSION:
        if version not in MIGRATIONS:
            raise SpecError(Problem(f"unknown format version {version}", path="nnspec",
                                    mark=smap.mark(("nnspec",))))
        data = MIGRATIONS[version](data)
        version = data["nnspec"]
    return data
