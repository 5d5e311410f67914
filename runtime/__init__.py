"""nnspec.runtime: the stages after the compiler, one package each.

    train/    a spec + data -> a resumable run directory (optimizers, schedules, data,
              checkpoints, evaluation, DDP under torchrun)
    export/   a run or spec -> ONNX with inference semantics, verified in onnxruntime
    serve/    ONNX models -> the Open Inference Protocol (KServe v2), and offline predict
    codegen/  a spec -> standalone PyTorch source; `nnspec new` families
    lab/      the lecture's tools: lint, init-stats, hessian, sweeps, experiments, reports
    cli/      the `nnspec` command line: the only place that prints and sets exit codes
    common/   the few helpers several stages share

Imports point one way (compiler <- train <- export <- serve; codegen and lab use compiler and
train; nothing imports cli), a contract checked by import-linter (see pyproject.toml).
"""
