"""Where a model to export comes from: a training run directory (its resolved spec, a
checkpoint's weights, its normalisation and task state) or a bare spec with optional weights,
and the CompiledModel built from them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from nnspec.compiler.errors import UsageError

CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class RunFiles:
    """Where the parts of a model come from: a spec, optional weights, normalisation and
    what the run's task learnt (`task.json`: regression's target statistics)."""

    spec: str | Path
    weights: Path | None
    normalization: Path | None
    run_dir: Path | None = None


def is_run_dir(source: str | Path) -> bool:
    """A training run directory holds the resolved `spec.yaml`."""
    path = Path(source)
    return path.is_dir() and (path / "spec.yaml").is_file()


def locate_model_files(
    source: str | Path, checkpoint: str = "best", weights: str | Path | None = None
) -> RunFiles:
    """Resolve a run directory or a bare spec into the files a model is built from.

    A run directory gives its `spec.yaml`, `checkpoints/<checkpoint>.safetensors` and
    `normalization.json`; `weights` replaces the checkpoint. A bare spec (path or zoo name)
    gives itself and `weights`, if any.

    Raises:
        UsageError: unknown checkpoint name, or a weights file that does not exist.
    """
    if checkpoint not in CHECKPOINTS:
        raise UsageError(
            f"--checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}"
        )
    chosen = Path(weights) if weights is not None else None
    if chosen is not None and not chosen.is_file():
        raise UsageError(f"weights file {str(chosen)!r} does not exist")
    if not is_run_dir(source):
        return RunFiles(spec=source, weights=chosen, normalization=None)
    run = Path(source)
    if chosen is None:
        from nnspec.runtime.train.checkpoint import checkpoint_names, complete_checkpoint

        chosen = run / "checkpoints" / f"{checkpoint}.safetensors"
        present = checkpoint_names(run / "checkpoints")
        if checkpoint in present:  # finish a save a crash interrupted, as training would
            complete_checkpoint(run / "checkpoints", checkpoint)
        if not chosen.is_file():
            raise UsageError(
                f"run {str(run)!r} has no {checkpoint!r} checkpoint ({chosen} is missing)\n"
                f"    hint: checkpoints present: {', '.join(present) or 'none'}; "
                "choose one with --checkpoint, or pass --weights"
            )
    normalization = run / "normalization.json"
    return RunFiles(
        spec=run / "spec.yaml",
        weights=chosen,
        normalization=normalization if normalization.is_file() else None,
        run_dir=run,
    )


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
