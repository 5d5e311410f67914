"""How model calls move tensors: I/O binding against plain session.run, and the GPU path
where a GPU exists."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from nnspec.runtime.serve.device_io import IoBindingRunner, make_runner
from tests.serve.fixtures import make_conv_model, make_two_input_model, onnxruntime_reference

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def test_io_binding_gives_what_session_run_gives(tmp_path):
    """The binding code path, run on CPU: inputs bound, outputs bound and copied back."""
    path = make_two_input_model(tmp_path / "pair.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    runner = IoBindingRunner(session, ["y", "positive"], "cpu")
    a = np.array([[1.5, -2.0, 0.0], [3.0, 4.0, -1.0]], dtype=np.float32)
    b = np.array([[2, 3, 4], [-1, 0, 5]], dtype=np.int64)
    got = runner({"a": a[:, ::-1], "b": b})  # a non-contiguous view is bound correctly
    y, positive = onnxruntime_reference(path, {"a": np.ascontiguousarray(a[:, ::-1]), "b": b})
    np.testing.assert_array_equal(got["y"], y)
    np.testing.assert_array_equal(got["positive"], positive)
    assert not runner.pinned  # no pinned staging on CPU


def test_cpu_sessions_run_plainly(tmp_path):
    path = make_conv_model(tmp_path / "tiny.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    runner = make_runner(session, ["logits"])
    assert not isinstance(runner, IoBindingRunner)
    x = np.random.default_rng(0).standard_normal((2, 1, 12, 12)).astype(np.float32)
    np.testing.assert_array_equal(
        runner({"input": x})["logits"], session.run(None, {"input": x})[0]
    )


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU: this onnxruntime offers only "
                    f"{', '.join(ort.get_available_providers())}")  # fmt: skip
def test_cuda_sessions_bind_io_on_the_gpu_with_pinned_inputs(tmp_path):
    path = make_conv_model(tmp_path / "tiny.onnx")
    session = ort.InferenceSession(
        str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    runner = make_runner(session, ["logits"])
    assert isinstance(runner, IoBindingRunner) and runner.pinned
    for rows in (1, 5, 5, 3):  # repeated shapes reuse their pinned buffers
        x = np.random.default_rng(rows).standard_normal((rows, 1, 12, 12)).astype(np.float32)
        (expected,) = onnxruntime_reference(path, {"input": x})
        np.testing.assert_allclose(runner({"input": x})["logits"], expected, rtol=1e-3, atol=1e-4)
