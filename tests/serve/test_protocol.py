"""Tensor (de)serialisation, classification strings, and finding models on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, save
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from nnspec.compiler.errors import ServeError
from nnspec.runtime.serve.inference import (
    ApiError,
    classify,
    deserialize_bytes,
    serialize_bytes,
)
from nnspec.runtime.serve.protocol import parse_infer_request
from tests.serve.fixtures import make_conv_model, make_two_input_model, open_registry
from tests.serve.fixtures import open_models as load_models


def test_bytes_layout_matches_tritonclient():
    words = np.array([b"cat", b"", "h\u00e9".encode(), b"x" * 300], dtype=object)
    ours = serialize_bytes(words)
    assert ours == serialize_byte_tensor(words).item()
    assert list(deserialize_bytes_tensor(ours)) == list(words)
    assert deserialize_bytes(ours, "t") == list(words)


def test_truncated_bytes_are_a_400():
    with pytest.raises(Exception, match="runs past the end") as info:
        deserialize_bytes(b"\x05\x00\x00\x00abc", "input 't'")
    assert info.value.status == 400


def test_classification_strings_by_hand():
    scores = np.array([[0.1, 0.7, 0.7, 0.2], [5.0, -1.0, 0.0, 2.5]], dtype=np.float32)
    got = classify(scores, 3, ["a", "b"], batched=True)
    # Ties keep the lower index first; classes past the label list have no label.
    assert got.tolist() == [
        ["0.700000:1:b", "0.700000:2", "0.200000:3"],
        ["5.000000:0:a", "2.500000:3", "0.000000:2"],
    ]
    counts = np.array([[3, 9, 1]], dtype=np.int64)
    assert classify(counts, 10, None, batched=True).tolist() == [["9:1", "3:0", "1:2"]]


def test_finds_files_folders_and_triton_repositories(tmp_path):
    make_conv_model(tmp_path / "flat.onnx")
    repo = tmp_path / "repo"
    for version in ("1", "3"):
        (repo / "pair" / version).mkdir(parents=True)
        make_two_input_model(repo / "pair" / version / "model.onnx")
    (repo / "pair" / "config.pbtxt").write_text(
        'name: "pair"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 4\n'
        'output [{ name: "y" data_type: TYPE_FP32 dims: [3] label_filename: "labels.txt" }]\n'
    )
    (repo / "pair" / "labels.txt").write_text("left\nmiddle\nright\n")
    make_conv_model(repo / "tiny.onnx", labels=None)

    single = load_models(tmp_path / "flat.onnx", max_batch_size=16)
    assert list(single) == ["flat"] and single["flat"].max_batch_size == 16
    assert single["flat"].labels[:2] == ["digit0", "digit1"]

    models = load_models(repo, max_batch_size=16)
    assert sorted(models) == ["pair", "tiny"]
    assert models["pair"].version == "3"  # the highest version folder
    assert models["pair"].max_batch_size == 4  # config.pbtxt lowers the server's 16
    assert models["pair"].labels == ["left", "middle", "right"]
    assert models["tiny"].labels is None

    one = load_models(repo / "pair", max_batch_size=16)  # one model's folder
    assert list(one) == ["pair"] and one["pair"].version == "3"


def test_model_without_free_batch_dimension_is_never_merged(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(tmp_path / "fixed.onnx"))
    served = load_models(tmp_path / "fixed.onnx", max_batch_size=32)["fixed"]
    assert not served.batchable and served.max_batch_size == 1
    assert served.metadata()["inputs"][0]["shape"] == [2, 3]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p / "missing.onnx", "does not exist"),
        (lambda p: (p / "notes.txt").write_text("hi") and p / "notes.txt", "expected an .onnx"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no models in"),
        (lambda p: (p / "bad.onnx").write_bytes(b"not a model") and p / "bad.onnx", "cannot load"),
    ],
)
def test_unusable_model_paths_are_serve_errors(tmp_path, make, words):
    with pytest.raises(ServeError, match=words):
        open_registry(make(tmp_path))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
tensor_entries = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["a", "b", "c"]) | json_values,
        "datatype": st.sampled_from(["FP32", "INT64", "FP64", "BYTES"]) | json_values,
        "shape": st.lists(st.integers(-2, 4), max_size=3) | json_values,
    },
    optional={
        "data": st.lists(st.integers(-3, 3) | st.floats(allow_nan=False), max_size=12)
        | json_values,
        "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-1, 30)})
        | json_values,
    },
)
requests = st.fixed_dictionaries(
    {"inputs": st.lists(tensor_entries, max_size=3) | json_values},
    optional={
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["y", "positive", "z"]) | json_values},
                optional={"parameters": json_values},
            ),
            max_size=2,
        )
        | json_values,
        "parameters": json_values,
        "id": json_values,
    },
)


@pytest.fixture(scope="module")
def pair_model(tmp_path_factory):
    path = make_two_input_model(tmp_path_factory.mktemp("pair") / "pair.onnx")
    return load_models(path, max_batch_size=8)["pair"]


@settings(max_examples=150, deadline=None)
@given(payload=requests | json_values, tail=st.binary(max_size=24), cut=st.integers(-5, 400))
def test_any_request_is_accepted_or_refused_with_a_4xx(pair_model, payload, tail, cut):
    """No request body makes the parser fail with anything but a 4xx ApiError."""
    header = json.dumps(payload).encode()
    for body, length in ((header, None), (header + tail, len(header)), (header + tail, cut)):
        try:
            parsed = parse_infer_request(pair_model, body, length)
        except ApiError as error:
            assert 400 <= error.status < 500 and error.message
        else:
            assert set(parsed.inputs) == {"a", "b"} and parsed.rows >= 1
            shapes = {a.shape for a in parsed.inputs.values()}
            assert len(shapes) == 1 and all(len(s) == 2 and s[1] == 3 for s in shapes)
