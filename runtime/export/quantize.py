"""int8 quantisation of an exported model with onnxruntime.quantization, and what it costs.

Models with convolutions get static quantisation in QDQ form: activation ranges come from a
calibration set run through the float model. Linear-only models (MLPs, attention) get dynamic
quantisation: weights are int8 ahead of time, activation ranges are measured per batch.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from nnspec.compiler.errors import ExportError

# Ops whose presence makes static (calibrated) quantisation worth its calibration pass.
STATIC_OPS = {"Conv", "ConvTranspose"}
CALIBRATION_SAMPLES = 256
EVALUATION_SAMPLES = 512
CALIBRATION_BATCH = 32


@dataclass(frozen=True)
class QuantizationData:
    """Raw inputs for calibration, and inputs (with labels when known) for the comparison."""

    calibration: np.ndarray
    evaluation: np.ndarray
    labels: np.ndarray | None
    source: str

    def calibration_batches(self) -> list[np.ndarray]:
        return [
            self.calibration[i : i + CALIBRATION_BATCH]
            for i in range(0, len(self.calibration), CALIBRATION_BATCH)
        ]


@dataclass(frozen=True)
class QuantizationReport:
    """Accuracy (when labelled data was given), top-1 agreement and latency, float vs int8."""

    path: Path
    method: str
    samples: int
    agreement: float
    accuracy_fp32: float | None
    accuracy_int8: float | None
    batch: int
    ms_fp32: float
    ms_int8: float

    @property
    def speedup(self) -> float:
        return self.ms_fp32 / self.ms_int8

    def lines(self) -> list[str]:
        out = [f"int8 ({self.method}) -> {self.path}"]
        if self.accuracy_fp32 is not None and self.accuracy_int8 is not None:
            out.append(
                f"  accuracy on {self.samples} labelled samples: float32 {self.accuracy_fp32:.2%}, "
                f"int8 {self.accuracy_int8:.2%}"
            )
        out.append(
            f"  top-1 agreement with float32: {self.agreement:.2%} of {self.samples} samples"
        )
        out.append(
            f"  onnxruntime CPU, batch {self.batch}: float32 {self.ms_fp32:.2f} ms, "
            f"int8 {self.ms_int8:.2f} ms ({self.speedup:.2f}x)"
        )
        return out


class ArrayCalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over in-memory batches of one input."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]):
        self.input_name = input_name
        self.batches = batches
        self._iter: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._iter = iter(self.batches)


def quantization_data(
    sample_shape: Sequence[int],
    source: str | None,
    normalization: tuple[list[float], list[float]] | None = None,
    seed: int = 0,
    spec=None,
) -> QuantizationData:
    """Calibration and evaluation inputs from a data source (see nnspec.runtime.train.data).

    With a source, calibration samples come from its training split and the comparison uses
    its test split with labels. Without one (a bare spec), inputs are random around the
    model's input normalisation (mean + std * N(0, 1) per channel) and there are no labels.
    With `spec`, the source is opened for the spec's task and input contract; labels are kept
    for classification only (the comparison measures top-1 accuracy).

    Raises:
        DataError: the source is missing or does not fit the model's input.
    """
    if source is None:
        rng = np.random.default_rng(seed)
        shape = tuple(sample_shape)
        mean, std = normalization if normalization else ([0.0], [1.0])
        scale = (1, len(std)) + (1,) * (len(shape) - 1)
        mean_arr = np.asarray(mean, dtype=np.float32).reshape(scale)
        std_arr = np.asarray(std, dtype=np.float32).reshape(scale)

        def draw(n: int) -> np.ndarray:
            return (mean_arr + std_arr * rng.standard_normal((n, *shape))).astype(np.float32)

        return QuantizationData(draw(CALIBRATION_SAMPLES), draw(64), None, "random inputs")
    from nnspec.runtime.train.data import load_data, load_spec_data

    splits = load_spec_data(spec, source) if spec is not None else load_data(source, sample_shape)
    calibration = _stack(splits.train, CALIBRATION_SAMPLES)[0]
    evaluation, labels = _stack(splits.test, EVALUATION_SAMPLES)
    if spec is not None and spec.task.type != "classification":
        labels = None
    return QuantizationData(calibration, evaluation, labels, source)


def _stack(dataset, limit: int) -> tuple[np.ndarray, np.ndarray | None]:
    count = min(limit, len(dataset))
    pairs = [dataset[i] for i in range(count)]
    x = np.stack([np.asarray(sample, dtype=np.float32) for sample, _ in pairs])
    if any(np.ndim(label) for _, label in pairs):
        return x, None  # not class indices: no accuracy to compare
    y = np.asarray([int(label) for _, label in pairs])
    return x, y


def quantization_method(model: onnx.ModelProto) -> str:
    """ "static" when the graph has convolutions, else "dynamic"."""
    ops = {node.op_type for node in model.graph.node}
    return "static" if ops & STATIC_OPS else "dynamic"


def quantize_int8(
    fp32_path: str | Path,
    int8_path: str | Path,
    calibration: Sequence[np.ndarray],
) -> str:
    """Write an int8 copy of `fp32_path` to `int8_path`; return the method used.

    Args:
        calibration: batches of raw model input (normalisation is inside the graph), used for
            static quantisation's activation ranges; a few hundred samples are plenty.

    Raises:
        ExportError: the model has more than one input, or onnxruntime cannot quantise it.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    model = onnx.load(str(fp32_path))
    if len(model.graph.input) != 1:
        raise ExportError("--quantize int8 supports models with one input")
    method = quantization_method(model)
    try:
        with tempfile.TemporaryDirectory(prefix="nnspec-quant-") as tmp:
            # onnxruntime's recommended preparation: shape inference and graph optimisation,
            # so Conv+Relu etc. are quantised as one unit.
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(fp32_path), str(prepared))
            if method == "static":
                quantize_static(
                    str(prepared),
                    str(int8_path),
                    ArrayCalibrationReader(model.graph.input[0].name, calibration),
                    quant_format=QuantFormat.QDQ,
                    # Per-tensor weight scales: on the digits CNN, per-channel ones agreed
                    # less often with float32 (92% vs 97% of test predictions).
                    per_channel=False,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                )
            else:
                quantize_dynamic(str(prepared), str(int8_path), weight_type=QuantType.QInt8)
    except (RuntimeError, ValueError) as error:
        raise ExportError(f"int8 quantisation of {fp32_path} failed: {error}") from error
    _copy_metadata(model, Path(int8_path))
    return method


