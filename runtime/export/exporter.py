"""Export a compiled model to ONNX with inference semantics, and check the result.

The steps, in order: eval mode (dropout is the identity, batch norm uses running statistics,
training-only heads are skipped), optional batch-norm folding on a copy, torch's dynamo-based
exporter with a pinned opset and a dynamic batch dimension, nnspec metadata, a single
self-contained file, then onnx.checker and an onnxruntime-vs-PyTorch parity check.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nnspec.compiler.errors import ExportError, UsageError
from nnspec.runtime.export.fold_bn import FoldPlan, fold_batchnorm, plan_batchnorm_folding
from nnspec.runtime.export.metadata import INPUTS, LABELS, NORMALIZE, TASK
from nnspec.runtime.export.run_files import (  # noqa: F401 (their home before run_files.py)
    CHECKPOINTS,
    RunFiles,
    is_run_dir,
    locate_model_files,
)
from nnspec.runtime.export.verify import ParityReport, check_onnx_file, verify_parity

DEFAULT_OPSET = 18
# torch's dynamo exporter has no translations below 18 (it silently writes 18 instead).
MIN_OPSET = 18
OUTPUT_NAME = "logits"  # the default of the spec's `output_name`
BATCH_DIM = "batch"
# ONNX's protobuf limit: beyond it weights must go to an external data file.
SINGLE_FILE_LIMIT = 2 * 1024**3
# Per-sample rank -> layout of the batched input, for clients that build tensors.
LAYOUTS = {1: "NC", 2: "NCL", 3: "NCHW", 4: "NCDHW"}
# Ops that must not survive into an inference graph (BatchNormalization only when folding).
TRAINING_OPS = ("Dropout",)
FOLDED_OPS = ("BatchNormalization",)


@dataclass(frozen=True)
class ExportResult:
    """What `export_onnx` wrote and what it checked."""

    path: Path
    opset: int
    op_counts: dict[str, int]
    fold: FoldPlan | None
    parity: ParityReport | None

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a safetensors state_dict into `model`, refusing any missing or extra tensor.

    Raises:
        UsageError: the file is unreadable or does not fit the model.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise UsageError(f"cannot read weights {str(path)!r}: {error}") from error
    expected = model.state_dict()
    problems = {
        "missing": sorted(expected.keys() - state.keys()),
        "unexpected": sorted(state.keys() - expected.keys()),
        "wrong shape": [
            f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
            for k, v in state.items()
            if k in expected and v.shape != expected[k].shape
        ],
    }
    if any(problems.values()):
        details = [
            f"    {title}: "
            + ", ".join(keys[:5])
            + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
            for title, keys in problems.items()
            if keys
        ]
        raise UsageError(
            f"weights {str(path)!r} do not fit the spec's model\n" + "\n".join(details)
        )
    model.load_state_dict(state)


def read_normalization(path: str | Path) -> tuple[list[float], list[float]] | None:
    """(mean, std) from a run's `normalization.json`, or None when it records none.

    Raises:
        UsageError: the file holds something else.
    """
    data = json.loads(Path(path).read_text())
    # Training writes {"mean": null, "std": null, "source": "none"} for a spec without one.
    if not data or data.get("mean") is None:
        return None
    try:
        return [float(v) for v in data["mean"]], [float(v) for v in data["std"]]
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(
            f"{path}: expected {{'mean': [...], 'std': [...]}}, got {json.dumps(data)[:200]}"
        ) from error


def build_for_export(spec, files: RunFiles) -> nn.Module:
    """The CompiledModel of `spec` with the run's weights, normalisation and task state (a
    regression model trained on standardised targets answers in the targets' units), in eval
    mode.

    Raises:
        SpecError: the network's output cannot serve the spec's task (located).
    """
    from nnspec.compiler import build_model
    from nnspec.compiler.errors import SpecError
    from nnspec.compiler.task_check import output_task_problems
    from nnspec.runtime.train.evaluate import read_task_state
    from nnspec.runtime.train.tasks import make_task

    model = build_model(spec)
    problems = output_task_problems(model.graph)
    if problems:
        raise SpecError(problems)
    if files.weights is not None:
        load_weights(model, files.weights)
    if files.normalization is not None:
        stats = read_normalization(files.normalization)
        if stats is not None:
            model.set_normalization(*stats)
    if files.run_dir is not None:
        task = make_task(spec, model.graph.output_shape)
        task.restore(read_task_state(files.run_dir))
        task.prepare_model(model)
    return model.eval()


def onnx_metadata(model: nn.Module) -> dict[str, str]:
    """The `nnspec.*` metadata_props an exported model carries (serve and predict read them)."""
    from nnspec.runtime.common.version import nnspec_version
    from nnspec.runtime.train.tasks import make_task

    spec = model.spec
    stats = model_normalization(model)
    normalize = None if stats is None else {"mean": stats[0], "std": stats[1]}
    task = make_task(spec, model.graph.output_shape)
    contracts = {name: contract.model_dump(mode="json")
                 for name, contract in spec.input_specs.items()}  # fmt: skip
    props = {
        "nnspec.spec_name": spec.name,
        "nnspec.spec_hash": spec.spec_hash,
        "nnspec.version": nnspec_version(),
        NORMALIZE: json.dumps(normalize),
        "nnspec.input_layout": _input_layout(model.graph),
        TASK: json.dumps(task.metadata()),
        INPUTS: json.dumps(contracts),
    }
    labels = getattr(spec, "labels", None)
    if labels:  # absent, not null, when unknown: readers expect a list whenever it is there
        props[LABELS] = json.dumps([str(label) for label in labels])
    return props


def model_normalization(model: nn.Module) -> tuple[list[float], list[float]] | None:
    """(mean, std) of the model's built-in input normalisation, or None."""
    norm = model.input_normalization
    if norm is None:
        return None
    return norm.mean.flatten().tolist(), norm.std.flatten().tolist()


