"""The lecture's claims as experiments: each a sweep over named variants, with its verdict.

An experiment file (`specs/experiments/*.yaml`) names a claim, a base spec (inline or a path),
the variants that the claim compares (each a set of spec overrides), optional extra grid axes,
seeds, epochs and data. Data is the bundled digits set or a generated `.npz` (for claims about
optimisation geometry). `run_experiment` runs it as a sweep and `verdict` compares the variants
the way the claim predicts, reporting "holds", "does not hold" or "inconclusive" by the
statistical rule of `verdicts.py`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from nnspec.compiler.errors import Problem, SpecError, UsageError
from nnspec.compiler.load import read_source
from nnspec.compiler.resources import specs_dir
from nnspec.compiler.suggest import did_you_mean
from nnspec.runtime.lab import experiment_metrics, sweep, verdicts
from nnspec.runtime.lab.experiment_metrics import HessianRecording, Target
from nnspec.runtime.lab.verdicts import Expectation

EXPERIMENTS_DIR = specs_dir() / "experiments"
OUTCOME_FILE = "outcome.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeneratedData(_Strict):
    """A synthetic classification set written as `.npz` (keys x, y) before the runs start.

    `ill_conditioned`: Gaussian features whose scales fall geometrically from 1 to
    1/sqrt(condition), labels from a random linear teacher, so a linear model's loss has a
    Hessian with condition number about `condition`.
    `scale_gap`: the bundled digits as channel 0 and their transpose times `scale` as
    channel 1, two informative channels `scale` times apart.
    `scale_split`: the bundled digits with their right half (columns 4-7) times `scale`, so
    the pixels that tell digits apart are split between two scales and neither half is a copy
    of the other.
    """

    generate: Literal["ill_conditioned", "scale_gap", "scale_split"]
    samples: PositiveInt = 2000
    features: PositiveInt = 20
    classes: PositiveInt = 2
    condition: float = Field(1000.0, gt=1)
    scale: float = Field(1000.0, gt=0)
    seed: int = 0


class Experiment(_Strict):
    name: str
    claim: str
    lecture: str = ""
    spec: str | dict[str, Any]
    variants: dict[str, dict[str, Any]] = Field(min_length=2)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    data: str | GeneratedData = "digits"
    epochs: PositiveInt = 5
    seeds: PositiveInt = 2
    expect: list[Expectation] = Field(default_factory=list)
    metrics: list[str] = Field(default_factory=lambda: ["test_accuracy"])
    targets: dict[str, Target] = Field(default_factory=dict)
    hessian: HessianRecording | None = None
    note: str = ""
    source: str = ""  # file it was read from (set by load_experiment)


def experiment_files(directory: Path = EXPERIMENTS_DIR) -> dict[str, Path]:
    """Experiment name (file stem) -> file, sorted by name."""
    return {p.stem: p for p in sorted(directory.glob("*.yaml"))}


def is_experiment_file(source: str | Path) -> bool:
    """Whether `source` is an experiment file (a claim and its variants) rather than a spec."""
    path = Path(source)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return False
    try:
        data, _ = read_source(path)
    except SpecError:
        return False
    return isinstance(data, dict) and "variants" in data and "claim" in data \
        and "nnspec" not in data


def variant_specs(experiment: Experiment, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The spec of each variant: the experiment's spec with the variant's overrides."""
    from nnspec.compiler import load_spec

    base = experiment.spec if isinstance(experiment.spec, dict) else \
        str(Path(experiment.source).parent / experiment.spec)
    return {
        name: load_spec(base, overrides=[*(f"{k}={_yaml_value(v)}" for k, v in changes.items()),
                                         *overrides])
        for name, changes in experiment.variants.items()
    }


def load_experiment(path: Path) -> Experiment:
    """Read and validate one experiment file; problems name the file and the field."""
    data, _ = read_source(Path(path))  # the spec loader's limits: size, aliases, nesting
    if not isinstance(data, dict):
        raise SpecError(Problem("an experiment is a mapping (name, claim, spec, variants)",
                                path=str(path)))
    try:
        experiment = Experiment.model_validate({**(data or {}), "source": str(path)})
    except ValidationError as error:
        raise SpecError(
            [
                Problem(item["msg"], path=f"{path}: {'.'.join(map(str, item['loc']))}")
                for item in error.errors()
            ]
        ) from None
    for expectation in experiment.expect:
        for name in (expectation.better, expectation.worse):
            if name not in experiment.variants:
                raise SpecError(
                    Problem(
                        f"expect names variant {name!r}{did_you_mean(name, experiment.variants)}",
                        path=f"{path}: expect",
                    )
                )
    return experiment


def select_experiments(names: list[str], directory: Path = EXPERIMENTS_DIR) -> list[Path]:
    files = experiment_files(directory)
    if not names:
        return list(files.values())
    unknown = [n for n in names if n not in files]
    if unknown:
        raise UsageError(
            f"unknown experiment {unknown[0]!r}{did_you_mean(unknown[0], files)}; "
            f"known: {', '.join(files)}",
        )
    return [files[n] for n in names]


