"""int8 quantisation: static QDQ for conv nets (calibrated on real data), dynamic for MLPs."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml

from nnspec.compiler import build_model
from nnspec.runtime.cli import main
from nnspec.runtime.export.exporter import export_onnx
from nnspec.runtime.export.quantize import export_int8, quantization_data
from nnspec.runtime.train.checkpoint import save_checkpoint
from nnspec.runtime.train.data import load_data
from tests.export.fixtures import SMALL_CNN

MLP = {
    "nnspec": 1,
    "name": "mlp",
    "input": {"shape": [16]},
    "network": [
        {"linear": {"out": 64}},
        "relu",
        {"linear": {"out": 64}},
        "relu",
        {"linear": {"out": 4}},
    ],
}


@pytest.fixture(scope="module")
def digits_cnn():
    """SMALL_CNN trained briefly on the bundled digits: accurate enough for accuracy to mean
    something before and after quantisation."""
    torch.manual_seed(0)
    model = build_model(copy.deepcopy(SMALL_CNN))
    train = load_data("digits", (1, 8, 8)).train
    x = torch.stack([train[i][0] for i in range(len(train))])
    y = torch.tensor([int(train[i][1]) for i in range(len(train))])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(4):
        for i in range(0, len(x), 64):
            loss = torch.nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def quantized(digits_cnn, tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8")
    fp32 = export_onnx(digits_cnn, folder / "cnn.onnx", verify=False).path
    report = export_int8(fp32, folder / "cnn.int8.onnx", quantization_data((1, 8, 8), "digits"))
    return fp32, report


def test_conv_net_gets_static_qdq_quantisation(quantized):
    _, report = quantized
    assert report.method == "static"
    ops = {n.op_type for n in onnx.load(str(report.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops


def test_int8_accuracy_stays_close_to_float(quantized):
    _, report = quantized
    assert report.accuracy_fp32 is not None and report.accuracy_fp32 > 0.8
    assert report.accuracy_int8 >= report.accuracy_fp32 - 0.04
    assert report.agreement >= 0.93
    assert report.samples == len(load_data("digits", (1, 8, 8)).test)


def test_int8_report_accuracy_matches_onnxruntime(quantized):
    _, report = quantized
    test = load_data("digits", (1, 8, 8)).test
    x = np.stack([test[i][0].numpy() for i in range(len(test))])
    y = np.array([int(test[i][1]) for i in range(len(test))])
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    accuracy = float(np.mean(session.run(None, {"input": x})[0].argmax(1) == y))
    assert accuracy == pytest.approx(report.accuracy_int8)


def test_metadata_survives_quantisation(quantized):
    fp32, report = quantized
    before = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
    after = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    assert {k: v for k, v in after.items() if k.startswith("nnspec.")} == {
        k: v for k, v in before.items() if k.startswith("nnspec.")
    }


def test_linear_only_model_gets_dynamic_quantisation(tmp_path):
    model = build_model(copy.deepcopy(MLP)).eval()
    fp32 = export_onnx(model, tmp_path / "mlp.onnx", verify=False).path
    data = quantization_data((16,), None)
    report = export_int8(fp32, tmp_path / "mlp.int8.onnx", data)
    assert report.method == "dynamic"
    assert report.accuracy_fp32 is None and data.labels is None
    ops = {n.op_type for n in onnx.load(str(report.path)).graph.node}
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops
    x = data.evaluation
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})[0]
    # int8 rounding on an untrained net: close in shape, not bit-equal.
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.98
    assert np.mean(got.argmax(1) == want.argmax(1)) == pytest.approx(report.agreement)
    assert report.agreement >= 0.9


def test_random_calibration_follows_the_normalisation():
    data = quantization_data((3, 4, 4), None, ([10.0, 0.0, -5.0], [1.0, 2.0, 0.5]))
    means = data.calibration.mean(axis=(0, 2, 3))
    stds = data.calibration.std(axis=(0, 2, 3))
    np.testing.assert_allclose(means, [10.0, 0.0, -5.0], atol=0.15)
    np.testing.assert_allclose(stds, [1.0, 2.0, 0.5], rtol=0.1)


def test_cli_quantises_a_run_on_its_training_data(digits_cnn, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    spec = copy.deepcopy(SMALL_CNN)
    spec["train"] = {"data": "digits"}
    (run / "spec.yaml").write_text(yaml.safe_dump(spec))
    (run / "normalization.json").write_text(
        json.dumps({"mean": [4.0], "std": [5.0], "source": "spec"})
    )
    save_checkpoint(run / "checkpoints", "best", digits_cnn, None, {})
    out = tmp_path / "model.onnx"
    repo = tmp_path / "repo"
    code = main(
        [
            "export",
            str(run),
            "-o",
            str(out),
            "--no-verify",
            "--quantize",
            "int8",
            "--triton-repo",
            str(repo),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "from digits" in printed and "labelled samples: float32" in printed
    int8 = tmp_path / "model.int8.onnx"
    # The Triton repository serves the quantised model.
    assert (repo / "small_cnn" / "1" / "model.onnx").read_bytes() == int8.read_bytes()