def sample_shape(model: nn.Module) -> tuple[int, ...]:
    """Per-sample shape of the model's first input."""
    return tuple(next(iter(model.graph.inputs.values())).shape)


def _input_layout(graph) -> str:
    layouts = {}
    for name, spec in graph.inputs.items():
        shape = tuple(spec.shape)
        is_tokens = str(getattr(spec, "dtype", "float32")).startswith("int")
        layouts[name] = "N" + "T" * len(shape) if is_tokens else LAYOUTS.get(len(shape), "N?")
    if len(layouts) == 1:
        return next(iter(layouts.values()))
    return json.dumps(layouts)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    batch: int | None = None,
    fold_bn: bool = True,
    verify: bool = True,
) -> ExportResult:
    """Export a CompiledModel to one self-contained ONNX file with inference semantics.

    Args:
        model: the CompiledModel (left untouched: folding works on a copy).
        path: the .onnx file to write (its folder is created).
        opset: the ai.onnx opset to pin; the file is refused if the exporter wrote another.
        batch: None for a dynamic batch dimension named "batch", else that fixed size.
        fold_bn: fold batch norms away (else BatchNormalization nodes stay, in eval form).
        verify: run onnx.checker and the onnxruntime parity check.

    Returns:
        An ExportResult with the op counts, the folding plan and the parity figures.

    Raises:
        ExportError: the exporter failed (naming the operator when it can), wrote another
            opset, left training-only ops behind, or onnxruntime disagrees with PyTorch.
    """
    _check_opset(opset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    try:
        return _export_eval_model(model.eval(), path, opset, batch, fold_bn, verify)
    finally:
        model.train(was_training)


def _check_opset(opset: int) -> None:
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise UsageError(
            f"--opset {opset} is out of range: torch's exporter writes opset {MIN_OPSET} to "
            f"{newest} (the newest this onnx knows)"
        )


def _export_eval_model(
    reference: nn.Module, path: Path, opset: int, batch: int | None, fold_bn: bool, verify: bool
) -> ExportResult:
    plan = plan_batchnorm_folding(reference) if fold_bn else None
    inference = fold_batchnorm(reference) if fold_bn else reference
    program = _run_exporter(inference, opset=opset, batch=batch, optimize=fold_bn)
    written = program.model.opset_imports.get("", None)
    if written != opset:
        raise ExportError(
            f"torch's exporter wrote ai.onnx opset {written}, not the requested {opset}\n"
            "    hint: its conversion to that opset failed for an op of this model; "
            f"use --opset {written}"
        )
    program.model.metadata_props.update(onnx_metadata(reference))
    weight_bytes = sum(t.numel() * t.element_size() for t in inference.state_dict().values())
    try:
        program.save(str(path), external_data=weight_bytes > SINGLE_FILE_LIMIT)
    except OSError as error:
        path.unlink(missing_ok=True)  # never leave a truncated model where it could be served
        raise OSError(error.errno, error.strerror, error.filename or str(path)) from error
    op_counts = Counter(node.op_type for node in program.model.graph.all_nodes())
    parity = None
    try:
        _refuse_training_ops(op_counts, fold_bn)
        if verify:
            check_onnx_file(path)
            sizes = (1, 3) if batch is None else (batch,)
            parity = verify_parity(path, reference, batch_sizes=sizes)
    except ExportError as error:
        # A model that failed its checks must not be left where it could be served.
        path.unlink(missing_ok=True)
        raise ExportError(
            f"{error}\n    the file was removed; export with --no-verify to keep it for inspection"
        ) from error
    return ExportResult(path, opset, dict(sorted(op_counts.items())), plan, parity)


def _run_exporter(model: nn.Module, *, opset: int, batch: int | None, optimize: bool):
    """torch.onnx.export through torch.export (dynamo), the exporter chosen deliberately.

    The dynamo exporter traces the module in whatever mode it is in (it ignores `training=`),
    so the caller passes an eval-mode module. Its optimizer fuses Conv+BatchNormalization by
    itself, so `optimize=False` is how --no-fold-bn keeps BatchNormalization nodes.
    """
    graph = model.graph
    input_specs = list(graph.inputs.values())
    example_batch = 2 if batch is None else batch  # torch.export specialises sizes 0 and 1
    args = tuple(_example_input(spec, example_batch) for spec in input_specs)
    dynamic_shapes = None
    if batch is None:
        dim = torch.export.Dim(BATCH_DIM)
        # CompiledModel.forward takes *inputs, which torch.export sees as one tuple argument.
        dynamic_shapes = (tuple({0: dim} for _ in input_specs),)
    try:
        with warnings.catch_warnings(), _quiet_exporter_logs():
            # Several inputs share the one "batch" dim; the exporter warns that it noticed.
            warnings.filterwarnings("ignore", message="# The axis name")
            return torch.onnx.export(
                model.eval(),
                args,
                dynamo=True,
                input_names=list(graph.inputs),
                output_names=[getattr(model.spec, "output_name", OUTPUT_NAME)],
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                optimize=optimize,
                verbose=False,
            )
    except Exception as error:  # the exporter raises many types; all mean "cannot export"
        raise ExportError(_describe_export_failure(error, opset)) from error


@contextlib.contextmanager
def _quiet_exporter_logs():
    """Hold back the exporter's own warnings (opset conversion fallbacks, with tracebacks):
    nnspec checks the result itself and reports what went wrong in one message."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _example_input(spec, batch: int) -> torch.Tensor:
    shape = (batch, *spec.shape)
    if str(getattr(spec, "dtype", "float32")).startswith("int"):
        return torch.zeros(shape, dtype=torch.int64)
    return torch.randn(shape)


def _describe_export_failure(error: Exception, opset: int) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # the exporter colours its messages
    # The exporter's own summary of the root cause, when it wrote one.
    summary = re.search(r"## Exception summary\s*\n\s*\n?(.+)", text)
    cause = (
        summary.group(1)
        if summary
        else next((line for line in text.splitlines() if line.strip()), type(error).__name__)
    )
    cause = re.sub(r"^<class '[\w.]+'>:\s*", "", cause.strip())
    operators = sorted(
        set(re.findall(r"\b(?:aten|prims)(?:\.|::)[A-Za-z_0-9]+", text))
        | set(re.findall(r"op='([\w.]+)'", text))
    )
    message = f"ONNX export (opset {opset}) failed: {cause[:400]}"
    if operators:
        message += f"\n    operator(s): {', '.join(operators[:5])}"
        message += "\n    hint: try a newer --opset, or replace the layer that uses this operator"
    elif "Constraints violated" in text or "specialized" in text:
        message += "\n    hint: the model fixes its batch size; export with --batch N"
    return message


def _refuse_training_ops(op_counts: Counter, fold_bn: bool) -> None:
    banned = TRAINING_OPS + (FOLDED_OPS if fold_bn else ())
    left = {op: op_counts[op] for op in banned if op_counts[op]}
    if left:
        raise ExportError(f"the exported graph still has training-time ops {left}")


def dry_run_export(spec, opset: int = DEFAULT_OPSET) -> None:
    """Export `spec`'s initialised model to a temporary file and verify it (`check --onnx`).

    Raises:
        ExportError: as :func:`export_onnx`; an operator the opset lacks is named.
    """
    from nnspec.compiler import build_model

    model = build_model(spec)
    with tempfile.TemporaryDirectory(prefix="nnspec-export-") as tmp:
        export_onnx(model, Path(tmp) / "model.onnx", opset=opset)
