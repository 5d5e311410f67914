"""KServe v2 REST inference requests and responses, with Triton's binary tensor data
extension.

A request body is a JSON object, optionally followed by raw tensor bytes; the
`Inference-Header-Content-Length` header then says where the JSON ends, and each input that
sends bytes says how many in `parameters.binary_data_size`. Responses follow the same layout
for outputs asked for with `binary_data` (or the request-wide `binary_data_output`).
Everything a client can get wrong raises :class:`ApiError` with a 4xx status; the checks
themselves are shared with gRPC (`inference.py`).

Non-finite floating-point outputs (NaN, +-Infinity) are written as the JSON strings "NaN",
"Infinity" and "-Infinity": JSON has no literal for them, and the bare tokens Triton writes
(rapidjson's kWriteNanAndInfFlag) are rejected by strict parsers such as JavaScript's
JSON.parse. tritonclient and KServe's SDK turn the strings back into floats (numpy parses
them when it builds the output array), as does JavaScript's Number().
"""

from __future__ import annotations

import json
import math

import numpy as np

from nnspec.runtime.serve.inference import (
    InferRequest,
    OutputTensor,
    RequestedOutput,
    array_from_raw,
    array_from_values,
    bad_request,
    build_request,
    check_input,
    requested_output,
    serialize_bytes,
)
from nnspec.runtime.serve.models import ServedModel

HEADER_LENGTH = "Inference-Header-Content-Length"
NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _load_json(text: bytes) -> dict:
    try:
        payload = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise bad_request(f"request body is not valid JSON: {error}") from error
    except RecursionError as error:
        raise bad_request("request body nests JSON too deeply") from error
    if not isinstance(payload, dict):
        raise bad_request("request body must be a JSON object with an 'inputs' list")
    return payload


def _parse_input(model: ServedModel, entry: object, binary: memoryview, offset: int):
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise bad_request("each entry of 'inputs' must be an object with a 'name'")
    meta, shape = check_input(model, entry["name"], entry.get("datatype"), entry.get("shape"))
    parameters = entry.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise bad_request(f"input {meta.name!r}: 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in entry:
            raise bad_request(f"input {meta.name!r} has neither 'data' nor binary_data_size")
        if not isinstance(entry["data"], list):
            raise bad_request(f"input {meta.name!r}: 'data' must be a JSON list (flat or nested)")
        return meta, array_from_values(meta, shape, entry["data"]), offset
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise bad_request(f"input {meta.name!r}: binary_data_size must be a non-negative integer")
    if offset + size > len(binary):
        raise bad_request(
            f"input {meta.name!r}: binary_data_size {size} runs past the end of the body "
            f"({len(binary) - offset} bytes left after the JSON header)",
        )
    raw = bytes(binary[offset : offset + size])
    return meta, array_from_raw(meta, shape, raw), offset + size


def _parse_outputs(model: ServedModel, payload: dict) -> tuple[list[RequestedOutput], bool]:
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise bad_request("request 'parameters' must be an object")
    binary_default = parameters.get("binary_data_output", False) is True
    entries = payload.get("outputs")
    if entries is None:
        return [], binary_default
    if not isinstance(entries, list):
        raise bad_request("'outputs' must be a list of objects with a 'name'")
    outputs = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise bad_request("each entry of 'outputs' must be an object with a 'name'")
        options = entry.get("parameters") or {}
        if not isinstance(options, dict):
            raise bad_request(f"output {entry['name']!r}: 'parameters' must be an object")
        outputs.append(
            requested_output(
                model,
                entry["name"],
                binary=options.get("binary_data", binary_default),
                classification=options.get("classification", 0),
            )
        )
    return outputs, binary_default


def parse_infer_request(model: ServedModel, body: bytes, header_length: int | None):
    """Validate a request body against `model`; returns an :class:`InferRequest`.

    Args:
        model: the model the request is for.
        body: the whole (decompressed) request body.
        header_length: the `Inference-Header-Content-Length` value, or None when the body is
            all JSON.

    Raises:
        ApiError: 400 with a message naming what is wrong.
    """
    if header_length is None:
        header_length = len(body)
    elif not 0 < header_length <= len(body):
        raise bad_request(f"{HEADER_LENGTH} is {header_length} but the body has {len(body)} bytes")
    payload = _load_json(body[:header_length])
    binary = memoryview(body)[header_length:]
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad_request("request 'id' must be a string")
    entries = payload.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise bad_request("request needs a non-empty 'inputs' list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for entry in entries:
        meta, array, offset = _parse_input(model, entry, binary, offset)
        if meta.name in inputs:
            raise bad_request(f"input {meta.name!r} is given twice")
        inputs[meta.name] = array
    if offset != len(binary):
        raise bad_request(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims "
            "(check binary_data_size and Inference-Header-Content-Length)",
        )
    outputs, binary_default = _parse_outputs(model, payload)
    return build_request(model, request_id, inputs, outputs, binary_default=binary_default)


def json_data(array: np.ndarray, datatype: str) -> list:
    """The tensor's elements, flattened, as JSON-encodable values (see the module doc)."""
    if datatype == "BYTES":
        return [
            item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            for item in array.ravel()
        ]
    values = array.ravel().tolist()
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        values = [v if math.isfinite(v) else NON_FINITE.get(v, "NaN") for v in values]
    return values


def encode_infer_response(
    model: ServedModel, request: InferRequest, outputs: list[OutputTensor]
) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary tensors, the JSON header's length."""
    entries, blobs = [], []
    for output in outputs:
        array = output.array
        entry = {"name": output.name, "datatype": output.datatype, "shape": list(array.shape)}
        if output.binary:
            if output.datatype == "BYTES":
                raw = serialize_bytes(array)
            else:
                raw = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = json_data(array, output.datatype)
        entries.append(entry)
    response = {"model_name": model.name, "model_version": model.version, "outputs": entries}
    if request.id is not None:
        response["id"] = request.id
    # allow_nan=False: a non-finite float that slipped through is a bug, not invalid JSON.
    header = json.dumps(response, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
