"""The one inference path that REST and gRPC share.

Each transport decodes its wire format into an :class:`InferRequest` with the helpers here
(so both validate names, datatypes, shapes and element counts the same way and say the same
thing when they refuse), hands it to :func:`run_inference` (the model's dynamic batcher, then
the requested outputs), and encodes the :class:`OutputTensor` list it gets back. A refusal is
an :class:`ApiError` carrying the HTTP status; the gRPC server maps it to a status code.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from dataclasses import dataclass

import numpy as np

from nnspec.runtime.common.version import nnspec_version
from nnspec.runtime.serve.batching import QueueFull
from nnspec.runtime.serve.models import NUMPY_DTYPES, ServedModel, TensorMeta

EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "model_repository"]


def server_metadata() -> dict:
    """The v2 server metadata: name, version and the protocol extensions served."""
    return {"name": "nnspec", "version": nnspec_version(), "extensions": EXTENSIONS}


class ApiError(Exception):
    """A request the server refuses: an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool = False  # REST only: return the tensor as raw bytes after the JSON header
    classification: int = 0  # top-k classes as "value:index[:label]" strings; 0: raw tensor


@dataclass
class InferRequest:
    """A validated request: input arrays by name, the outputs to return, and its row count."""

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput]
    rows: int


@dataclass(frozen=True)
class OutputTensor:
    """One output of a response, as the transports encode it."""

    name: str
    datatype: str
    array: np.ndarray
    binary: bool = False


def shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_input(model: ServedModel, name: str, datatype: object, shape: object):
    """The model's input `name` and the request's shape for it, once both fit the model.

    Returns:
        (TensorMeta, shape tuple).

    Raises:
        ApiError: 400 naming the input and what does not fit.
    """
    meta = model.input(name)
    if meta is None:
        known = ", ".join(t.name for t in model.inputs)
        raise bad_request(f"model {model.name!r} has no input {name!r}; its inputs: {known}")
    if datatype == "BYTES" != meta.datatype and model.image_input(name) is not None:
        meta = model.image_input(name)  # encoded image files, one per row (shape [N])
    if datatype != meta.datatype:
        raise bad_request(
            f"input {name!r}: datatype {datatype!r} does not match the model's {meta.datatype}"
        )
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise bad_request(f"input {name!r}: 'shape' must be a list of non-negative integers")
    fits = len(shape) == len(meta.shape) and all(
        want in (-1, got) for want, got in zip(meta.shape, shape, strict=True)
    )
    if not fits:
        raise bad_request(
            f"input {name!r}: shape {shape_text(shape)} does not fit the model's "
            f"{shape_text(meta.shape)} (-1: any size)",
        )
    return meta, tuple(shape)


def deserialize_bytes(raw: bytes | memoryview, where: str) -> list[bytes]:
    """Triton's BYTES layout: each element is a 4-byte little-endian length, then its bytes."""
    items, offset = [], 0
    raw = bytes(raw)
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise bad_request(f"{where}: BYTES data ends inside an element's length prefix")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise bad_request(
                f"{where}: BYTES element of {size} bytes runs past the end of the data"
            )
        items.append(raw[offset : offset + size])
        offset += size
    return items


