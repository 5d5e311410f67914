"""Helpers shared by several runtime stages; it imports nothing but the compiler."""

from nnspec.runtime.common.lazy import lazy_exports
from nnspec.runtime.common.version import nnspec_version

__all__ = ["lazy_exports", "nnspec_version"]
