"""Models to serve: found on disk, opened in onnxruntime, described in KServe v2 terms.

A path names one `.onnx` file (model name: the file stem), a folder of `.onnx` files, or a
Triton-style model repository `DIR/<name>/<version>/model.onnx` (+ optional `config.pbtxt`,
from which `max_batch_size` and an output's `label_filename` are read).
"""

from __future__ import annotations

import re
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

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One onnxruntime call; returns every output by name, the task's outputs included.
        Thread-safe (onnxruntime is)."""
        names = [t.name for t in self.outputs if t.name not in self.derived]
        results = dict(zip(names, self.session.run(names, feed), strict=True))
        if self.derived:
            results.update(task_outputs(self.record, results[names[0]]))
        return results

    def input_problem(self, inputs: dict[str, np.ndarray]) -> str | None:
        """Why these request inputs contradict the model's input contract, or None."""
        for name, array in inputs.items():
            problem = contract_problem(self.record, name, array)
            if problem:
                return problem
        return None

    def takes_images(self, name: str) -> bool:
        """Whether input `name` accepts encoded image files (BYTES) for its tensor."""
        contract = self.record.inputs.get(name)
        return contract is not None and contract.is_image

    def decode_images(self, name: str, encoded: list[bytes]) -> np.ndarray:
        """Encoded images as a batch of input `name` (ValueError when one is unreadable)."""
        return image_input(self.record, name, encoded)

    def metadata(self) -> dict:
        """The KServe v2 model metadata response."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": PLATFORM,
            "inputs": [t.as_json() for t in self.inputs],
            "outputs": [t.as_json() for t in self.outputs],
        }


@dataclass(frozen=True)
class ModelSource:
    """Where one model comes from; `repository_dir` is its folder in a Triton repository."""

    name: str
    version: str
    onnx_path: Path
    repository_dir: Path | None = None


def _repository_model(model_dir: Path) -> ModelSource | None:
    """The highest version of a Triton repository model folder, if `model_dir` is one."""
    versions = [v for v in model_dir.iterdir() if v.name.isdigit() and v.is_dir()]
    versions = [v for v in versions if (v / "model.onnx").is_file()]
    if not versions:
        return None
    latest = max(versions, key=lambda v: int(v.name))
    return ModelSource(model_dir.name, latest.name, latest / "model.onnx", model_dir)


def find_model_files(path: Path) -> list[ModelSource]:
    """Every model under `path`; ServeError if there is none or two share a name."""
    if not path.exists():
        raise ServeError(f"model path {str(path)!r} does not exist")
    if path.is_file():
        if path.suffix != ".onnx":
            raise ServeError(f"{path}: expected an .onnx file or a model directory")
        return [ModelSource(path.stem, "1", path)]
    own = _repository_model(path)
    if own is not None:  # one model's folder of a repository: DIR/<version>/model.onnx
        return [own]
    found = [ModelSource(p.stem, "1", p) for p in sorted(path.glob("*.onnx"))]
    for model_dir in sorted(p for p in path.iterdir() if p.is_dir()):
        source = _repository_model(model_dir)
        if source is not None:
            found.append(source)
    if not found:
        raise ServeError(
            f"no models in {path}: expected *.onnx files or a Triton model repository "
            "DIR/<name>/<version>/model.onnx",
        )
    names = [source.name for source in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ServeError(
            f"model name(s) {', '.join(duplicates)} appear twice in {path} "
            "(both as NAME.onnx and as a repository folder NAME/); rename one",
        )
    return found


def read_triton_config(model_dir: Path | None) -> tuple[int | None, list[str] | None]:
    """max_batch_size and labels (from an output's label_filename) of a config.pbtxt, if any."""
    config = model_dir / "config.pbtxt" if model_dir else None
    if config is None or not config.is_file():
        return None, None
    text = config.read_text(encoding="utf-8")
    # config.pbtxt is protobuf text format; these two scalar fields are all we read.
    size = re.search(r"^\s*max_batch_size\s*:\s*(\d+)", text, re.MULTILINE)
    label_file = re.search(r'label_filename\s*:\s*"([^"]+)"', text)
    labels = None
    if label_file and (model_dir / label_file.group(1)).is_file():
        lines = (model_dir / label_file.group(1)).read_text(encoding="utf-8").splitlines()
        labels = [line.strip() for line in lines if line.strip()]
    return (int(size.group(1)) if size else None), labels


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
    source: ModelSource,
    *,
    providers: list[str],
    max_batch_size: int,
    intra_op_threads: int = 0,
) -> ServedModel:
    """Open one model in onnxruntime.

    Args:
        source: the model's name, version, file and repository folder.
        providers: onnxruntime execution providers, best first.
        max_batch_size: the server's cap on rows per onnxruntime call; a repository's
            config.pbtxt may lower it (0 there means: never merge requests).
        intra_op_threads: onnxruntime threads per call (0: onnxruntime's default).

    Raises:
        ServeError: the file is not a model onnxruntime can run, or its metadata is broken.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    onnx_path = source.onnx_path
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=providers)
    except Exception as error:  # onnxruntime raises its own untyped errors for bad files
        raise ServeError(f"{onnx_path}: onnxruntime cannot load this model: {error}") from error
    inputs = [_tensor_meta(node) for node in session.get_inputs()]
    outputs = [_tensor_meta(node) for node in session.get_outputs()]
    props = dict(session.get_modelmeta().custom_metadata_map)
    config_batch, config_labels = read_triton_config(source.repository_dir)
    record = _record(props, onnx_path)
    derived = [TensorMeta(d.name, d.datatype, d.shape)
               for d in derived_outputs(record, outputs[0].shape)] if outputs else []  # fmt: skip
    model = ServedModel(
        name=source.name,
        version=source.version,
        path=onnx_path,
        session=session,
        inputs=inputs,
        outputs=outputs + derived,
        labels=record.labels or config_labels,
        properties=props,
        record=record,
        derived=tuple(d.name for d in derived),
    )
    limit = max_batch_size if config_batch is None else min(max_batch_size, config_batch)
    model.max_batch_size = max(1, limit) if model.batchable else 1
    return model


def load_models(
    path: str | Path,
    *,
    providers: list[str],
    max_batch_size: int,
    intra_op_threads: int = 0,
) -> dict[str, ServedModel]:
    """Every model under `path` (see the module doc), opened and keyed by name."""
    models = {}
    for source in find_model_files(Path(path)):
        models[source.name] = open_model(
            source,
            providers=providers,
            max_batch_size=max_batch_size,
            intra_op_threads=intra_op_threads,
        )
    return models
