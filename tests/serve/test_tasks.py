"""Predict and serve answer per task from the exported metadata, convert images by the input
contract, and refuse inputs that contradict it (exit 2 / HTTP 400)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from nnspec.compiler import build_model, load_spec
from nnspec.runtime.cli import main
from nnspec.runtime.export.exporter import export_onnx
from nnspec.runtime.export.metadata import read_model_record
from tests.serve.fixtures import onnxruntime_reference, running_server, serving

MULTILABEL = {
    "nnspec": 1, "name": "tags",
    "input": {"shape": [3, 8, 8], "range": [0, 255]},
    "task": {"type": "multilabel", "threshold": [0.3, 0.5, 0.7]},
    "labels": ["red", "green", "blue"],
    "network": [{"conv": {"out": 4, "kernel": 3, "padding": 1}}, "relu", "global_avg_pool",
                {"linear": {"out": 3}}],
}  # fmt: skip
SEGMENTER = {
    "nnspec": 1, "name": "seg",
    "input": {"shape": [1, 8, 8], "range": [0, 1],
              "preprocess": {"resize": 10, "center_crop": 8}},
    "task": "segmentation", "labels": ["ground", "thing"],
    "network": [{"conv": {"out": 2, "kernel": 3, "padding": 1}}],
}  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    paths = {}
    for spec in (MULTILABEL, SEGMENTER):
        model = build_model(spec, seed=1)
        paths[spec["name"]] = export_onnx(model, folder / f"{spec['name']}.onnx",
                                          verify=False).path  # fmt: skip
    return paths


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _sigmoid(x):
    return 1 / (1 + np.exp(-x.astype(np.float64)))


def test_the_metadata_records_task_labels_and_input_contract(models):
    props = {p.key: p.value for p in onnx.load(str(models["seg"])).metadata_props}
    assert json.loads(props["nnspec.task"]) == {"type": "segmentation", "ignore_index": 255,
                                                "classes": 2}  # fmt: skip
    record = read_model_record(props)
    assert record.labels == ["ground", "thing"]
    contract = record.inputs["input"]
    assert contract.range == [0.0, 1.0] and contract.preprocess.resize == 10
    assert contract.preprocess.center_crop == 8
    old = read_model_record({"nnspec.labels": '["a"]'})  # exported before tasks existed
    assert old.task_type == "classification" and old.inputs == {}


def test_predict_gives_label_sets_at_each_labels_threshold(models, tmp_path, capsys):
    x = np.random.default_rng(0).uniform(0, 255, size=(4, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", str(models["tags"]), str(tmp_path / "x.npy"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (logits,) = onnxruntime_reference(models["tags"], {"input": x})
    probabilities = _sigmoid(logits)
    assert out["task"] == "multilabel"
    for row, prediction in zip(probabilities, out["predictions"], strict=True):
        present = [name for name, p, t in zip(["red", "green", "blue"], row, [0.3, 0.5, 0.7],
                                              strict=True) if p >= t]  # fmt: skip
        assert prediction["labels"] == present
        np.testing.assert_allclose([s["probability"] for s in prediction["scores"]], row,
                                   rtol=1e-5)  # fmt: skip


def test_predict_writes_masks_of_images_preprocessed_as_in_training(models, tmp_path, capsys):
    from nnspec.runtime.train.data import load_data

    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, size=(13, 17), dtype=np.uint8)
    (tmp_path / "folder" / "images").mkdir(parents=True)
    (tmp_path / "folder" / "masks").mkdir()
    Image.fromarray(picture).save(tmp_path / "folder" / "images" / "p.png")
    Image.fromarray(np.zeros((13, 17), np.uint8)).save(tmp_path / "folder" / "masks" / "p.png")
    masks = tmp_path / "out"
    assert main(["predict", str(models["seg"]), str(tmp_path / "folder" / "images" / "p.png"),
                 "--mask-dir", str(masks)]) == 0  # fmt: skip
    assert f"mask -> {masks / 'p.mask.png'}" in capsys.readouterr().out
    spec = load_spec(SEGMENTER)
    splits = load_data(str(tmp_path / "folder"), spec.input, 0, 0, task="segmentation")
    sample = splits.train[0][0].numpy()  # what training would have fed the model
    (logits,) = onnxruntime_reference(models["seg"], {"input": sample[None]})
    written = Image.open(masks / "p.mask.png")
    assert written.mode == "P" and written.size == (8, 8)
    np.testing.assert_array_equal(np.asarray(written), logits[0].argmax(0))


def test_predict_refuses_arrays_outside_the_input_range(models, tmp_path, capsys):
    np.save(tmp_path / "big.npy", np.full((1, 8, 8), 3.0, np.float32))
    assert main(["predict", str(models["seg"]), str(tmp_path / "big.npy")]) == 2
    err = capsys.readouterr().err
    assert "holds values in [3, 3], outside the model's input range [0, 1]" in err
    assert "Traceback" not in err


def test_serve_adds_the_tasks_outputs(models):
    import tritonclient.http as httpclient

    x = np.random.default_rng(1).uniform(0, 255, size=(3, 3, 8, 8)).astype(np.float32)
    (logits,) = onnxruntime_reference(models["tags"], {"input": x})
    with running_server(models["tags"]) as url:
        client = httpclient.InferenceServerClient(url)
        outputs = [o["name"] for o in client.get_model_metadata("tags")["outputs"]]
        assert outputs == ["logits", "probabilities", "predictions"]
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        result = client.infer("tags", [tensor])
        np.testing.assert_allclose(result.as_numpy("logits"), logits, rtol=1e-5)
        np.testing.assert_allclose(result.as_numpy("probabilities"), _sigmoid(logits), rtol=1e-5)
        np.testing.assert_array_equal(result.as_numpy("predictions"),
                                      _sigmoid(logits) >= np.array([0.3, 0.5, 0.7]))  # fmt: skip
        client.close()


def test_serve_takes_image_files_and_refuses_contract_violations(models):
    import httpx
    import tritonclient.http as httpclient

    rng = np.random.default_rng(2)
    pictures = [rng.integers(0, 256, size=(12, 9), dtype=np.uint8) for _ in range(2)]
    encoded = [_png(p) for p in pictures]
    spec = load_spec(SEGMENTER)
    from nnspec.runtime.common.images import image_to_input, open_image

    expected = np.stack([image_to_input(open_image(e), spec.input) for e in encoded])
    (logits,) = onnxruntime_reference(models["seg"], {"input": expected})
    with serving(models["seg"]) as endpoints:
        url = endpoints.http
        client = httpclient.InferenceServerClient(url)
        tensor = httpclient.InferInput("input", [2], "BYTES")
        tensor.set_data_from_numpy(np.array(encoded, dtype=np.object_), binary_data=True)
        result = client.infer("seg", [tensor])
        np.testing.assert_array_equal(result.as_numpy("mask"), logits.argmax(1))
        client.close()
        import tritonclient.grpc as triton_grpc

        grpc_client = triton_grpc.InferenceServerClient(endpoints.grpc)
        tensor = triton_grpc.InferInput("input", [2], "BYTES")
        tensor.set_data_from_numpy(np.array(encoded, dtype=np.object_))
        result = grpc_client.infer("seg", [tensor])
        np.testing.assert_array_equal(result.as_numpy("mask"), logits.argmax(1))
        bad = triton_grpc.InferInput("input", [1, 1, 8, 8], "FP32")
        bad.set_data_from_numpy(np.full((1, 1, 8, 8), 5.0, np.float32))
        with pytest.raises(Exception, match="outside the model's input range"):
            grpc_client.infer("seg", [bad])
        grpc_client.close()
        body = {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES",
                            "data": [base64.b64encode(encoded[0]).decode()]}],
                "outputs": [{"name": "mask"}]}  # fmt: skip
        answer = httpx.post(f"http://{url}/v2/models/seg/infer", json=body).json()
        assert answer["outputs"][0]["data"] == logits[0].argmax(0).ravel().tolist()
        for value, message in ((5.0, "holds values in [5, 5], outside the model's input range "
                                     "[0, 1]"), ("NaN", "not finite")):  # fmt: skip
            data = [value] * 64
            bad = {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                               "data": data}]}  # fmt: skip
            response = httpx.post(f"http://{url}/v2/models/seg/infer",
                                  content=json.dumps(bad).replace('"NaN"', "NaN"))  # fmt: skip
            assert response.status_code == 400 and message in response.json()["error"]
        broken = {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES",
                              "data": [base64.b64encode(b"not an image").decode()]}]}  # fmt: skip
        response = httpx.post(f"http://{url}/v2/models/seg/infer", json=broken)
        assert response.status_code == 400 and "cannot be read as an image" in \
            response.json()["error"]


@pytest.mark.slow
def test_a_png_of_a_bundled_digit_is_classified_as_its_array(tmp_path, capsys):
    """The README's digits model: a digit saved as an 8-bit PNG (0..16 scaled to 0..255) is
    read back into the model's range [0, 16] and classified as the array itself is."""
    from nnspec.runtime.train.data import digits_arrays
    from nnspec.runtime.train.trainer import TrainOptions, train

    torch.set_num_threads(1)
    run = tmp_path / "run"
    train(load_spec("specs/digits_cnn.yaml"),
          TrainOptions(out=run, epochs=3, progress=False, device="cpu"), lambda _: None)  # fmt: skip
    assert main(["export", str(run), "-o", str(tmp_path / "digits.onnx"), "--no-verify"]) == 0
    capsys.readouterr()
    x, y = digits_arrays()
    chosen = x[-12:]
    np.save(tmp_path / "digits.npy", chosen)
    pngs = []
    for i, digit in enumerate(chosen):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(np.round(digit[0] * 255 / 16).astype(np.uint8), "L").save(path)
        pngs.append(str(path))
    model = str(tmp_path / "digits.onnx")
    assert main(["predict", model, str(tmp_path / "digits.npy"), "--top-k", "1", "--json"]) == 0
    from_arrays = [p["top"][0]["index"] for p in json.loads(capsys.readouterr().out)["predictions"]]
    assert main(["predict", model, *pngs, "--top-k", "1", "--json"]) == 0
    from_pngs = [p["top"][0]["index"] for p in json.loads(capsys.readouterr().out)["predictions"]]
    assert from_pngs == from_arrays
    assert np.mean(np.array(from_arrays) == y[-12:]) >= 0.75
