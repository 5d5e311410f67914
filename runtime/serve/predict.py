"""`nnspec predict`: inputs (image files, .npy, .npz) through an exported ONNX model in
onnxruntime, answered as the model's task says.

The model is opened only from the path given: a model whose weights live in external data
files outside its own folder is refused, so a crafted model cannot make onnxruntime read
arbitrary files. Image files become inputs as the model's input contract says (channels,
preprocess, range: runtime/common/images.py), exactly as in training; arrays must already have
the input's shape, and values outside its declared range are refused. Per task: the top-k
classes (classification), the label set (multilabel), the values (regression), or a mask PNG
per input (segmentation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from nnspec.compiler.errors import DataError, UsageError
from nnspec.compiler.files import not_a_regular_file
from nnspec.runtime.common.images import IMAGE_SUFFIXES, ImageError, image_to_input, open_image
from nnspec.runtime.export.metadata import ModelRecord, read_model_record
from nnspec.runtime.serve.tasks import contract_problem, sigmoid, softmax, task_outputs, thresholds


@dataclass(frozen=True)
class ModelInfo:
    """What predict needs to know of a model: its inputs, output, task record and labels."""

    path: Path
    input_names: tuple[str, ...]
    sample_shapes: dict[str, tuple[int, ...]]
    integer_inputs: frozenset[str]
    record: ModelRecord = field(default_factory=ModelRecord)

    @property
    def labels(self) -> list[str] | None:
        return self.record.labels

    @property
    def input_name(self) -> str:
        return self.input_names[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.sample_shapes[self.input_names[0]]

    def contract(self, name: str):
        """The input's contract; a bare one (shape only) for models without metadata."""
        from nnspec.compiler.schema import InputSpec

        found = self.record.inputs.get(name)
        if found is not None:
            return found
        return InputSpec(shape=[max(1, d) for d in self.sample_shapes[name]])


