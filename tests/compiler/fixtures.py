"""Small helpers for the compiler tests: write a spec text to a file and load or build it."""

from __future__ import annotations

import textwrap
from pathlib import Path

HEADER = "nnspec: 1\nname: t\n"


def write_spec(tmp_path: Path, body: str, name: str = "spec.yaml", header: bool = True) -> Path:
    path = tmp_path / name
    text = textwrap.dedent(body).lstrip("\n")
    path.write_text((HEADER if header else "") + text)
    return path
