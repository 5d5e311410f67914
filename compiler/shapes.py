"""Shape inference for one node: run the kind's rule and word its failure for people."""

from __future__ import annotations

from nnspec.compiler.graph import Shape
from nnspec.compiler.layers import LayerKind, ShapeError

_INT_INPUT_KINDS = {"embedding", "identity", "select", "reshape", "permute", "flatten"}


def infer_node(layer: LayerKind, config, in_shapes: list[Shape],
               input_dtypes: set[str]) -> tuple[Shape | None, tuple[str, str] | None]:
    """(output shape, None) or (None, (message, hint)) for a layer given its input shapes."""
    if "int64" in input_dtypes and layer.name not in _INT_INPUT_KINDS:
        return None, (f"{layer.name} cannot take the int64 token input directly",
                      "start with an embedding layer")
    try:
        return tuple(int(d) for d in layer.infer_shape(config, in_shapes)), None
    except ShapeError as e:
        message = str(e)
        if not any(str(s) in message for s in in_shapes):
            message += f" (input shape {', '.join(str(s) for s in in_shapes)})"
        return None, (message, e.hint)
    except (ArithmeticError, ValueError) as e:  # e.g. floor(inf) from a huge `scale`
        return None, (f"cannot infer the output shape: {e}",
                      "check the magnitudes of this layer's parameters")
