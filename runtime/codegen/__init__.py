"""nnspec.runtime.codegen: a spec becomes standalone PyTorch source; families start new specs.

    from nnspec.runtime.codegen import generate_source
    source = generate_source(graph)          # one module of plain torch code

Public API:
    generate_source(graph) -> str, write_source(graph, path)
    register_codegen(kind)                   how a plugin layer kind is written as code
    list_families(), render_family(name, variables), write_family(...)   `nnspec new`
"""

from nnspec.runtime.common.lazy import lazy_exports

_EXPORTS = {
    "generate_source": "generate", "write_source": "generate",
    "register_codegen": "modules",
    "list_families": "families", "get_family": "families", "render_family": "families",
    "write_family": "families",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