def serialize_bytes(array: np.ndarray) -> bytes:
    parts = []
    for item in array.ravel():
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def array_from_raw(meta: TensorMeta, shape: tuple[int, ...], raw: bytes | memoryview):
    """An input from its raw little-endian bytes (REST binary data, gRPC raw contents)."""
    count = math.prod(shape)
    if meta.datatype == "BYTES":
        items = deserialize_bytes(raw, f"input {meta.name!r}")
        if len(items) != count:
            raise bad_request(
                f"input {meta.name!r}: shape {shape_text(shape)} needs {count} elements, "
                f"got {len(items)}",
            )
        if meta.encoded_images:  # files stay bytes; build_request decodes them
            return _objects(items).reshape(shape)
        return np.array([i.decode("utf-8", "replace") for i in items], dtype=object).reshape(shape)
    dtype = NUMPY_DTYPES[meta.datatype]
    if len(raw) != count * dtype.itemsize:
        raise bad_request(
            f"input {meta.name!r}: shape {shape_text(shape)} of {meta.datatype} needs "
            f"{count * dtype.itemsize} bytes, got {len(raw)}",
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def array_from_values(meta: TensorMeta, shape: tuple[int, ...], values: object) -> np.ndarray:
    """An input from a list of element values (REST JSON data, gRPC typed contents).

    Floating-point inputs also take "NaN", "Infinity" and "-Infinity" strings, the form the
    server writes non-finite outputs in.
    """
    dtype = NUMPY_DTYPES[meta.datatype]
    try:
        if meta.encoded_images:  # bytes (gRPC) or base64 text (JSON); build_request decodes
            array = _objects(list(_flatten(values)))
        elif meta.datatype == "BYTES":
            array = np.array([_text(v) for v in _flatten(values)], dtype=object)
        else:
            array = np.asarray(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise bad_request(
            f"input {meta.name!r}: 'data' is not a regular list of {meta.datatype} values "
            f"({error})",
        ) from error
    if array.size != math.prod(shape):
        raise bad_request(
            f"input {meta.name!r}: shape {shape_text(shape)} needs {math.prod(shape)} "
            f"elements, 'data' has {array.size}",
        )
    return array.reshape(shape)


def _objects(items: list) -> np.ndarray:
    """A 1-D object array of `items` as they are (bytes stay bytes, never split)."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _flatten(values: object):
    if isinstance(values, list | tuple):
        for value in values:
            yield from _flatten(value)
    else:
        yield values


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    raise TypeError(f"{value!r} is not a string")


def requested_output(
    model: ServedModel, name: object, *, binary: object = False, classification: object = 0
) -> RequestedOutput:
    """A validated entry of the request's output list."""
    if not isinstance(name, str) or model.output(name) is None:
        known = ", ".join(t.name for t in model.outputs)
        raise bad_request(f"model {model.name!r} has no output {name!r}; its outputs: {known}")
    if not isinstance(binary, bool):
        raise bad_request(f"output {name!r}: binary_data must be true or false")
    if (
        not isinstance(classification, int)
        or isinstance(classification, bool)
        or classification < 0
    ):
        raise bad_request(f"output {name!r}: classification must be a non-negative integer")
    if classification and model.output(name).datatype == "BYTES":
        raise bad_request(f"output {name!r} holds BYTES; classification needs numbers")
    return RequestedOutput(name, binary, classification)


def build_request(
    model: ServedModel,
    request_id: str | None,
    inputs: dict[str, np.ndarray],
    outputs: list[RequestedOutput] | None,
    *,
    binary_default: bool = False,
) -> InferRequest:
    """The request once every input is decoded: all inputs there, one batch size.

    `outputs` None (or empty) asks for every output of the model.
    """
    missing = [t.name for t in model.inputs if t.name not in inputs]
    if missing:
        raise bad_request(f"model {model.name!r} needs input(s) {', '.join(missing)}")
    inputs = {name: _decoded_images(model, name, array) for name, array in inputs.items()}
    problem = model.input_problem(inputs)  # the input contract: range, finite values
    if problem is not None:
        raise bad_request(problem)
    if not outputs:
        outputs = [RequestedOutput(t.name, binary_default) for t in model.outputs]
    return InferRequest(request_id, inputs, outputs, _rows(model, inputs))


def _decoded_images(model: ServedModel, name: str, array: np.ndarray) -> np.ndarray:
    """Encoded image files sent for an image input, as the input's tensor (else `array`)."""
    if array.dtype != object or model.input(name).datatype == "BYTES":
        return array
    items = []
    for item in array.ravel():
        if isinstance(item, str):  # JSON carries files as base64 text
            try:
                item = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError) as error:
                raise bad_request(f"input {name!r}: an image in JSON is base64 ({error})") from error
        items.append(bytes(item))
    try:
        return model.decode_images(name, items)
    except ValueError as error:
        raise bad_request(str(error)) from error


def _rows(model: ServedModel, inputs: dict[str, np.ndarray]) -> int:
    if not model.batchable:
        return 1
    sizes = {name: array.shape[0] for name, array in inputs.items()}
    if len(set(sizes.values())) > 1:
        raise bad_request(f"inputs disagree on the batch size (first dimension): {sizes}")
    rows = next(iter(sizes.values()))
    if rows == 0:
        raise bad_request("the batch (first dimension) is empty; send at least one row")
    return rows


def model_error(error: Exception) -> ApiError:
    """A failed model call: onnxruntime's InvalidArgument means the input did not suit it."""
    if type(error).__name__ == "InvalidArgument":
        return ApiError(400, f"the model rejected the input: {error}")
    return ApiError(500, f"the model failed: {error}")


async def run_inference(model: ServedModel, batcher, request: InferRequest) -> list[OutputTensor]:
    """Queue `request` on the model's batcher and build the outputs it asked for.

    Raises:
        ApiError: 503 when the queue is full, 400 when the model rejects the input, 500 when
            the model fails otherwise.
    """
    try:
        results = await batcher.submit(request.inputs, request.rows)
    except QueueFull as error:
        raise ApiError(
            503,
            f"model {model.name!r} has {batcher.max_queue} requests waiting; retry shortly",
            {"Retry-After": "1"},
        ) from error
    except Exception as error:
        raise model_error(error) from error
    return output_tensors(model, request, results)


def output_tensors(
    model: ServedModel, request: InferRequest, results: dict[str, np.ndarray]
) -> list[OutputTensor]:
    """The outputs a request asked for, with the output extensions applied.

    The one place a raw model output becomes what the client gets back (today: Triton's
    classification extension), so REST and gRPC always answer alike.
    """
    tensors = []
    for wanted in request.outputs:
        array = results[wanted.name]
        datatype = model.output(wanted.name).datatype
        if wanted.classification:
            array = classify(array, wanted.classification, model.labels, model.batchable)
            datatype = "BYTES"
        tensors.append(OutputTensor(wanted.name, datatype, array, wanted.binary))
    return tensors


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
