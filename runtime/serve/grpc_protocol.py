"""KServe v2 gRPC inference messages to and from the shared request and output types.

Inputs arrive either all as `raw_input_contents` (one bytes entry per input, little-endian
row-major; what tritonclient.grpc sends) or each in the typed `contents` list of its datatype;
outputs always go back as `raw_output_contents`, as Triton answers. The checks are the ones
REST makes (`inference.py`), so both refuse the same requests with the same words.
"""

from __future__ import annotations

import numpy as np

from nnspec.runtime.serve.grpc_messages import ModelInferResponse
from nnspec.runtime.serve.inference import (
    InferRequest,
    OutputTensor,
    array_from_raw,
    array_from_values,
    bad_request,
    build_request,
    check_input,
    requested_output,
    serialize_bytes,
)
from nnspec.runtime.serve.models import ServedModel

# The InferTensorContents list each datatype travels in (FP16 has none: raw bytes only).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _parameter(parameters, key: str):
    """A request parameter's value (whichever of the oneof is set), or None."""
    if key not in parameters:
        return None
    value = parameters[key]
    choice = value.WhichOneof("parameter_choice")
    return getattr(value, choice) if choice else None


def _typed_contents(meta, shape, tensor):
    field = CONTENTS_FIELDS.get(meta.datatype)
    if field is None:
        raise bad_request(
            f"input {meta.name!r}: {meta.datatype} data must be sent in raw_input_contents"
        )
    return array_from_values(meta, shape, list(getattr(tensor.contents, field)))


def parse_grpc_request(model: ServedModel, message) -> InferRequest:
    """Validate a `ModelInferRequest` against `model`.

    Raises:
        ApiError: 400 naming what is wrong.
    """
    raw = message.raw_input_contents
    if not message.inputs:
        raise bad_request("request needs a non-empty 'inputs' list")
    if raw and len(raw) != len(message.inputs):
        raise bad_request(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs; "
            "send one per input, in the order of 'inputs', or none"
        )
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(message.inputs):
        meta, shape = check_input(model, tensor.name, tensor.datatype, list(tensor.shape))
        if meta.name in inputs:
            raise bad_request(f"input {meta.name!r} is given twice")
        if raw:
            if tensor.HasField("contents") and tensor.contents.ByteSize():
                raise bad_request(
                    f"input {meta.name!r} has both contents and raw_input_contents; send one"
                )
            inputs[meta.name] = array_from_raw(meta, shape, raw[index])
        else:
            inputs[meta.name] = _typed_contents(meta, shape, tensor)
    outputs = [
        requested_output(
            model, wanted.name, classification=_parameter(wanted.parameters, "classification") or 0
        )
        for wanted in message.outputs
    ]
    return build_request(model, message.id or None, inputs, outputs)


def encode_grpc_response(model: ServedModel, request: InferRequest, outputs: list[OutputTensor]):
    """The `ModelInferResponse`: each output's shape, datatype and raw bytes."""
    response = ModelInferResponse(
        model_name=model.name, model_version=model.version, id=request.id or ""
    )
    for output in outputs:
        array = output.array
        response.outputs.add(name=output.name, datatype=output.datatype, shape=array.shape)
        if output.datatype == "BYTES":
            response.raw_output_contents.append(serialize_bytes(array))
        else:
            response.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
    return response