@dataclass(frozen=True)
class Prediction:
    """One sample's answer: `result` is its JSON (besides `input`), `lines` its text."""

    source: str
    result: dict
    lines: tuple[str, ...]

    def to_json(self) -> dict:
        return {"input": self.source, **self.result}


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
    initializers = {t.name for t in model.graph.initializer}
    values = [v for v in model.graph.input if v.name not in initializers]
    if not values:
        raise DataError(f"{path}: the model has no inputs")
    props = {p.key: p.value for p in model.metadata_props}
    try:
        record = read_model_record(props)
    except ValueError as error:
        raise DataError(f"{path}: {error}") from error
    return ModelInfo(
        path=path,
        input_names=tuple(v.name for v in values),
        sample_shapes={v.name: tuple(d.dim_value if d.HasField("dim_value") else -1
                                     for d in v.type.tensor_type.shape.dim[1:])
                       for v in values},  # fmt: skip
        integer_inputs=frozenset(v.name for v in values
                                 if v.type.tensor_type.elem_type != onnx.TensorProto.FLOAT),
        record=record,
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


Sample = tuple[str, dict[str, np.ndarray]]


def load_inputs(paths: list[str], info: ModelInfo) -> list[Sample]:
    """(name, {input: sample}) pairs from image files, .npy (a sample or a batch) and .npz
    (each array a sample or a batch; for a model with several inputs, one array per input).

    Raises:
        DataError: a file is missing or unreadable, does not match the model's input shape,
            or holds values outside its declared range.
    """
    samples: list[Sample] = []
    for text in paths:
        path = Path(text)
        problem = not_a_regular_file(path)
        if problem:
            raise DataError(f"input {text!r} {problem}")
        suffix = path.suffix.lower()
        if len(info.input_names) > 1 and suffix != ".npz":
            raise DataError(
                f"input {text!r}: this model takes {', '.join(info.input_names)}; give an .npz "
                "with one array per input name"
            )
        if suffix in IMAGE_SUFFIXES:
            samples.append((text, {info.input_name: _read_image(path, info)}))
        elif suffix == ".npy":
            array = _read_array(path, np.load)
            samples.extend(_split_batch(text, {info.input_name: array}, info))
        elif suffix == ".npz":
            with _read_array(path, np.load) as archive:
                samples.extend(_archive_samples(text, archive, info))
        else:
            raise DataError(
                f"input {text!r}: unknown file type {suffix or '(none)'}\n"
                f"    hint: give images ({', '.join(IMAGE_SUFFIXES)}), .npy or .npz files"
            )
    if not samples:
        raise DataError("the inputs hold no samples (empty .npz files?)")
    for name, feed in samples:
        for input_name, array in feed.items():
            problem = contract_problem(info.record, input_name, array)
            if problem:
                raise DataError(f"{name}: {problem}\n    hint: arrays are fed as they are: "
                                "scale them into the model's range, or give image files, "
                                "which predict converts into it")
    return samples


def _archive_samples(text: str, archive, info: ModelInfo) -> list[Sample]:
    if len(info.input_names) == 1:
        out = []
        for key in archive.files:
            out.extend(_split_batch(f"{text}:{key}", {info.input_name: archive[key]}, info))
        return out
    missing = [n for n in info.input_names if n not in archive.files]
    if missing:
        raise DataError(f"input {text!r} needs one array per model input; missing "
                        f"{', '.join(missing)} (it has {', '.join(archive.files)})")  # fmt: skip
    return _split_batch(text, {n: archive[n] for n in info.input_names}, info)


def _read_array(path: Path, reader):
    try:
        return reader(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"input {str(path)!r} cannot be read as a numpy file: {error}") from error


def _read_image(path: Path, info: ModelInfo) -> np.ndarray:
    contract = info.contract(info.input_name)
    if not contract.is_image:
        raise DataError(
            f"input {str(path)!r}: the model takes samples of shape "
            f"{list(info.sample_shape)}, not images"
        )
    try:
        return image_to_input(open_image(path), contract)
    except ImageError as error:
        raise DataError(f"input {str(path)!r} {error}") from error


def _split_batch(name: str, arrays: dict[str, np.ndarray], info: ModelInfo) -> list[Sample]:
    """One sample per row when every array is a batch of the input's shape, else one sample."""
    rows = set()
    for input_name, array in arrays.items():
        shape = info.sample_shapes[input_name]
        if _fits(array.shape, shape):
            rows.add(None)
        elif array.ndim == len(shape) + 1 and _fits(array.shape[1:], shape):
            rows.add(len(array))
        else:
            where = name if len(arrays) == 1 else f"{name}:{input_name}"
            raise DataError(
                f"input {where!r} has shape {list(array.shape)}; the model takes "
                f"{list(shape)} or a batch [N, {', '.join(str(d) for d in shape)}]"
            )
    if len(rows) > 1:
        raise DataError(f"input {name!r}: the arrays disagree on the batch size ({rows})")
    count = rows.pop()
    if count is None:
        return [(name, arrays)]
    return [(f"{name}[{i}]", {k: a[i] for k, a in arrays.items()}) for i in range(count)]


def _fits(found: tuple[int, ...], wanted: tuple[int, ...]) -> bool:
    return len(found) == len(wanted) and all(
        w in (-1, g) for w, g in zip(wanted, found, strict=True)
    )


def predict(session, info: ModelInfo, samples: list[Sample], top_k: int = 5,
            mask_dir: str | Path = "masks") -> list[Prediction]:  # fmt: skip
    """Run the samples through an onnxruntime session in one batch; answer per the task:
    top-k classes, label sets, values, or mask PNGs written to `mask_dir`."""
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    feed = {}
    for name in info.input_names:
        dtype = np.int64 if name in info.integer_inputs else np.float32
        feed[name] = np.stack([sample[name] for _, sample in samples]).astype(dtype, copy=False)
    (output,) = session.run(None, feed)[:1]
    names = [name for name, _ in samples]
    answer = ANSWERS[info.record.task_type]
    return answer(info, names, output, top_k=top_k, mask_dir=Path(mask_dir))


def _classes(info, names, output, top_k, **_) -> list[Prediction]:
    probabilities = softmax(output.reshape(len(names), -1))
    results = []
    for name, row in zip(names, probabilities, strict=True):
        best = np.argsort(-row, kind="stable")[:top_k]
        top = [{"index": int(i), "label": _label(info.labels, int(i)), "probability": float(row[i])}
               for i in best]  # fmt: skip
        lines = tuple(f"  {t['probability']:7.2%}  {t['label']} ({t['index']})" for t in top)
        results.append(Prediction(name, {"top": top}, lines))
    return results


def _label_sets(info, names, output, **_) -> list[Prediction]:
    probabilities = sigmoid(output.reshape(len(names), -1))
    limits = _thresholds(info, probabilities.shape[1])
    results = []
    for name, row in zip(names, probabilities, strict=True):
        scores = [{"index": i, "label": _label(info.labels, i), "probability": float(p),
                   "present": bool(p >= limits[i])} for i, p in enumerate(row)]  # fmt: skip
        present = [s["label"] for s in scores if s["present"]]
        lines = [f"  labels: {', '.join(present) if present else '(none)'}"]
        lines += [f"  {s['probability']:7.2%}  {s['label']} ({s['index']})"
                  f"{'  *' if s['present'] else ''}" for s in scores]  # fmt: skip
        results.append(Prediction(name, {"labels": present, "scores": scores}, tuple(lines)))
    return results


def _thresholds(info: ModelInfo, count: int) -> np.ndarray:
    try:
        return thresholds(info.record, count)
    except ValueError as error:
        raise DataError(f"{info.path}: {error}") from error


def _values(info, names, output, **_) -> list[Prediction]:
    results = []
    for name, row in zip(names, output, strict=True):
        values = row.astype(np.float64).tolist()
        flat = np.asarray(values).ravel()
        shown = ", ".join(f"{v:.6g}" for v in flat[:8]) + (", ..." if flat.size > 8 else "")
        results.append(Prediction(name, {"values": values}, (f"  values: [{shown}]",)))
    return results


def _masks(info, names, output, mask_dir: Path, **_) -> list[Prediction]:
    masks = task_outputs(info.record, output)["mask"]
    mask_dir.mkdir(parents=True, exist_ok=True)
    results, used = [], set()
    for name, mask in zip(names, masks, strict=True):
        path = _mask_path(mask_dir, name, used)
        write_mask(mask, path)
        counts = np.bincount(mask.ravel(), minlength=output.shape[1])
        classes = [{"index": i, "label": _label(info.labels, i), "pixels": int(n)}
                   for i, n in enumerate(counts) if n]  # fmt: skip
        shown = ", ".join(f"{c['label']} {c['pixels']}" for c in classes)
        results.append(Prediction(name, {"mask": str(path), "classes": classes},
                                  (f"  mask -> {path} (pixels: {shown})",)))  # fmt: skip
    return results


def _mask_path(folder: Path, source: str, used: set[str]) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source.replace(":", "_")).name)
    stem = stem.removesuffix(".npy").removesuffix(".npz")
    stem = re.sub(r"\.(png|jpe?g|bmp|gif|tiff?|webp)", "", stem, flags=re.I).strip("_") or "mask"
    candidate, n = stem, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}-{n}"
    used.add(candidate)
    return folder / f"{candidate}.mask.png"


def write_mask(mask: np.ndarray, path: Path) -> None:
    """A class map as an indexed PNG: pixel values are the class indices (up to 255), with a
    palette that shows classes in distinct colours (background black)."""
    from PIL import Image

    if int(mask.max(initial=0)) > 255:
        Image.fromarray(mask.astype(np.uint16)).save(path)
        return
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(_palette())
    image.save(path)


def _palette() -> list[int]:
    """PASCAL VOC's colour map: class i's colour from the bits of i."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


ANSWERS = {"classification": _classes, "multilabel": _label_sets, "regression": _values,
           "segmentation": _masks}  # fmt: skip


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
