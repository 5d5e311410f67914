"""Export carries the task: a regression model trained on standardised targets answers in the
targets' units inside the graph, under the spec's output name."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import torch
from safetensors.torch import load_file

from nnspec.compiler import build_model, load_spec
from nnspec.runtime.cli import main
from nnspec.runtime.train.trainer import TrainOptions, train

REGRESSION = {
    "nnspec": 1, "name": "reg", "input": {"shape": [5]}, "output_name": "values",
    "task": {"type": "regression", "standardize": True},
    "network": [{"linear": {"out": 8}}, "relu", {"linear": {"out": 2}}],
    "optimizer": {"type": "adam", "lr": 0.01},
    "train": {"epochs": 2, "batch_size": 32},
}  # fmt: skip


def test_standardised_regression_exports_in_target_units(tmp_path, capsys):
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(200, 5)).astype(np.float32)
    targets = 100 + 10 * inputs[:, :2] + rng.normal(0, 0.1, size=(200, 2))  # far from N(0, 1)
    np.savez(tmp_path / "data.npz", x=inputs, y=targets)
    run = tmp_path / "run"
    options = TrainOptions(out=run, data=str(tmp_path / "data.npz"), progress=False,
                           device="cpu")  # fmt: skip
    train(load_spec(REGRESSION), options, lambda _: None)
    assert main(["export", str(run), "-o", str(tmp_path / "reg.onnx")]) == 0
    assert "onnxruntime vs PyTorch" in capsys.readouterr().out
    state = json.loads((run / "task.json").read_text())["state"]
    # the network itself, without the run's target statistics: standardised units
    plain = build_model(load_spec(run / "spec.yaml")).eval()
    plain.load_state_dict(load_file(run / "checkpoints" / "best.safetensors"))
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    with torch.no_grad():
        standardised = plain(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(tmp_path / "reg.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["values"]
    (values,) = session.run(None, {"input": x})
    want = standardised * np.array(state["std"]) + np.array(state["mean"])
    np.testing.assert_allclose(values, want, rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(values - 100) < 60)  # in the targets' units, not standardised
