"""What an experiment measures beyond a run's own numbers, and the equivalence verdict.

Three things a claim may need that `final.json` and the last epoch do not give:

- **epochs to a target** (`targets: {train_loss: {below: 0.1}}`): from a run's per-epoch
  records (`metrics.jsonl`), the first epoch whose `train_loss` is at or below 0.1, as the
  column `epochs_to_train_loss`, plus `reached_train_loss` (1 or 0). A run that never reaches
  the target counts as `epochs + 1`: a lower bound on the true value (the run was cut off), so a
  mean over seeds that includes it understates how slow that variant is.
- **curvature** (`hessian: {at: [init, trained], ...}`): the top Hessian eigenvalue and the
  Hutchinson trace of the training loss (runtime/lab/hessian.py, what `nnspec hessian` prints),
  for the run's freshly initialised weights (the same seed the trainer used) and for its
  trained weights, as `hessian_top_init`, `hessian_trace_init`, `hessian_top_trained`,
  `hessian_trace_trained`. Cached in the run directory, so a resumed experiment does not
  recompute them.
- **equivalence** (`equivalent_within: 0.01` on an expectation): the claim that two variants do
  *not* differ. Two one-sided t-tests (TOST, Welch's standard error, 5% each side): "holds" when
  the 90% confidence interval of the difference of means lies inside ±margin, "does not hold"
  when it lies wholly outside, "inconclusive" otherwise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, PositiveInt, model_validator

HESSIAN_METRICS_FILE = "experiment_hessian.json"
DERIVED_PREFIXES = ("epochs_to_", "reached_", "hessian_")
"""How the columns added here begin (the report shows them beside a sweep's usual ones)."""


class Target(BaseModel):
    """A per-epoch metric's threshold: reached when the value is `below` (<=) or `above` (>=)."""

    model_config = ConfigDict(extra="forbid")
    below: float | None = None
    above: float | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        if (self.below is None) == (self.above is None):
            raise ValueError("a target gives exactly one of `below` or `above`")
        return self

    def reached(self, value: float) -> bool:
        return value <= self.below if self.below is not None else value >= self.above


class HessianRecording(BaseModel):
    """Which weights of each run get their curvature measured, and how finely."""

    model_config = ConfigDict(extra="forbid")
    at: list[Literal["init", "trained"]] = ["init", "trained"]
    batches: PositiveInt = 2
    batch_size: PositiveInt = 128
    top_k: PositiveInt = 1
    steps: PositiveInt = 20
    trace_samples: PositiveInt = 10
    checkpoint: Literal["last", "best"] = "last"


# ------------------------------------------------------------------------------ epochs to target


def epochs_to_target(records: Sequence[dict], metric: str, target: Target, epochs: int) -> int:
    """The first epoch (1-based, as the records number them) whose `metric` reaches `target`;
    `epochs + 1` when none does."""
    for index, record in enumerate(records):
        value = record.get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and target.reached(value):
            return int(record.get("epoch", index + 1))
    return epochs + 1


def target_metrics(records: Sequence[dict], targets: dict[str, Target], epochs: int) -> dict:
    """`epochs_to_METRIC` and `reached_METRIC` (1 or 0) for every target."""
    columns: dict[str, float] = {}
    for metric, target in targets.items():
        epoch = epochs_to_target(records, metric, target, epochs)
        columns[f"epochs_to_{metric}"] = epoch
        columns[f"reached_{metric}"] = int(epoch <= epochs)
    return columns


# ------------------------------------------------------------------------------ curvature


def hessian_metrics(run_dir: Path, recording: HessianRecording) -> dict:
    """`hessian_top_{at}` and `hessian_trace_{at}` of one finished run (cached in the run)."""
    cache = Path(run_dir) / HESSIAN_METRICS_FILE
    key = recording.model_dump()
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("recording") == key:
            return cached["metrics"]
    columns: dict[str, float] = {}
    for at in recording.at:
        spectrum = run_spectrum(run_dir, at, recording)
        columns[f"hessian_top_{at}"] = spectrum.top_eigenvalues[0]
        columns[f"hessian_trace_{at}"] = spectrum.trace
    cache.write_text(json.dumps({"recording": key, "metrics": columns}, indent=2) + "\n")
    return columns


def run_spectrum(run_dir: Path, at: str, recording: HessianRecording):
    """The Hessian spectrum of a run's training loss at its initial or its trained weights.

    The initial weights are rebuilt from the run's spec and seed (`build_model(spec, seed)`, as
    the trainer builds them); the batches are the first `recording.batches` training batches of
    the run's data, in a fixed order, the same for both.
    """
    from nnspec.compiler import build_model, load_spec
    from nnspec.runtime.lab.hessian import model_spectrum, training_batches
    from nnspec.runtime.train.evaluate import load_trained_model, read_task_state
    from nnspec.runtime.train.tasks import make_task

    run_dir = Path(run_dir)
    settings = json.loads((run_dir / "run.json").read_text()).get("settings", {})
    if at == "trained":
        model, spec = load_trained_model(run_dir, recording.checkpoint, "cpu")
    else:
        spec = load_spec(run_dir / "spec.yaml")
        model = build_model(spec, seed=int(settings.get("seed", 0)))
    model = model.float()
    data = settings.get("data") or "digits"
    batches = training_batches(model, spec, data, recording.batches, recording.batch_size)
    task = make_task(spec, model.graph.output_shape)
    task.restore(read_task_state(run_dir))
    return model_spectrum(
        model, task.eval_loss, batches, recording.top_k, recording.steps,
        recording.trace_samples,
    )  # fmt: skip


# ------------------------------------------------------------------------------ rows


def add_run_metrics(
    rows: list[dict],
    run_dirs: Sequence[Path],
    targets: dict[str, Target],
    hessian: HessianRecording | None,
    epochs: int,
) -> None:
    """Add the derived columns to each finished run's row (rows and run_dirs in one order)."""
    from nnspec.runtime.lab.sweep import read_metrics

    for row, run_dir in zip(rows, run_dirs, strict=True):
        if row.get("status") != "finished":
            continue
        if targets:
            row.update(target_metrics(read_metrics(run_dir), targets, epochs))
        if hessian is not None:
            row.update(hessian_metrics(run_dir, hessian))


# ------------------------------------------------------------------------------ equivalence


def equivalence_verdict(
    better: str, worse: str, metric: str, margin: float, summary: Sequence[dict],
    lower_is_better: bool = False,
) -> dict:  # fmt: skip
    """Judge "`better` and `worse` do not differ on `metric` by more than `margin`" by TOST.

    Each variant is taken at its best grid point, as for a difference claim. Returns the
    outcome, both variants' statistics, the difference of means and the 90% interval.
    """
    a = _variant_entry(summary, better, metric, lower_is_better)
    b = _variant_entry(summary, worse, metric, lower_is_better)
    result: dict = {"better_value": a and a[metric], "worse_value": b and b[metric]}
    if a is None or b is None:
        return {**result, "outcome": "no result" if a is None and b is None else "does not hold"}
    difference, half_width = difference_interval(
        a[metric]["mean"], a[metric]["std"], a["finished"],
        b[metric]["mean"], b[metric]["std"], b["finished"],
    )  # fmt: skip
    low, high = difference - half_width, difference + half_width
    if -margin < low and high < margin:
        outcome = "holds"
    elif low > margin or high < -margin:
        outcome = "does not hold"
    else:
        outcome = "inconclusive"
    return {**result, "outcome": outcome, "difference": difference, "interval": [low, high]}


def expectation_text(verdict: dict) -> str:
    """The prediction a verdict judged, in words: `a better than b on m` or, for an
    equivalence, `a within ±0.01 of b on m`."""
    margin = verdict.get("equivalent_within")
    relation = "better than" if margin is None else f"within ±{margin:g} of"
    return f"{verdict['better']} {relation} {verdict['worse']} on {verdict['metric']}"


def difference_interval(
    mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int,
    confidence: float = 0.90,
) -> tuple[float, float]:  # fmt: skip
    """(mean_a - mean_b, half width of its Welch t interval at `confidence`)."""
    var_a, var_b = std_a**2 / n_a, std_b**2 / n_b
    standard_error = math.sqrt(var_a + var_b)
    if standard_error == 0:
        return mean_a - mean_b, 0.0
    if n_a < 2 or n_b < 2:
        return mean_a - mean_b, math.inf  # one seed says nothing about the spread
    # Welch-Satterthwaite degrees of freedom.
    df = (var_a + var_b) ** 2 / (var_a**2 / (n_a - 1) + var_b**2 / (n_b - 1))
    return mean_a - mean_b, t_quantile(0.5 + confidence / 2, df) * standard_error


def t_quantile(p: float, df: float) -> float:
    """The `p` quantile (p > 0.5) of Student's t with `df` (possibly fractional) degrees of
    freedom, by bisection on the CDF (Simpson's rule on the density)."""

    def density(t: float) -> float:
        log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
        return math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df))

    def cdf(t: float, intervals: int = 400) -> float:
        h = t / intervals
        total = density(0) + density(t)
        total += sum((4 if i % 2 else 2) * density(i * h) for i in range(1, intervals))
        return 0.5 + total * h / 3

    low, high = 0.0, 1.0
    while cdf(high) < p:
        low, high = high, 2 * high
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < p else (low, middle)
    return (low + high) / 2


def _variant_entry(
    summary: Sequence[dict], variant: str, metric: str, lower_is_better: bool
) -> dict | None:
    entries = [e for e in summary if e["point"].split(",", 1)[0] == variant and metric in e]
    if not entries:
        return None
    pick = min if lower_is_better else max
    return pick(entries, key=lambda e: e[metric]["mean"])
