"""Output paths built from a name that a spec or a user chose (a spec's `name` in `runs/NAME`
or a Triton repository, a sweep point's run folder): exactly one path component, so that what
is written stays inside its folder. `name: ".."` must not write into the parent directory."""

from __future__ import annotations

import os
from pathlib import Path

from nnspec.compiler.errors import UsageError


def path_component_problem(name: str) -> str | None:
    """Why `name` cannot be one file or folder name inside another folder, or None."""
    if not name:
        return "it is empty"
    if name in (".", ".."):
        return f"{name!r} names the folder itself or its parent"
    separators = {"/", "\\", os.sep, os.altsep or "/"}
    if any(sep in name for sep in separators):
        return "it contains a path separator"
    if "\0" in name:
        return "it contains a NUL character"
    return None


def child_path(folder: str | Path, name: str, what: str) -> Path:
    """`folder / name`, refused unless `name` is one plain path component.

    Raises:
        UsageError: `name` is empty, `.`, `..`, or holds a separator.
    """
    problem = path_component_problem(name)
    if problem:
        raise UsageError(f"{what} {name!r} cannot name a folder inside {folder}: {problem}\n"
                         "    hint: use letters, digits, '_', '-' and '.'")
    return Path(folder) / name
