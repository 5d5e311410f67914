"""Where the bundled specs/ and templates/ folders are, installed or in a checkout.

Both ship beside the `compiler/` package: in a checkout (editable install) they are the
repository's top-level folders; in a wheel they are `nnspec/specs` and `nnspec/templates`,
again siblings of `nnspec/compiler`. One rule finds both without importlib.resources, which
cannot open data-only namespace packages through an editable install's finder.
"""

from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def specs_dir() -> Path:
    return _ROOT / "specs"


def templates_dir() -> Path:
    return _ROOT / "templates"
