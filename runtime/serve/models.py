"""A served model: an onnxruntime session described in KServe v2 terms.

Where models come from (files, folders, repositories, versions) is `repository.py`; this
module opens one version in onnxruntime and answers what the protocol asks of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnspec.compiler.errors import ServeError
from nnspec.runtime.export.metadata import ModelRecord, read_model_record
from nnspec.runtime.serve.tasks import contract_problem, derived_outputs, image_input, task_outputs

# onnxruntime's type strings -> KServe v2 datatype names.
ONNX_DATATYPES: dict[str, str] = {
    "tensor(float)": "FP32",
    "tensor(float16)": "FP16",
    "tensor(double)": "FP64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}

# KServe v2 datatype names -> numpy dtypes (BYTES tensors are object arrays of str/bytes).
NUMPY_DTYPES: dict[str, np.dtype] = {
    "FP32": np.dtype(np.float32),
    "FP16": np.dtype(np.float16),
    "FP64": np.dtype(np.float64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "BOOL": np.dtype(np.bool_),
    "BYTES": np.dtype(object),
}

PLATFORM = "onnxruntime_onnx"


@dataclass(frozen=True)
class TensorMeta:
    """One model input or output: name, KServe datatype, and shape with -1 for free dims."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    #: a BYTES stand-in for an image input: encoded image files, one per row (serve/tasks.py)
    encoded_images: bool = False

    def as_json(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class ServedModel:
    """An onnxruntime session plus what the protocol needs to know about it."""

    name: str
    version: str
    path: Path
    session: object  # onnxruntime.InferenceSession
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]
    labels: list[str] | None = None
    # Rows one onnxruntime call may take; 1 means requests are never merged.
    max_batch_size: int = 1
    properties: dict[str, str] = field(default_factory=dict)
    #: the task, labels and input contracts of the nnspec metadata (defaults without it)
    record: ModelRecord = field(default_factory=ModelRecord)
    #: outputs the server computes from the model's first output for its task (serve/tasks.py)
    derived: tuple[str, ...] = ()

    @property
    def batchable(self) -> bool:
        """Whether every input and output has a free first (batch) dimension."""
        tensors = [*self.inputs, *self.outputs]
        return all(len(t.shape) >= 1 and t.shape[0] == -1 for t in tensors)

    def input(self, name: str) -> TensorMeta | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorMeta | None:
        return next((t for t in self.outputs if t.name == name), None)

    # The model call: a plain session.run on CPU, I/O binding on a GPU (device_io.py).
    runner: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One onnxruntime call; returns every output by name, the task's outputs included.
        Thread-safe (onnxruntime is)."""
        results = self.runner(feed)
        if self.derived:
            first = next(t.name for t in self.outputs if t.name not in self.derived)
            results.update(task_outputs(self.record, results[first]))
        return results

    def input_problem(self, inputs: dict[str, np.ndarray]) -> str | None:
        """Why these request inputs contradict the model's input contract (values outside its
        declared range, or not finite), or None."""
        for name, array in inputs.items():
            problem = contract_problem(self.record, name, array)
            if problem:
                return problem
        return None

    def image_input(self, name: str) -> TensorMeta | None:
        """The BYTES stand-in of input `name` when it takes encoded image files, else None."""
        contract = self.record.inputs.get(name)
        if contract is None or not contract.is_image:
            return None
        return TensorMeta(name, "BYTES", (-1,), encoded_images=True)

    def decode_images(self, name: str, encoded: list[bytes]) -> np.ndarray:
        """Encoded images as a batch of input `name` (ValueError when one is unreadable)."""
        return image_input(self.record, name, encoded)

    @property
    def provider(self) -> str:
        """The execution provider onnxruntime actually uses for this model."""
        return self.session.get_providers()[0]

    def metadata(self) -> dict:
        """The KServe v2 model metadata response."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": PLATFORM,
            "inputs": [t.as_json() for t in self.inputs],
            "outputs": [t.as_json() for t in self.outputs],
        }


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def intra_op_threads(processes: int, instances: int) -> int:
    """onnxruntime threads per call so that every concurrent call gets its share of cores.

    0 (onnxruntime's own default: every physical core) when one call runs at a time on a
    process free to use the whole machine; onnxruntime does not look at the affinity mask, so
    a process pinned to fewer cores (taskset, a container's cpuset) gets that many.
    """
    calls = processes * instances
    if calls <= 1 and cpu_cores() == (os.cpu_count() or 1):
        return 0
    return max(1, cpu_cores() // calls)


def _tensor_meta(node) -> TensorMeta:
    datatype = ONNX_DATATYPES.get(node.type)
    if datatype is None:
        raise ServeError(
            f"tensor {node.name!r} has type {node.type}, which the server cannot carry; "
            f"supported: {', '.join(sorted(ONNX_DATATYPES))}",
        )
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in node.shape)
    return TensorMeta(node.name, datatype, shape)


def _record(props: dict[str, str], where: Path) -> ModelRecord:
    try:
        return read_model_record(props)
    except ValueError as error:
        raise ServeError(f"{where}: {error}") from error


def open_model(
    name: str,
    version: str,
    onnx_path: Path,
    *,
    providers: list[str],
    max_batch_size: int,
    intra_op_threads: int = 0,
    labels: list[str] | None = None,
) -> ServedModel:
    """Open one model version in onnxruntime.

    Args:
        name, version: what the protocol calls it.
        onnx_path: the model file.
        providers: onnxruntime execution providers, best first.
        max_batch_size: most rows per onnxruntime call (1: never merge requests).
        intra_op_threads: onnxruntime threads per call (0: onnxruntime's default).
        labels: class labels to use when the model's metadata has none.

    Raises:
        ServeError: the file is not a model onnxruntime can run, or its metadata is broken.
    """
    import onnxruntime as ort

    from nnspec.runtime.serve.device_io import make_runner

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=providers)
    except Exception as error:  # onnxruntime raises its own untyped errors for bad files
        raise ServeError(f"{onnx_path}: onnxruntime cannot load this model: {error}") from error
    inputs = [_tensor_meta(node) for node in session.get_inputs()]
    outputs = [_tensor_meta(node) for node in session.get_outputs()]
    props = dict(session.get_modelmeta().custom_metadata_map)
    record = _record(props, onnx_path)
    derived = [TensorMeta(d.name, d.datatype, d.shape)
               for d in derived_outputs(record, outputs[0].shape)] if outputs else []  # fmt: skip
    model = ServedModel(
        name=name,
        version=version,
        path=onnx_path,
        session=session,
        inputs=inputs,
        outputs=outputs + derived,
        labels=record.labels or labels,
        properties=props,
        record=record,
        derived=tuple(d.name for d in derived),
    )
    model.max_batch_size = max(1, max_batch_size) if model.batchable else 1
    model.runner = make_runner(session, [t.name for t in outputs])
    return model
