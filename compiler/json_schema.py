"""JSON Schema of the spec format, for editors (yaml-language-server) and other tools.

The top level comes from the pydantic models; network nodes are described per layer kind from
the registry, so a plugin's kinds appear too. Block calls cannot be known in advance, so any
other one-key mapping is allowed (nnspec itself checks them).
"""

from __future__ import annotations

import copy
from typing import Any

from nnspec.compiler.layers import all_kinds
from nnspec.compiler.schema import Spec

_META = {
    "id": {"type": "string", "description": "module name within the current scope"},
    "repeat": {"type": "integer", "minimum": 1, "description": "unroll N copies in sequence"},
    "from": {"description": "input node id(s)",
             "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "init": {"description": "per-node init override"},
    "when": {"description": "keep the node only if true (in blocks: ${expression})"},
}


def _layer_schema(name: str, config_schema: dict, defs: dict) -> dict:
    schema = copy.deepcopy(config_schema)
    defs.update(schema.pop("$defs", {}))
    schema.get("properties", {}).pop("type", None)
    if "required" in schema:
        schema["required"] = [r for r in schema["required"] if r != "type"]
    params = {"anyOf": [schema, {"type": "null"}]}
    return {
        "type": "object",
        "properties": {name: params, **_META},
        "required": [name],
        "additionalProperties": False,
    }


def spec_json_schema() -> dict[str, Any]:
    schema = Spec.model_json_schema(by_alias=True)
    defs = schema.setdefault("$defs", {})
    kinds = all_kinds()
    node_forms: list[dict] = [{"type": "string", "enum": sorted(kinds),
                               "description": "a layer without parameters"}]
    for name, kind in sorted(kinds.items()):
        config = kind.Config.model_json_schema()
        form = _layer_schema(name, config, defs)
        form["description"] = kind.summary
        node_forms.append(form)
    structural = {
        "sequence": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
        "residual": {"type": "object", "properties": {
            "body": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
            "shortcut": {"anyOf": [{"enum": ["auto", "identity", "none_if_mismatch"]},
                                   {"type": "array", "items": {"$ref": "#/$defs/Node"}}]},
            "post": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
            "required": ["body"], "additionalProperties": False},
        "branches": {"type": "object", "properties": {
            "merge": {"enum": ["concat", "add", "multiply"]}, "dim": {"type": "integer"},
            "paths": {"type": "array", "items": {"type": "array",
                                                 "items": {"$ref": "#/$defs/Node"}}}},
            "required": ["paths"], "additionalProperties": False},
    }
    for name, body in structural.items():
        node_forms.append({"type": "object", "properties": {name: body, **_META},
                           "required": [name], "additionalProperties": False})
    node_forms.append({"type": "object", "minProperties": 1,
                       "description": "a call of a block defined under `blocks`"})
    node_forms.append({"type": "array", "items": {"$ref": "#/$defs/Node"}})
    defs["Node"] = {"anyOf": node_forms}
    schema["properties"]["network"]["items"] = {"$ref": "#/$defs/Node"}
    schema["title"] = "nnspec spec (format version 1)"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
