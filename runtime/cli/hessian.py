"""`nnspec hessian RUN_DIR_OR_SPEC [--top-k K] [--batches N]`: curvature of the training loss."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nnspec.runtime.cli.arguments import add_spec_arguments, spec_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a run directory (trained weights) or a spec (fresh init)")
    parser.add_argument("--top-k", type=int, default=5, help="eigenvalues to report")
    parser.add_argument("--batches", type=int, default=4, help="training batches in the loss")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40, help="Lanczos iterations")
    parser.add_argument("--trace-samples", type=int, default=20, help="Hutchinson samples")
    parser.add_argument("--data", help="data source (default: the run's or the spec's)")
    parser.add_argument("--checkpoint", default="best", help="run checkpoint: best or last")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--out", type=Path, help="write the JSON here (default for a run: RUN_DIR/hessian.json)"
    )
    add_spec_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from nnspec.compiler.errors import UsageError
    from nnspec.runtime.lab.hessian import model_spectrum, training_batches
    from nnspec.runtime.lab.report import HESSIAN_FILE
    from nnspec.runtime.train.evaluate import read_task_state
    from nnspec.runtime.train.tasks import make_task

    if args.batches < 1 or args.batch_size < 1:
        raise UsageError("--batches and --batch-size must be at least 1")
    run_dir = Path(args.source) if (Path(args.source) / "spec.yaml").is_file() else None
    model, spec, data = _load(args, run_dir)
    batches = training_batches(model, spec, data, args.batches, args.batch_size)

    task = make_task(spec, model.graph.output_shape)
    if run_dir is not None:
        task.restore(read_task_state(run_dir))
    loss = task.eval_loss  # the model is in eval mode
    spectrum = model_spectrum(
        model, loss, batches, args.top_k, args.steps, args.trace_samples, args.seed
    )
    result = {"source": args.source, "data": data, "batches": len(batches), **spectrum.to_dict()}
    out = args.out or (run_dir / HESSIAN_FILE if run_dir else None)
    if out:
        out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    samples = sum(len(y) for _, y in batches)
    print(f"{spec.name}: {spectrum.params:,} parameters, loss over {samples} training samples")
    print("top eigenvalues: " + ", ".join(f"{v:.4g}" for v in spectrum.top_eigenvalues))
    print(f"trace (Hutchinson): {spectrum.trace:.4g} ± {spectrum.trace_stderr:.2g}")
    if spectrum.condition_indicator is not None:
        print(
            f"λ_max / smallest positive Ritz value: {spectrum.condition_indicator:.4g} "
            f"({spectrum.lanczos_steps} Lanczos steps)"
        )
    if out:
        print(f"wrote {out}")
    return 0


def _load(args, run_dir):
    if run_dir is not None:
        from nnspec.runtime.train.evaluate import load_trained_model

        model, spec = load_trained_model(run_dir, args.checkpoint, "cpu")
        settings = json.loads((run_dir / "run.json").read_text()).get("settings", {})
        return model.float(), spec, args.data or settings.get("data", "digits")
    from nnspec.compiler import build_model

    spec = spec_from_args(args, args.source)
    model = build_model(spec, seed=args.seed)
    return model, spec, args.data or (spec.train.data if spec.train else "digits")
