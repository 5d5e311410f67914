"""The `nnspec.*` metadata an exported ONNX model carries, read back by predict and serve.

Kept apart from export.py so that readers (the server, predict) need neither torch nor the
exporter.
"""

from __future__ import annotations

import json

LABELS = "nnspec.labels"


def labels_from_metadata(props: dict[str, str]) -> list[str] | None:
    """Class labels from a model's metadata_props; None when the model has none.

    Raises:
        ValueError: the entry is there but is not a JSON list.
    """
    raw = props.get(LABELS)
    if raw is None:
        return None
    try:
        labels = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"metadata {LABELS} is not JSON ({error})") from error
    if not isinstance(labels, list):
        raise ValueError(f"metadata {LABELS} should be a JSON list of class names")
    return [str(label) for label in labels]