def plan(experiment: Experiment, out_dir: Path) -> tuple[sweep.SweepSettings, list]:
    """Write the experiment's spec and data into `out_dir`; return the sweep settings and runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(experiment.spec, dict):
        spec_path = out_dir / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(experiment.spec, sort_keys=False))
    else:
        spec_path = (Path(experiment.source).parent / experiment.spec).resolve()
    data = experiment.data
    if isinstance(data, GeneratedData):
        data_path = out_dir / "data.npz"
        x, y = generate_data(data)
        np.savez(data_path, x=x, y=y)
        data = str(data_path)
    settings = sweep.SweepSettings(spec=str(spec_path), epochs=experiment.epochs, data=data)
    points = []
    grid_axes = list(experiment.grid.items())
    for grid_point in sweep.grid_points([(k, [_yaml_value(v) for v in vs]) for k, vs in grid_axes]):
        for variant, overrides in experiment.variants.items():
            pairs = tuple(f"{k}={_yaml_value(v)}" for k, v in overrides.items())
            name = variant if not grid_axes else f"{variant},{grid_point.name}"
            points.append(
                sweep.GridPoint(
                    name=name,
                    overrides=pairs + grid_point.overrides,
                    values=(("variant", variant), *grid_point.values),
                )
            )
    return settings, sweep.plan_runs(points, range(experiment.seeds))


def generate_data(config: GeneratedData) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic set an experiment asks for (see GeneratedData), as float32 x and int64 y."""
    rng = np.random.default_rng(config.seed)
    if config.generate == "ill_conditioned":
        scales = np.geomspace(1.0, 1.0 / np.sqrt(config.condition), config.features)
        x = rng.standard_normal((config.samples, config.features)) * scales
        teacher = rng.standard_normal((config.features, config.classes)) / scales[:, None]
        y = np.argmax(x @ teacher, axis=1)
        return x.astype(np.float32), y.astype(np.int64)
    from nnspec.runtime.train.data import digits_arrays

    images, labels = digits_arrays()
    if config.generate == "scale_split":
        split = images.astype(np.float32)
        split[..., 4:] *= config.scale
        return split, labels.astype(np.int64)
    gap = np.concatenate([images, np.swapaxes(images, 2, 3) * config.scale], axis=1)
    return gap, labels.astype(np.int64)


def verdict(experiment: Experiment, summary: list[dict]) -> list[dict]:
    """Each expectation judged on the sweep summary by the rule of `verdicts` (Welch's t-test,
    or TOST for `equivalent_within`), each variant at its best grid point."""
    return verdicts.judge_all(experiment.expect, summary)


def run_experiment(
    experiment: Experiment, out_dir: Path, parallel: int = 1, on_outcome=None
) -> dict:
    """Run (or resume) the experiment's sweep in `out_dir` and write its outcome."""
    settings, runs = plan(experiment, out_dir)
    sweep.write_plan(out_dir, settings, runs)
    runner = sweep.subprocess_runner(settings, single_thread=parallel > 1)
    sweep.run_sweep(runs, out_dir, runner, parallel, on_outcome=on_outcome)
    rows = sweep.collect_rows(out_dir, runs)
    experiment_metrics.add_run_metrics(
        rows, [out_dir / r.relative_dir for r in runs], experiment.targets, experiment.hessian,
        experiment.epochs,
    )
    summary = sweep.summarise(rows)
    _add_parameter_counts(summary, runs, settings)
    sweep.write_results(out_dir, rows, summary)
    return write_outcome(experiment, out_dir, summary)


def _add_parameter_counts(summary: list[dict], runs: list, settings) -> None:
    """Each point's parameter count from the compiled spec (a claim may be about size)."""
    from nnspec.compiler import compile_graph
    from nnspec.compiler.summary import summarize

    overrides = {run.point.name: list(run.point.overrides) for run in runs}
    for entry in summary:
        params = summarize(compile_graph(settings.spec, overrides[entry["point"]]))["params"]
        # exact, not sampled: every planned run has this count, finished or not
        entry["params"] = {"mean": float(params), "std": 0.0, "n": entry["runs"]}


def write_outcome(experiment: Experiment, out_dir: Path, summary: list[dict]) -> dict:
    """`outcome.json`: the claim, per-variant summary and the verdicts."""
    outcome = {
        "name": experiment.name,
        "claim": experiment.claim,
        "epochs": experiment.epochs,
        "seeds": experiment.seeds,
        "summary": summary,
        "verdicts": verdict(experiment, summary),
    }
    (out_dir / OUTCOME_FILE).write_text(json.dumps(outcome, indent=2) + "\n")
    return outcome


def markdown_table(outcomes: list[dict], metrics: list[str]) -> str:
    """One row per experiment variant: finished runs and metric mean ± std, then verdicts."""
    lines = ["| experiment | variant | runs | " + " | ".join(metrics) + " |"]
    lines.append("|---" * (3 + len(metrics)) + "|")
    for outcome in outcomes:
        for entry in outcome["summary"]:
            cells = [f"{entry['finished']}/{entry['runs']}"]
            for metric in metrics:
                stat = entry.get(metric)
                if stat is None:  # no finished run, or a metric this experiment does not measure
                    cells.append("failed" if not entry["finished"] else "–")
                elif metric == "params":
                    cells.append(f"{int(stat['mean']):,}")
                else:
                    cells.append(f"{stat['mean']:.4g} ± {stat['std']:.2g}")
            lines.append(f"| {outcome['name']} | {entry['point']} | " + " | ".join(cells) + " |")
    lines.append("")
    for outcome in outcomes:
        for v in outcome["verdicts"]:
            lines.append(f"- **{outcome['name']}**: {verdicts.claim_text(v)}: "
                         f"**{v['outcome']}**{verdicts.evidence_text(v)}"
                         f"{verdicts.points_text(v)}")  # fmt: skip
    return "\n".join(lines) + "\n"


def _yaml_value(value: Any) -> str:
    # Override values are parsed as YAML by load_spec; JSON is YAML, and keeps strings quoted.
    return json.dumps(value)
