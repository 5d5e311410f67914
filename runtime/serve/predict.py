"""Classify inputs (image files, .npy, .npz) with an exported ONNX model in onnxruntime.

The model is opened only from the path given: a model whose weights live in external data
files outside its own folder is refused, so a crafted model cannot make onnxruntime read
arbitrary files. Inputs are raw data (the normalisation is inside the graph); images are
scaled to [0, 1] as in training and converted to the model's channel count, never resized.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from nnspec.compiler.errors import DataError, UsageError
from nnspec.runtime.export.metadata import labels_from_metadata

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class ModelInfo:
    """What predict needs to know of a model: its input, labels and per-sample shape."""

    path: Path
    input_name: str
    sample_shape: tuple[int, ...]
    integer_input: bool
    labels: list[str] | None


@dataclass(frozen=True)
class Prediction:
    """Top-k classes of one sample."""

    source: str
    classes: list[tuple[int, str, float]]  # (index, label, probability), best first

    def to_json(self) -> dict:
        return {
            "input": self.source,
            "top": [{"index": i, "label": label, "probability": p} for i, label, p in self.classes],
        }


def read_model_info(path: str | Path) -> ModelInfo:
    """Open an ONNX file's graph and metadata without loading any external data.

    Raises:
        UsageError: the file does not exist.
        DataError: it is not a valid ONNX model, references external data outside its folder,
            or has other than one input.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model file {str(path)!r} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises DecodeError and friends for a broken file
        raise DataError(
            f"{path}: not a valid ONNX model ({type(error).__name__}: {error})"
        ) from error
    if not model.graph.node and not model.graph.output:
        raise DataError(f"{path}: not a valid ONNX model (no graph found)")
    _refuse_foreign_external_data(model, path)
    if len(model.graph.input) != 1:
        names = ", ".join(v.name for v in model.graph.input)
        raise DataError(f"{path}: predict takes models with one input, this one has [{names}]")
    value = model.graph.input[0]
    dims = value.type.tensor_type.shape.dim
    props = {p.key: p.value for p in model.metadata_props}
    return ModelInfo(
        path=path,
        input_name=value.name,
        sample_shape=tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:]),
        integer_input=value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT,
        labels=_labels(props, path),
    )


def _refuse_foreign_external_data(model: onnx.ModelProto, path: Path) -> None:
    folder = path.resolve().parent
    for tensor in _all_tensors(model.graph):
        if not onnx.external_data_helper.uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not target.is_relative_to(folder):
            raise DataError(
                f"{path}: tensor {tensor.name!r} points to external data {location!r} outside "
                "the model's folder; refusing to open it"
            )


def _all_tensors(graph: onnx.GraphProto):
    """Initializers and tensor attributes of a graph and of its subgraphs (If, Loop, Scan)."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _all_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_tensors(subgraph)


def _labels(props: dict[str, str], path: Path) -> list[str] | None:
    try:
        return labels_from_metadata(props)
    except ValueError as error:
        raise DataError(f"{path}: {error}") from error


def load_inputs(paths: list[str], info: ModelInfo) -> list[tuple[str, np.ndarray]]:
    """(name, sample) pairs from image files, .npy (a sample or a batch) and .npz (each array).

    Raises:
        DataError: a file is missing, unreadable, or does not match the model's input shape.
    """
    samples: list[tuple[str, np.ndarray]] = []
    for text in paths:
        path = Path(text)
        if not path.is_file():
            raise DataError(f"input {text!r} does not exist")
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            samples.append((text, _read_image(path, info)))
        elif suffix == ".npy":
            samples.extend(_split_batch(text, _read_array(path, np.load), info))
        elif suffix == ".npz":
            with _read_array(path, np.load) as archive:
                for key in archive.files:
                    samples.extend(_split_batch(f"{text}:{key}", archive[key], info))
        else:
            raise DataError(
                f"input {text!r}: unknown file type {suffix or '(none)'}\n"
                f"    hint: give images ({', '.join(sorted(IMAGE_SUFFIXES))}), .npy or .npz files"
            )
    if not samples:
        raise DataError("the inputs hold no samples (empty .npz files?)")
    return samples


def _read_array(path: Path, reader):
    try:
        return reader(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"input {str(path)!r} cannot be read as a numpy file: {error}") from error


def _read_image(path: Path, info: ModelInfo) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from nnspec.runtime.train.data import image_to_tensor

    shape = info.sample_shape
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DataError(
            f"input {str(path)!r}: the model takes samples of shape {list(shape)}, not images"
        )
    try:
        with Image.open(path) as image:
            size = image.size
            if size != (shape[2], shape[1]):
                raise DataError(
                    f"input {str(path)!r} is {size[0]}x{size[1]} pixels but the model takes "
                    f"{shape[2]}x{shape[1]}\n    hint: resize the image first; predict does "
                    "not resize, so what you send is what the model sees"
                )
            return image_to_tensor(image, shape).numpy()
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"input {str(path)!r} cannot be read as an image: {error}") from error


def _split_batch(name: str, array: np.ndarray, info: ModelInfo) -> list[tuple[str, np.ndarray]]:
    shape = info.sample_shape
    if array.shape == shape:
        return [(name, array)]
    if array.ndim == len(shape) + 1 and array.shape[1:] == shape:
        return [(f"{name}[{i}]", sample) for i, sample in enumerate(array)]
    raise DataError(
        f"input {name!r} has shape {list(array.shape)}; the model takes {list(shape)} "
        f"or a batch [N, {', '.join(str(d) for d in shape)}]"
    )


def predict(
    session, info: ModelInfo, samples: list[tuple[str, np.ndarray]], top_k: int = 5
) -> list[Prediction]:
    """Run the samples through an onnxruntime session in one batch; softmax; top-k."""
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    dtype = np.int64 if info.integer_input else np.float32
    batch = np.stack([sample for _, sample in samples]).astype(dtype, copy=False)
    (logits,) = session.run(None, {info.input_name: batch})
    logits = logits.reshape(len(samples), -1).astype(np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    results = []
    for (name, _), row in zip(samples, probabilities, strict=True):
        best = np.argsort(-row, kind="stable")[:top_k]
        results.append(
            Prediction(name, [(int(i), _label(info.labels, int(i)), float(row[i])) for i in best])
        )
    return results


def _label(labels: list[str] | None, index: int) -> str:
    if labels is not None and index < len(labels):
        return labels[index]
    return f"class {index}"


def open_session(info: ModelInfo, providers: list[str]):
    """An onnxruntime session on the model (after `read_model_info` vetted the file).

    Raises:
        DataError: onnxruntime cannot load the model.
    """
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(info.path), providers=providers)
    except Exception as error:  # onnxruntime raises untyped errors for models it cannot run
        raise DataError(f"{info.path}: onnxruntime cannot load this model: {error}") from error
