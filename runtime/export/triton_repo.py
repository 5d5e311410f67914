"""Write a Triton Inference Server model repository for an exported ONNX model.

Layout (Triton's model repository convention): ``DIR/<name>/config.pbtxt``,
``DIR/<name>/1/model.onnx`` and, when class labels are known, ``DIR/<name>/labels.txt``
named by the output's ``label_filename`` (Triton's classification extension).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import onnx

from nnspec.compiler.errors import ExportError
from nnspec.compiler.paths import child_path

DEFAULT_MAX_BATCH_SIZE = 64
LABELS_FILE = "labels.txt"
# ONNX element type -> Triton data_type (model_config.proto DataType).
TRITON_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32",
}


def triton_model_name(name: str) -> str:
    """A directory-safe model name (Triton names a model after its directory)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def write_triton_repository(
    onnx_path: str | Path,
    repo_dir: str | Path,
    name: str,
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    labels: list[str] | None = None,
) -> Path:
    """Copy `onnx_path` into a Triton repository under `repo_dir` and write its config.

    The model's first dimension must be its (dynamic) batch dimension: Triton's batching
    takes it over, so config dims leave it out. Returns the model's directory.

    Raises:
        ExportError: the model has a fixed batch size or a tensor type Triton cannot take.
    """
    model_dir = child_path(repo_dir, triton_model_name(name), "the model name")
    model = onnx.load(str(onnx_path), load_external_data=False)
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, version_dir / "model.onnx")
    if labels:
        (model_dir / LABELS_FILE).write_text("".join(f"{label}\n" for label in labels))
    config = triton_config(model, model_dir.name, max_batch_size, with_labels=bool(labels))
    (model_dir / "config.pbtxt").write_text(config)
    return model_dir


def triton_config(
    model: onnx.ModelProto, name: str, max_batch_size: int, *, with_labels: bool
) -> str:
    """The config.pbtxt text (protobuf text format of Triton's ModelConfig)."""
    inputs = [_tensor_entry(value) for value in model.graph.input]
    outputs = [_tensor_entry(value) for value in model.graph.output]
    if with_labels:
        outputs[0] += f"\n    label_filename: {json.dumps(LABELS_FILE)}"
    return "\n".join(
        [
            f"name: {json.dumps(name)}",
            'platform: "onnxruntime_onnx"',
            f"max_batch_size: {max_batch_size}",
            "input [",
            ",\n".join(f"  {{\n{entry}\n  }}" for entry in inputs),
            "]",
            "output [",
            ",\n".join(f"  {{\n{entry}\n  }}" for entry in outputs),
            "]",
            "dynamic_batching { }",
            "",
        ]
    )


def _tensor_entry(value: onnx.ValueInfoProto) -> str:
    tensor_type = value.type.tensor_type
    dims = list(tensor_type.shape.dim)
    if not dims or dims[0].HasField("dim_value"):
        raise ExportError(
            f"tensor {value.name!r} has no dynamic batch dimension, which Triton's batching needs\n"
            "    hint: export with the default --batch dynamic"
        )
    data_type = TRITON_TYPES.get(tensor_type.elem_type)
    if data_type is None:
        raise ExportError(
            f"tensor {value.name!r}: element type {tensor_type.elem_type} has no Triton type here"
        )
    # Triton writes -1 for a variable size; the batch dim itself is implied by max_batch_size.
    rest = [str(d.dim_value) if d.HasField("dim_value") else "-1" for d in dims[1:]]
    return "\n".join(
        [
            f"    name: {json.dumps(value.name)}",
            f"    data_type: {data_type}",
            f"    dims: [ {', '.join(rest)} ]",
        ]
    )
