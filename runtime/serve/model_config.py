"""Triton's model configuration of a served model version, for Triton-minded tools.

REST returns its JSON form (`GET /v2/models/NAME/config`); gRPC the same content as a
`ModelConfig` message (the ModelConfig RPC). Both are built from the one dict here.
"""

from __future__ import annotations

from nnspec.runtime.serve.loaded_version import LoadedVersion
from nnspec.runtime.serve.repository import VersionPolicy

# Triton's model configuration names for KServe datatypes (BYTES is TYPE_STRING there).
TRITON_TYPES = {"BYTES": "TYPE_STRING"}


def model_config(loaded: LoadedVersion, policy: VersionPolicy | None) -> dict:
    """The Triton model configuration (JSON form) of one served version."""
    model = loaded.model
    batched = model.batchable

    def tensor(meta):
        dims = list(meta.shape[1:] if batched else meta.shape)
        data_type = TRITON_TYPES.get(meta.datatype, f"TYPE_{meta.datatype}")
        return {"name": meta.name, "data_type": data_type, "dims": dims}

    config = {
        "name": model.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": (policy or VersionPolicy()).as_config(),
        "max_batch_size": model.max_batch_size if batched else 0,
        "input": [tensor(t) for t in model.inputs],
        "output": [tensor(t) for t in model.outputs],
        "instance_group": [
            {"name": model.name, "count": loaded.instances, "kind": _instance_kind(model)}
        ],
        "parameters": {k: {"string_value": v} for k, v in sorted(model.properties.items())},
    }
    if batched and model.max_batch_size > 1:
        delay_us = int(loaded.max_queue_delay_ms * 1000)
        config["dynamic_batching"] = {"max_queue_delay_microseconds": delay_us}
    return config


def _instance_kind(model) -> str:
    return "KIND_CPU" if model.provider == "CPUExecutionProvider" else "KIND_GPU"


def model_config_message(config: dict):
    """The same configuration as a gRPC `ModelConfig` message."""
    from google.protobuf import json_format

    from nnspec.runtime.serve.grpc_messages import ModelConfig

    return json_format.ParseDict(config, ModelConfig())
