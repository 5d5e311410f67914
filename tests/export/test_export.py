"""ONNX export: inference semantics, graph contract, metadata, parity, run directories, Triton."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from torch import nn

from nnspec.compiler import ExportError, UsageError, build_model, load_spec
from nnspec.runtime.cli import main
from nnspec.runtime.common.version import nnspec_version
from nnspec.runtime.export.exporter import dry_run_export, export_onnx
from nnspec.runtime.export.triton_repo import write_triton_repository
from nnspec.runtime.export.verify import verify_parity
from nnspec.runtime.train.checkpoint import save_checkpoint
from tests.export.fixtures import DIGIT_LABELS, DROPOUT_BN_NET, RESIDUAL_NET, SMALL_CNN, trained


def _ops(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _run(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _torch(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


def _raw_inputs(spec, batch: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (3.0 * rng.standard_normal((batch, *spec["input"]["shape"])) + 2.0).astype(np.float32)


@pytest.fixture(scope="module")
def cnn():
    return trained(SMALL_CNN)


@pytest.fixture(scope="module")
def cnn_export(cnn, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnn")
    result = export_onnx(cnn, folder / "model.onnx")
    return result


def test_graph_has_no_dropout_or_batchnorm(cnn_export):
    ops = _ops(cnn_export.path)
    assert "Dropout" not in ops and "BatchNormalization" not in ops
    assert "Conv" in ops


def test_one_input_one_output_with_dynamic_batch(cnn_export):
    graph = onnx.load(str(cnn_export.path)).graph
    assert [v.name for v in graph.input] == ["input"]
    assert [v.name for v in graph.output] == ["logits"]
    in_dims = graph.input[0].type.tensor_type.shape.dim
    out_dims = graph.output[0].type.tensor_type.shape.dim
    assert in_dims[0].dim_param == "batch" and out_dims[0].dim_param == "batch"
    assert [d.dim_value for d in in_dims[1:]] == [1, 8, 8]
    assert [d.dim_value for d in out_dims[1:]] == [10]


def test_file_is_self_contained_with_pinned_opset(cnn_export):
    model = onnx.load(str(cnn_export.path), load_external_data=False)
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer)
    assert sorted(p.name for p in cnn_export.path.parent.iterdir()) == ["model.onnx"]
    assert {o.domain: o.version for o in model.opset_import}[""] == 18


def test_metadata(cnn, cnn_export):
    props = {p.key: p.value for p in onnx.load(str(cnn_export.path)).metadata_props}
    assert props["nnspec.spec_name"] == "small_cnn"
    assert props["nnspec.spec_hash"] == cnn.spec.spec_hash
    assert props["nnspec.version"] == nnspec_version()
    assert json.loads(props["nnspec.labels"]) == DIGIT_LABELS
    assert json.loads(props["nnspec.normalize"]) == {"mean": [4.0], "std": [5.0]}
    assert props["nnspec.input_layout"] == "NCHW"


def test_parity_with_pytorch_at_two_batch_sizes(cnn, cnn_export):
    for batch in (1, 7):
        x = _raw_inputs(SMALL_CNN, batch)
        np.testing.assert_allclose(_run(cnn_export.path, x), _torch(cnn, x), rtol=1e-4, atol=1e-5)
    assert cnn_export.parity.max_abs_error <= cnn_export.parity.tolerance


def test_normalisation_is_inside_the_graph(cnn, cnn_export):
    x = _raw_inputs(SMALL_CNN, 4)
    # By hand: the same network fed pre-normalised data with its normalisation switched off.
    plain = copy.deepcopy(cnn)
    plain.set_normalization([0.0], [1.0])
    np.testing.assert_allclose(
        _run(cnn_export.path, x), _torch(plain, (x - 4.0) / 5.0), rtol=1e-4, atol=1e-5
    )


def test_output_of_one_sample_ignores_its_batch_mates(cnn_export):
    batch = _raw_inputs(SMALL_CNN, 6)
    together = _run(cnn_export.path, batch)
    alone = np.concatenate([_run(cnn_export.path, batch[i : i + 1]) for i in range(6)])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)
    other_mates = batch.copy()
    other_mates[1:] = 100.0
    np.testing.assert_allclose(
        _run(cnn_export.path, other_mates)[0], together[0], rtol=1e-5, atol=1e-6
    )


def test_export_is_deterministic(cnn, cnn_export, tmp_path):
    again = export_onnx(cnn, tmp_path / "again.onnx", verify=False)
    first, second = onnx.load(str(cnn_export.path)), onnx.load(str(again.path))
    assert [n.op_type for n in first.graph.node] == [n.op_type for n in second.graph.node]
    x = _raw_inputs(SMALL_CNN, 3)
    np.testing.assert_array_equal(_run(cnn_export.path, x), _run(again.path, x))


def test_no_fold_bn_keeps_inference_batchnorm(cnn, tmp_path):
    result = export_onnx(cnn, tmp_path / "bn.onnx", fold_bn=False)
    ops = _ops(result.path)
    assert "BatchNormalization" in ops and "Dropout" not in ops
    x = _raw_inputs(SMALL_CNN, 5)
    np.testing.assert_allclose(_run(result.path, x), _torch(cnn, x), rtol=1e-4, atol=1e-5)
    # Inference form: the node uses running statistics and has a single output.
    bn_nodes = [
        n for n in onnx.load(str(result.path)).graph.node if n.op_type == "BatchNormalization"
    ]
    assert all(len(n.output) == 1 for n in bn_nodes)


def test_residual_net_parity_with_unfoldable_batchnorms(tmp_path):
    model = trained(RESIDUAL_NET)
    result = export_onnx(model, tmp_path / "res.onnx")
    assert sorted(result.fold.affine) == ["in_bn", "post_bn", "skip_bn"]
    assert "BatchNormalization" not in _ops(result.path)
    x = _raw_inputs(RESIDUAL_NET, 3)
    np.testing.assert_allclose(_run(result.path, x), _torch(model, x), rtol=1e-4, atol=1e-5)


def test_training_head_and_dropout_are_not_exported(tmp_path):
    model = trained(DROPOUT_BN_NET)
    result = export_onnx(model, tmp_path / "heads.onnx")
    graph = onnx.load(str(result.path)).graph
    assert [v.name for v in graph.output] == ["logits"]
    assert {"Dropout", "BatchNormalization"}.isdisjoint(_ops(result.path))
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim[1:]] == [4]
    x = _raw_inputs(DROPOUT_BN_NET, 4)
    np.testing.assert_allclose(_run(result.path, x), _torch(model, x), rtol=1e-4, atol=1e-5)


TWO_INPUTS = {
    "nnspec": 1,
    "name": "two_inputs",
    "inputs": {"image": {"shape": [1, 8, 8]}, "meta": {"shape": [4]}},
    "network": [
        {"id": "conv", "conv": {"out": 4, "kernel": 3}, "from": "image"},
        {"id": "bn", "batchnorm": {}},
        {"id": "pool", "global_avg_pool": {}},
        {"id": "cat", "concat": {}, "from": ["pool", "meta"]},
        {"linear": {"out": 3}},
    ],
}


def test_named_inputs_share_the_dynamic_batch(tmp_path):
    model = build_model(copy.deepcopy(TWO_INPUTS)).eval()
    result = export_onnx(model, tmp_path / "two.onnx")
    graph = onnx.load(str(result.path)).graph
    dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in graph.input
    }
    assert dims == {"image": ["batch", 1, 8, 8], "meta": ["batch", 4]}
    rng = np.random.default_rng(0)
    image = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    meta = rng.standard_normal((5, 4)).astype(np.float32)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": image, "meta": meta})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(image), torch.from_numpy(meta)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def cnn_fixed(cnn, tmp_path_factory):
    """Fixed batch 4 at opset 20: one export for both options, to keep the suite fast."""
    return export_onnx(cnn, tmp_path_factory.mktemp("fixed") / "b4.onnx", opset=20, batch=4)


def test_fixed_batch_size(cnn, cnn_fixed):
    dims = onnx.load(str(cnn_fixed.path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [4, 1, 8, 8]
    x = _raw_inputs(SMALL_CNN, 4)
    np.testing.assert_allclose(_run(cnn_fixed.path, x), _torch(cnn, x), rtol=1e-4, atol=1e-5)


def test_requested_opset_is_pinned(cnn_fixed):
    model = onnx.load(str(cnn_fixed.path))
    assert {o.domain: o.version for o in model.opset_import}[""] == 20


def test_opset_older_than_the_exporter_is_refused_up_front(cnn, tmp_path):
    # torch's dynamo exporter would silently write opset 18 instead.
    with pytest.raises(UsageError, match="--opset 17 is out of range"):
        export_onnx(cnn, tmp_path / "o17.onnx", opset=17)
    assert not (tmp_path / "o17.onnx").exists()


def test_opset_the_exporter_fails_to_convert_to_is_refused(tmp_path):
    # Gelu entered ai.onnx at opset 20; converting it to 26 fails inside the exporter, which
    # then writes its native opset 18 and says nothing.
    spec = {
        "nnspec": 1,
        "name": "gelu_net",
        "input": {"shape": [4]},
        "network": [{"linear": {"out": 8}}, "gelu", {"linear": {"out": 2}}],
    }
    with pytest.raises(ExportError, match="wrote ai.onnx opset 18, not the requested 26"):
        export_onnx(build_model(spec), tmp_path / "g.onnx", opset=26)
    assert not (tmp_path / "g.onnx").exists()


def test_parity_mismatch_is_an_export_error_with_figures(cnn, cnn_export):
    other = copy.deepcopy(cnn)
    with torch.no_grad():
        other.get_submodule("linear1").bias.add_(1.0)
    with pytest.raises(ExportError, match=r"max abs error 1 > tolerance"):
        verify_parity(cnn_export.path, other)


def test_verification_catches_a_wrong_fold_and_removes_the_file(cnn, tmp_path, monkeypatch):
    import nnspec.runtime.export.exporter as export_module
    from nnspec.runtime.export.fold_bn import fold_batchnorm

    def bad_fold(model):
        folded = fold_batchnorm(model)
        with torch.no_grad():
            folded.get_submodule("conv2").bias.add_(0.5)  # a folding bug: wrong shift
        return folded

    monkeypatch.setattr(export_module, "fold_batchnorm", bad_fold)
    path = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="max abs error .* > tolerance") as info:
        export_onnx(cnn, path)
    assert info.value.exit_code == 1
    assert not path.exists()


class _Unexportable(nn.Module):
    """An operator torch's ONNX exporter has no translation for."""

    def forward(self, x):
        return torch.special.zeta(x, x)


