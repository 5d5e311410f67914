"""nnspec.runtime.export: a trained run (or a spec) becomes ONNX with inference semantics.

    from nnspec.runtime.export import export_onnx, read_normalization
    result = export_onnx(model, "model.onnx")      # folds BN, verifies in onnxruntime
    result.max_abs_diff

Public API:
    export_onnx(model, path, opset=, batch=, fold_bn=, verify=) -> ExportResult
    build_for_export(source, ...)            a run dir / spec / weights -> model to export
    fold_batchnorm(model)                    batch norms folded into the convs before them
    verify_parity(model, path, ...)          onnxruntime vs PyTorch on random inputs
    quantize_int8 / export_int8              static int8 quantisation with a parity report
    write_triton_repository(...)             a Triton/KServe model repository
    read_model_record(props) -> ModelRecord  the nnspec.* metadata record (task, labels,
                                             input contracts) that predict and serve read
    locate_model_files(run_or_spec, ...)     a run directory's spec, weights, normalisation
    resolve_providers(name)                  onnxruntime execution providers for cpu/cuda/tensorrt
"""

from nnspec.runtime.common.lazy import lazy_exports

_EXPORTS = {
    "export_onnx": "exporter", "ExportResult": "exporter", "build_for_export": "exporter",
    "dry_run_export": "exporter", "is_run_dir": "run_files", "load_weights": "exporter",
    "locate_model_files": "run_files",
    "read_normalization": "exporter",
    "read_model_record": "metadata", "ModelRecord": "metadata",
    "fold_batchnorm": "fold_bn", "plan_batchnorm_folding": "fold_bn",
    "verify_parity": "verify", "check_onnx_file": "verify",
    "quantize_int8": "quantize", "export_int8": "quantize",
    "write_triton_repository": "triton_repo", "labels_from_metadata": "metadata",
    "resolve_providers": "providers",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
