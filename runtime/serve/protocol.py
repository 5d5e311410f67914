"""KServe v2 inference requests and responses, with Triton's binary tensor data and
classification extensions.

A request body is a JSON object, optionally followed by raw tensor bytes; the
`Inference-Header-Content-Length` header then says where the JSON ends, and each input that
sends bytes says how many in `parameters.binary_data_size`. Responses follow the same layout
for outputs asked for with `binary_data` (or the request-wide `binary_data_output`).
Everything a client can get wrong raises :class:`ApiError` with a 4xx status.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np

from nnspec.runtime.serve.models import NUMPY_DTYPES, ServedModel, TensorMeta

HEADER_LENGTH = "Inference-Header-Content-Length"


class ApiError(Exception):
    """A request the server refuses: an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int = 0  # top-k classes as "value:index[:label]" strings; 0: raw tensor


@dataclass
class InferRequest:
    """A validated request: input arrays by name, the outputs to return, and its row count."""

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput]
    rows: int


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def _load_json(text: bytes) -> dict:
    try:
        payload = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _bad(f"request body is not valid JSON: {error}") from error
    except RecursionError as error:
        raise _bad("request body nests JSON too deeply") from error
    if not isinstance(payload, dict):
        raise _bad("request body must be a JSON object with an 'inputs' list")
    return payload


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _check_shape(meta: TensorMeta, shape: object) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _bad(f"input {meta.name!r}: 'shape' must be a list of non-negative integers")
    fits = len(shape) == len(meta.shape) and all(
        want in (-1, got) for want, got in zip(meta.shape, shape, strict=True)
    )
    if not fits:
        raise _bad(
            f"input {meta.name!r}: shape {_shape_text(shape)} does not fit the model's "
            f"{_shape_text(meta.shape)} (-1: any size)",
        )
    return tuple(shape)