def test_dry_run_names_an_operator_the_opset_lacks(cnn, monkeypatch):
    import nnspec.compiler

    broken = copy.deepcopy(cnn)
    broken.replace_node_module("relu1", _Unexportable())
    monkeypatch.setattr(nnspec.compiler, "build_model", lambda spec: broken)
    with pytest.raises(ExportError, match="zeta") as info:
        dry_run_export(load_spec(copy.deepcopy(SMALL_CNN)))
    assert "operator(s): prims.zeta" in str(info.value)


def _write_run(folder, model, spec_dict, normalization):
    folder.mkdir()
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec_dict))
    (folder / "normalization.json").write_text(json.dumps(normalization))
    save_checkpoint(folder / "checkpoints", "best", model, None, {"step": 8})
    return folder


def test_cli_exports_a_run_directory(cnn, tmp_path, capsys):
    run = _write_run(tmp_path / "run", cnn, SMALL_CNN, {"mean": [2.0], "std": [3.0]})
    out = tmp_path / "exported.onnx"
    assert main(["export", str(run), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max abs error" in printed and "2 batch norm(s) folded" in printed
    # The run's weights and its normalisation.json (not the spec's) are in the graph.
    x = _raw_inputs(SMALL_CNN, 3)
    reference = copy.deepcopy(cnn)
    reference.set_normalization([2.0], [3.0])
    np.testing.assert_allclose(_run(out, x), _torch(reference, x), rtol=1e-4, atol=1e-5)


def test_export_finishes_a_checkpoint_save_a_crash_interrupted(cnn, tmp_path, capsys):
    run = _write_run(tmp_path / "run", cnn, SMALL_CNN, None)
    weights = run / "checkpoints" / "best.safetensors"
    # the state a kill between "committed" and "renamed" leaves: the new file under its temp name
    weights.rename(weights.with_name(weights.name + ".new"))
    assert main(["export", str(run), "-o", str(tmp_path / "m.onnx")]) == 0
    assert weights.is_file()
    np.testing.assert_allclose(_run(tmp_path / "m.onnx", _raw_inputs(SMALL_CNN, 2)),
                               _torch(cnn, _raw_inputs(SMALL_CNN, 2)), rtol=1e-4, atol=1e-5)


def test_cli_reports_a_missing_checkpoint(cnn, tmp_path, capsys):
    run = _write_run(tmp_path / "run", cnn, SMALL_CNN, None)
    assert main(["export", str(run), "--checkpoint", "last", "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "no 'last' checkpoint" in err and "best" in err


def test_weights_that_do_not_fit_are_refused(tmp_path):
    from nnspec.runtime.export.exporter import build_for_export, locate_model_files

    other = trained(DROPOUT_BN_NET)
    weights = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file(other.state_dict(), str(weights))
    files = locate_model_files("unused.yaml", weights=weights)
    with pytest.raises(UsageError, match="do not fit") as info:
        build_for_export(load_spec(copy.deepcopy(SMALL_CNN)), files)
    assert "missing" in str(info.value) and "unexpected" in str(info.value)


def test_cli_rejects_a_bad_batch_argument(tmp_path, capsys):
    assert main(["export", "whatever.yaml", "--batch", "zero"]) == 2
    assert "--batch expects a positive integer" in capsys.readouterr().err


def test_triton_repository_parses_as_triton_model_config(cnn_export, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    model_dir = write_triton_repository(
        cnn_export.path, tmp_path / "repo", "small_cnn", max_batch_size=16, labels=DIGIT_LABELS
    )
    config = text_format.Parse(
        (model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert config.name == "small_cnn" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 16
    assert config.HasField("dynamic_batching")
    (inp,) = config.input
    (out,) = config.output
    assert (inp.name, list(inp.dims), inp.data_type) == (
        "input",
        [1, 8, 8],
        model_config_pb2.TYPE_FP32,
    )
    assert (out.name, list(out.dims), out.data_type) == ("logits", [10], model_config_pb2.TYPE_FP32)
    labels = (model_dir / out.label_filename).read_text().splitlines()
    assert labels == DIGIT_LABELS
    copied = model_dir / "1" / "model.onnx"
    assert copied.read_bytes() == cnn_export.path.read_bytes()


def test_triton_repository_needs_a_dynamic_batch(cnn_fixed, tmp_path):
    with pytest.raises(ExportError, match="dynamic batch"):
        write_triton_repository(cnn_fixed.path, tmp_path / "repo", "fixed")
