"""Is an exported ONNX file valid, and does onnxruntime compute what PyTorch computes?"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from nnspec.compiler.errors import ExportError

# Parity bound: |onnxruntime - torch| <= ABS_TOLERANCE + REL_TOLERANCE * max|torch|.
# Folding batch norm and onnxruntime's own fusions reorder float32 sums, so the bound scales
# with the output's magnitude instead of being a fixed number.
ABS_TOLERANCE = 1e-4
REL_TOLERANCE = 1e-4
ONNX_TO_NUMPY = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
}


@dataclass(frozen=True)
class ParityReport:
    """Worst disagreement between onnxruntime and PyTorch over the random inputs tried."""

    batch_sizes: tuple[int, ...]
    trials: int
    max_abs_error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_error <= self.tolerance

    def __str__(self) -> str:
        sizes = ", ".join(str(b) for b in self.batch_sizes)
        verdict = "<=" if self.ok else ">"
        return (
            f"max abs error {self.max_abs_error:.3g} {verdict} tolerance {self.tolerance:.3g} "
            f"({self.trials} random inputs at batch sizes {sizes})"
        )


def check_onnx_file(path: str | Path) -> None:
    """Run onnx.checker with full type/shape checking on a saved model.

    Raises:
        ExportError: the model is not valid ONNX; the checker's message is included.
    """
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ExportError(f"{path}: the exported model fails onnx.checker: {error}") from error


def random_inputs(model: onnx.ModelProto, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One random array per graph input, its symbolic (batch) dims set to ``batch``.

    Float inputs are standard normal; integer inputs (token ids) are 0 or 1, valid for any
    vocabulary.
    """
    arrays = []
    for value in model.graph.input:
        tensor_type = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in tensor_type.shape.dim]
        dtype = ONNX_TO_NUMPY.get(tensor_type.elem_type)
        if dtype is None:
            raise ExportError(
                f"input {value.name!r} has ONNX element type {tensor_type.elem_type}, "
                "which verification cannot generate"
            )
        if np.issubdtype(dtype, np.integer):
            arrays.append(rng.integers(0, 2, size=shape).astype(dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


def verify_parity(
    onnx_path: str | Path,
    reference: nn.Module,
    batch_sizes: tuple[int, ...] = (1, 3),
    trials: int = 2,
    seed: int = 0,
) -> ParityReport:
    """Compare onnxruntime (CPU) with ``reference`` in eval mode on random inputs.

    ``reference`` should be the model as trained (not the folded copy), so the comparison also
    covers batch-norm folding. Its train/eval mode is restored afterwards.

    Raises:
        ExportError: the outputs differ by more than the tolerance; the figures are included.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model = onnx.load(str(onnx_path), load_external_data=False)
    names = [value.name for value in model.graph.input]
    rng = np.random.default_rng(seed)
    worst, scale = 0.0, 0.0
    was_training = reference.training
    reference.eval()
    try:
        for batch in batch_sizes:
            for _ in range(trials):
                arrays = random_inputs(model, batch, rng)
                (got,) = session.run(None, dict(zip(names, arrays, strict=True)))
                with torch.inference_mode():
                    want = reference(*(torch.from_numpy(a) for a in arrays)).numpy()
                if got.shape != want.shape:
                    raise ExportError(
                        f"onnxruntime output shape {got.shape} differs from PyTorch's "
                        f"{want.shape} at batch size {batch}"
                    )
                worst = max(worst, float(np.max(np.abs(got - want), initial=0.0)))
                scale = max(scale, float(np.max(np.abs(want), initial=0.0)))
    finally:
        reference.train(was_training)
    report = ParityReport(
        batch_sizes=tuple(batch_sizes),
        trials=trials * len(batch_sizes),
        max_abs_error=worst,
        tolerance=ABS_TOLERANCE + REL_TOLERANCE * scale,
    )
    if not report.ok:
        raise ExportError(
            f"{onnx_path}: onnxruntime disagrees with PyTorch: {report}\n"
            "    hint: export with --no-fold-bn to see whether folding is the cause, and report "
            "the spec"
        )
    return report
