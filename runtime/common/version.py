"""The installed nnspec version, read from package metadata."""

from __future__ import annotations


def nnspec_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nnspec")
    except PackageNotFoundError:
        return "0+unknown"
