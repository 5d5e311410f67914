"""`nnspec predict`: images and arrays in, labels with softmax probabilities out."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from nnspec.runtime.cli import main
from nnspec.runtime.export.exporter import export_onnx
from tests.export.fixtures import DIGIT_LABELS, SMALL_CNN, trained


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = trained(SMALL_CNN)
    path = export_onnx(model, tmp_path_factory.mktemp("predict") / "cnn.onnx", verify=False).path
    return model, path


def _softmax(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.double(), dim=1).numpy()


def _predict_json(capsys, *args) -> dict:
    assert main(["predict", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_npy_batch_gives_softmax_of_the_model(exported, tmp_path, capsys):
    model, path = exported
    x = np.random.default_rng(0).uniform(0, 16, size=(3, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "batch.npy", x)
    out = _predict_json(capsys, path, tmp_path / "batch.npy", "--top-k", "3")
    with torch.no_grad():
        want = _softmax(model(torch.from_numpy(x)))
    assert [p["input"] for p in out["predictions"]] == [
        f"{tmp_path / 'batch.npy'}[{i}]" for i in range(3)
    ]
    for row, prediction in zip(want, out["predictions"], strict=True):
        top = prediction["top"]
        assert len(top) == 3
        assert [t["index"] for t in top] == list(np.argsort(-row)[:3])
        assert [t["label"] for t in top] == [DIGIT_LABELS[t["index"]] for t in top]
        np.testing.assert_allclose(
            [t["probability"] for t in top], np.sort(row)[::-1][:3], rtol=1e-4
        )


def test_image_files_are_scaled_to_unit_range(exported, tmp_path, capsys):
    model, path = exported
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(pixels, mode="L").save(tmp_path / "gray.png")
    # The same picture as RGB with equal channels must be read as the same grey image.
    Image.fromarray(np.stack([pixels] * 3, axis=-1), mode="RGB").save(tmp_path / "rgb.png")
    out = _predict_json(capsys, path, tmp_path / "gray.png", tmp_path / "rgb.png", "--top-k", "10")
    with torch.no_grad():
        want = _softmax(model(torch.from_numpy(pixels / 255.0).float().view(1, 1, 8, 8)))[0]
    for prediction in out["predictions"]:
        got = {t["index"]: t["probability"] for t in prediction["top"]}
        np.testing.assert_allclose([got[i] for i in range(10)], want, rtol=1e-4)


def test_npz_arrays_and_text_output(exported, tmp_path, capsys):
    _, path = exported
    np.savez(
        tmp_path / "x.npz", a=np.zeros((1, 8, 8), np.float32), b=np.ones((2, 1, 8, 8), np.float32)
    )
    assert main(["predict", str(path), str(tmp_path / "x.npz"), "--top-k", "2"]) == 0
    text = capsys.readouterr().out
    assert f"{tmp_path / 'x.npz'}:a" in text and f"{tmp_path / 'x.npz'}:b[1]" in text
    assert text.count("%") == 2 * 3


def test_image_of_another_size_is_resized_as_training_resizes_it(exported, tmp_path, capsys):
    """Without a `preprocess`, images are resized to the input's size, in predict as in the
    training data sources: the same file gives the same sample both ways."""
    from nnspec.runtime.train.data import load_data

    model, path = exported
    pixels = ((np.arange(80).reshape(8, 10) * 3) % 256).astype(np.uint8)
    (tmp_path / "folder" / "a").mkdir(parents=True)
    (tmp_path / "folder" / "b").mkdir()
    Image.fromarray(pixels, mode="L").save(tmp_path / "folder" / "a" / "wide.png")
    Image.fromarray(pixels, mode="L").save(tmp_path / "folder" / "b" / "wide.png")
    out = _predict_json(capsys, path, tmp_path / "folder" / "a" / "wide.png", "--top-k", "10")
    resized = np.asarray(Image.fromarray(pixels, mode="L").resize((8, 8), Image.BILINEAR))
    with torch.no_grad():
        want = _softmax(model(torch.from_numpy(resized / 255.0).float().view(1, 1, 8, 8)))[0]
    got = {t["index"]: t["probability"] for t in out["predictions"][0]["top"]}
    np.testing.assert_allclose([got[i] for i in range(10)], want, rtol=1e-4)
    splits = load_data(str(tmp_path / "folder"), (1, 8, 8), val_fraction=0, test_fraction=0)
    np.testing.assert_array_equal(splits.train[0][0].numpy()[0], resized / np.float32(255.0))


def test_array_of_the_wrong_shape_is_a_clear_error(exported, tmp_path, capsys):
    _, path = exported
    np.save(tmp_path / "bad.npy", np.zeros((2, 8, 8), np.float32))
    assert main(["predict", str(path), str(tmp_path / "bad.npy")]) == 2
    assert "has shape [2, 8, 8]; the model takes [1, 8, 8]" in capsys.readouterr().err


def test_malformed_onnx_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf \xff\xfe" * 10)
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), np.float32))
    assert main(["predict", str(bad), str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert "not a valid ONNX model" in err and "Traceback" not in err


def test_external_data_outside_the_model_folder_is_refused(exported, tmp_path, capsys):
    _, path = exported
    model = onnx.load(str(path))
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 4096)
    tensor = model.graph.initializer[0]
    onnx.external_data_helper.set_external_data(tensor, location="../secret.bin")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    (tmp_path / "models").mkdir()
    crafted = tmp_path / "models" / "crafted.onnx"
    onnx.save(model, str(crafted))
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), np.float32))
    assert main(["predict", str(crafted), str(tmp_path / "x.npy")]) == 2
    assert "outside the model's folder" in capsys.readouterr().err


def test_provider_that_is_not_available_is_a_clear_error(exported, tmp_path, capsys):
    _, path = exported
    missing = [
        name
        for name, ep in (
            ("tensorrt", "TensorrtExecutionProvider"),
            ("cuda", "CUDAExecutionProvider"),
        )
        if ep not in ort.get_available_providers()
    ]
    if not missing:
        pytest.skip("this onnxruntime offers every provider, so none can be missing")
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), np.float32))
    assert main(["predict", str(path), str(tmp_path / "x.npy"), "--provider", missing[0]]) == 2
    assert f"provider {missing[0]!r} is not available" in capsys.readouterr().err