def _copy_metadata(source: onnx.ModelProto, path: Path) -> None:
    """Keep nnspec.* metadata (labels, normalisation) on the quantised model."""
    quantized = onnx.load(str(path))
    present = {p.key for p in quantized.metadata_props}
    for prop in source.metadata_props:
        if prop.key not in present:
            quantized.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(quantized, str(path))


def compare_int8(
    fp32_path: str | Path,
    int8_path: str | Path,
    method: str,
    inputs: np.ndarray,
    labels: np.ndarray | None = None,
    batch: int = 8,
    repeats: int = 20,
) -> QuantizationReport:
    """Accuracy, agreement and latency of the int8 model against the float one (CPU)."""
    import onnxruntime as ort

    sessions = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        for p in (fp32_path, int8_path)
    ]
    name = sessions[0].get_inputs()[0].name
    preds = [np.argmax(s.run(None, {name: inputs})[0], axis=1) for s in sessions]
    accuracies: list[float | None] = [None, None]
    if labels is not None:
        accuracies = [float(np.mean(p == labels)) for p in preds]
    timing_batch = inputs[:batch]
    return QuantizationReport(
        path=Path(int8_path),
        method=method,
        samples=len(inputs),
        agreement=float(np.mean(preds[0] == preds[1])),
        accuracy_fp32=accuracies[0],
        accuracy_int8=accuracies[1],
        batch=len(timing_batch),
        ms_fp32=_median_ms(sessions[0], name, timing_batch, repeats),
        ms_int8=_median_ms(sessions[1], name, timing_batch, repeats),
    )


def export_int8(
    fp32_path: str | Path, int8_path: str | Path, data: QuantizationData
) -> QuantizationReport:
    """Quantise `fp32_path` to `int8_path` calibrated on `data`, and compare the two."""
    method = quantize_int8(fp32_path, int8_path, data.calibration_batches())
    return compare_int8(fp32_path, int8_path, method, data.evaluation, data.labels)


def _median_ms(session, name: str, batch: np.ndarray, repeats: int) -> float:
    session.run(None, {name: batch})  # warm-up: first run allocates
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {name: batch})
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