def deserialize_bytes(raw: bytes, where: str) -> list[bytes]:
    """Triton's BYTES layout: each element is a 4-byte little-endian length, then its bytes."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise _bad(f"{where}: BYTES data ends inside an element's length prefix")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise _bad(f"{where}: BYTES element of {size} bytes runs past the end of the data")
        items.append(raw[offset : offset + size])
        offset += size
    return items


def serialize_bytes(array: np.ndarray) -> bytes:
    parts = []
    for item in array.ravel():
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def _array_from_binary(meta: TensorMeta, shape: tuple[int, ...], raw: bytes) -> np.ndarray:
    count = math.prod(shape)
    if meta.datatype == "BYTES":
        items = deserialize_bytes(raw, f"input {meta.name!r}")
        if len(items) != count:
            raise _bad(
                f"input {meta.name!r}: shape {_shape_text(shape)} needs {count} elements, "
                f"got {len(items)}",
            )
        return np.array([i.decode("utf-8", "replace") for i in items], dtype=object).reshape(shape)
    dtype = NUMPY_DTYPES[meta.datatype]
    if len(raw) != count * dtype.itemsize:
        raise _bad(
            f"input {meta.name!r}: shape {_shape_text(shape)} of {meta.datatype} needs "
            f"{count * dtype.itemsize} bytes, binary_data_size says {len(raw)}",
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _array_from_json(meta: TensorMeta, shape: tuple[int, ...], data: object) -> np.ndarray:
    if not isinstance(data, list):
        raise _bad(f"input {meta.name!r}: 'data' must be a JSON list (flat or nested)")
    dtype = NUMPY_DTYPES[meta.datatype]
    try:
        array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise _bad(
            f"input {meta.name!r}: 'data' is not a regular list of {meta.datatype} values "
            f"({error})",
        ) from error
    if array.size != math.prod(shape):
        raise _bad(
            f"input {meta.name!r}: shape {_shape_text(shape)} needs {math.prod(shape)} "
            f"elements, 'data' has {array.size}",
        )
    return array.reshape(shape)


def _parse_input(model: ServedModel, entry: object, binary: memoryview, offset: int):
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise _bad("each entry of 'inputs' must be an object with a 'name'")
    meta = model.input(entry["name"])
    if meta is None:
        known = ", ".join(t.name for t in model.inputs)
        raise _bad(f"model {model.name!r} has no input {entry['name']!r}; its inputs: {known}")
    if entry.get("datatype") == "BYTES" != meta.datatype and model.takes_images(meta.name):
        return _parse_images(model, meta, entry, binary, offset)
    if entry.get("datatype") != meta.datatype:
        raise _bad(
            f"input {meta.name!r}: datatype {entry.get('datatype')!r} does not match the "
            f"model's {meta.datatype}",
        )
    shape = _check_shape(meta, entry.get("shape"))
    parameters = entry.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise _bad(f"input {meta.name!r}: 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in entry:
            raise _bad(f"input {meta.name!r} has neither 'data' nor binary_data_size")
        return meta, _array_from_json(meta, shape, entry["data"]), offset
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _bad(f"input {meta.name!r}: binary_data_size must be a non-negative integer")
    if offset + size > len(binary):
        raise _bad(
            f"input {meta.name!r}: binary_data_size {size} runs past the end of the body "
            f"({len(binary) - offset} bytes left after the JSON header)",
        )
    raw = bytes(binary[offset : offset + size])
    return meta, _array_from_binary(meta, shape, raw), offset + size


def _parse_images(model: ServedModel, meta: TensorMeta, entry: dict, binary: memoryview,
                  offset: int):  # fmt: skip
    """Encoded image files (BYTES, shape [N]: binary, or base64 strings in JSON) for an image
    input, converted by the model's input contract into its tensor."""
    import base64
    import binascii

    shape = entry.get("shape")
    if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int)
            and not isinstance(shape[0], bool) and shape[0] >= 1):  # fmt: skip
        raise _bad(f"input {meta.name!r}: images are sent as BYTES of shape [N], one encoded "
                   "file (PNG, JPEG, ...) per row")  # fmt: skip
    size = (entry.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= \
                len(binary) - offset:
            raise _bad(f"input {meta.name!r}: binary_data_size does not fit the body")
        items = deserialize_bytes(bytes(binary[offset : offset + size]), f"input {meta.name!r}")
        offset += size
    else:
        data = entry.get("data")
        if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
            raise _bad(f"input {meta.name!r}: JSON images are a list of base64 strings")
        try:
            items = [base64.b64decode(d, validate=True) for d in data]
        except (binascii.Error, ValueError) as error:
            raise _bad(f"input {meta.name!r}: not base64 ({error})") from error
    if len(items) != shape[0]:
        raise _bad(f"input {meta.name!r}: shape [{shape[0]}] but {len(items)} images")
    try:
        return meta, model.decode_images(meta.name, items), offset
    except ValueError as error:
        raise _bad(str(error)) from error


def _parse_outputs(model: ServedModel, payload: dict) -> list[RequestedOutput]:
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise _bad("request 'parameters' must be an object")
    binary_default = parameters.get("binary_data_output", False) is True
    entries = payload.get("outputs")
    if entries is None:
        return [RequestedOutput(t.name, binary_default) for t in model.outputs]
    if not isinstance(entries, list):
        raise _bad("'outputs' must be a list of objects with a 'name'")
    outputs = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _bad("each entry of 'outputs' must be an object with a 'name'")
        meta = model.output(entry["name"])
        if meta is None:
            known = ", ".join(t.name for t in model.outputs)
            raise _bad(
                f"model {model.name!r} has no output {entry['name']!r}; its outputs: {known}"
            )
        options = entry.get("parameters") or {}
        if not isinstance(options, dict):
            raise _bad(f"output {meta.name!r}: 'parameters' must be an object")
        binary = options.get("binary_data", binary_default)
        count = options.get("classification", 0)
        if not isinstance(binary, bool):
            raise _bad(f"output {meta.name!r}: binary_data must be true or false")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise _bad(f"output {meta.name!r}: classification must be a non-negative integer")
        if count and meta.datatype == "BYTES":
            raise _bad(f"output {meta.name!r} holds BYTES; classification needs numbers")
        outputs.append(RequestedOutput(meta.name, binary, count))
    return outputs


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
        raise _bad(
            f"{HEADER_LENGTH} is {header_length} but the body has {len(body)} bytes",
        )
    payload = _load_json(body[:header_length])
    binary = memoryview(body)[header_length:]
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _bad("request 'id' must be a string")
    entries = payload.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise _bad("request needs a non-empty 'inputs' list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for entry in entries:
        meta, array, offset = _parse_input(model, entry, binary, offset)
        if meta.name in inputs:
            raise _bad(f"input {meta.name!r} is given twice")
        inputs[meta.name] = array
    if offset != len(binary):
        raise _bad(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims "
            "(check binary_data_size and Inference-Header-Content-Length)",
        )
    missing = [t.name for t in model.inputs if t.name not in inputs]
    if missing:
        raise _bad(f"model {model.name!r} needs input(s) {', '.join(missing)}")
    return InferRequest(request_id, inputs, _parse_outputs(model, payload), _rows(model, inputs))


def _rows(model: ServedModel, inputs: dict[str, np.ndarray]) -> int:
    if not model.batchable:
        return 1
    sizes = {name: array.shape[0] for name, array in inputs.items()}
    if len(set(sizes.values())) > 1:
        raise _bad(f"inputs disagree on the batch size (first dimension): {sizes}")
    rows = next(iter(sizes.values()))
    if rows == 0:
        raise _bad("the batch (first dimension) is empty; send at least one row")
    return rows


def classify(array: np.ndarray, count: int, labels: list[str] | None, batched: bool):
    """Top-`count` entries per row as Triton's "value:index[:label]" strings (BYTES tensor)."""
    rows = array.reshape(array.shape[0], -1) if batched else array.reshape(1, -1)
    count = min(count, rows.shape[1])
    # Stable sort on the negated values: ties keep the lower index first.
    order = np.argsort(-rows, axis=1, kind="stable")[:, :count]
    is_float = np.issubdtype(rows.dtype, np.floating)
    result = np.empty(order.shape, dtype=object)
    for r, c in np.ndindex(order.shape):
        index = int(order[r, c])
        value = rows[r, index]
        text = f"{float(value):f}:{index}" if is_float else f"{int(value)}:{index}"
        if labels and index < len(labels):
            text += f":{labels[index]}"
        result[r, c] = text
    return result if batched else result.reshape(count)


def _json_data(array: np.ndarray, datatype: str) -> list:
    if datatype == "BYTES":
        return [
            item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            for item in array.ravel()
        ]
    return array.ravel().tolist()


def encode_infer_response(
    model: ServedModel, request: InferRequest, results: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary tensors, the JSON header's length."""
    entries, blobs = [], []
    for wanted in request.outputs:
        array = results[wanted.name]
        datatype = model.output(wanted.name).datatype
        if wanted.classification:
            array = classify(array, wanted.classification, model.labels, model.batchable)
            datatype = "BYTES"
        entry = {"name": wanted.name, "datatype": datatype, "shape": list(array.shape)}
        if wanted.binary:
            raw = serialize_bytes(array) if datatype == "BYTES" else array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = _json_data(array, datatype)
        entries.append(entry)
    response = {"model_name": model.name, "model_version": model.version, "outputs": entries}
    if request.id is not None:
        response["id"] = request.id
    header = json.dumps(response, separators=(",", ":")).encode("utf-8")
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
