"""A self-contained HTML report of training runs and sweeps.

Everything the page shows is inside the one file: matplotlib figures as base64 PNG, the
network drawing as a base64 SVG. The template (`templates/report.html.j2`) renders in an
autoescaping jinja2 environment, so names and values from run directories are always text.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from nnspec.compiler.errors import UsageError
from nnspec.compiler.resources import templates_dir
from nnspec.runtime.lab import verdicts
from nnspec.runtime.lab.experiment_metrics import DERIVED_PREFIXES
from nnspec.runtime.lab.sweep import (
    FINAL_FILE,
    METRICS_FILE,
    PLAN_FILE,
    read_metrics,
    summary_rows,
)

TEMPLATE = "report.html.j2"
HESSIAN_FILE = "hessian.json"
INIT_STATS_FILE = "init_stats.json"
# What the sweep table shows, in this order, when the runs recorded it.
SWEEP_COLUMNS = (
    "test_accuracy",
    "test_loss",
    "test_ema_accuracy",
    "best_val_accuracy",
    "last_train_loss",
    "last_train_accuracy",
    "params",
    "train_seconds",
)


@dataclass
class Figure:
    title: str
    data_uri: str


@dataclass
class RunSection:
    name: str
    path: str
    final: list[tuple[str, str]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    layer_columns: list[str] = field(default_factory=list)
    layers: list[list[str]] = field(default_factory=list)
    total_params: str = ""


@dataclass
class SweepSection:
    name: str
    path: str
    spec: str
    columns: list[str]
    rows: list[list[str]]
    figures: list[Figure] = field(default_factory=list)
    claim: str = ""  # for an experiment directory: the claim and its verdicts
    verdicts: list[str] = field(default_factory=list)


def is_sweep_dir(path: Path) -> bool:
    return (path / PLAN_FILE).is_file() or (path / "results.json").is_file()


def is_run_dir(path: Path) -> bool:
    return (path / METRICS_FILE).is_file() or (path / FINAL_FILE).is_file()


def build_report(paths: list[Path], title: str = "nnspec report") -> str:
    """Render the report of `paths` (run or sweep directories) to an HTML string."""
    runs, sweeps = [], []
    for path in paths:
        if is_sweep_dir(path):
            sweeps.append(sweep_section(path))
        elif is_run_dir(path):
            runs.append(run_section(path))
        else:
            raise UsageError(
                f"{path}: neither a run directory (metrics.jsonl/final.json) nor a sweep "
                "directory (sweep.json/results.json)",
            )
    from nnspec.runtime.common.version import nnspec_version

    return render(
        title=title,
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        version=nnspec_version(),
        runs=runs,
        sweeps=sweeps,
    )


def render(**context) -> str:
    """Render the report template with `context` in an autoescaping environment."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(templates_dir())]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return environment.get_template(TEMPLATE).render(**context)


def run_section(path: Path) -> RunSection:
    """Curves, final numbers, init statistics, Hessian and network of one run directory."""
    # Sweep runs live in <point>/seed<N>: "seed0" alone would not say which run it is.
    name = f"{path.parent.name}/{path.name}" if path.name.startswith("seed") else path.name
    section = RunSection(name=name, path=str(path))
    final_path = path / FINAL_FILE
    if final_path.is_file():
        final = json.loads(final_path.read_text())
        section.final = [(k, _format_value(v)) for k, v in final.items() if _is_scalar(v)]
    metrics = read_metrics(path)
    if metrics:
        section.figures.append(Figure("loss and accuracy per epoch", _png(curves_figure(metrics))))
        schedule = schedule_figure(metrics)
        if schedule is not None:
            section.figures.append(Figure("learning rate and momentum", _png(schedule)))
    else:
        section.notes.append("no metrics.jsonl: the run has not finished an epoch")
    init_path = path / INIT_STATS_FILE
    if init_path.is_file():
        section.figures.append(
            Figure("activation and gradient std per depth at init", _png(init_figure(init_path)))
        )
    hessian_path = path / HESSIAN_FILE
    if hessian_path.is_file():
        section.figures.append(
            Figure("Hessian Ritz values of the training loss", _png(hessian_figure(hessian_path)))
        )
    _add_network(section, path)
    return section


def sweep_section(path: Path) -> SweepSection:
    """The sweep's mean ± std table and one accuracy curve per grid point."""
    results_path = path / "results.json"
    if not results_path.is_file():
        raise UsageError(f"{path}: the sweep has no results.json yet; run `nnspec sweep` first")
    results = json.loads(results_path.read_text())
    summary = results["summary"]
    present = {k for entry in summary for k, v in entry.items() if isinstance(v, dict)}
    metric_columns = [c for c in SWEEP_COLUMNS if c in present] or sorted(present)
    metric_columns += [
        c for c in sorted(present) if c.startswith(DERIVED_PREFIXES) and c not in metric_columns
    ]
    columns = ["point", "runs", *metric_columns]
    rows = summary_rows(summary, metric_columns, missing="–")
    spec = ""
    if (path / PLAN_FILE).is_file():
        spec = json.loads((path / PLAN_FILE).read_text())["settings"]["spec"]
    section = SweepSection(path.name, str(path), spec, columns, rows)
    outcome_path = path / "outcome.json"
    if outcome_path.is_file():
        outcome = json.loads(outcome_path.read_text())
        section.claim = " ".join(outcome["claim"].split())
        # judged again by the current rule, from the stored summary (or the sweep's own)
        judged = verdicts.rejudge(outcome["verdicts"], outcome.get("summary", summary))
        section.verdicts = [f"{verdicts.describe(v)}; rule: {v['rule']}" for v in judged]
    curves = sweep_curves(path, results["rows"])
    if curves is not None:
        section.figures.append(Figure("accuracy per epoch, mean over seeds", _png(curves)))
    return section


def curves_figure(metrics: list[dict]):
    """Every `*loss*` column on the left axes, every `*acc*` column on the right."""
    plt = _pyplot()
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    epochs = _x_values(metrics)
    for key in _numeric_keys(metrics):
        values = [m.get(key, float("nan")) for m in metrics]
        if "loss" in key:
            loss_axis.plot(epochs, values, marker=".", label=key)
        elif "acc" in key:
            acc_axis.plot(epochs, values, marker=".", label=key)
    for axis, name in ((loss_axis, "loss"), (acc_axis, "accuracy")):
        axis.set_xlabel("epoch")
        axis.set_title(name)
        axis.grid(True, alpha=0.3)
        if axis.get_lines():
            axis.legend()
    return figure


def schedule_figure(metrics: list[dict]):
    """Learning rate and momentum over steps (at each epoch's end), or None when absent."""
    keys = _numeric_keys(metrics)
    lr_keys = [k for k in keys if k == "lr" or k.startswith("lr")]
    momentum_keys = [k for k in keys if "momentum" in k or k.startswith("beta")]
    if not lr_keys and not momentum_keys:
        return None
    plt = _pyplot()
    figure, (lr_axis, momentum_axis) = plt.subplots(
        1, 2, figsize=(10, 3.2), constrained_layout=True
    )
    by_step = all("step" in m for m in metrics)
    x = [m["step"] for m in metrics] if by_step else _x_values(metrics)
    for axis, group, title in ((lr_axis, lr_keys, "learning rate"), (momentum_axis, momentum_keys, "momentum")):  # fmt: skip
        for key in group:
            axis.plot(x, [m.get(key, float("nan")) for m in metrics], marker=".", label=key)
        axis.set_title(title)
        axis.set_xlabel("step (end of epoch)" if by_step else "epoch")
        axis.grid(True, alpha=0.3)
        if group:
            axis.legend()
    return figure


def init_figure(path: Path):
    """The per-depth std plot from an `init_stats.json` written by `nnspec init-stats`."""
    from nnspec.runtime.lab.init_stats import LayerStats, plot_std_by_depth

    data = json.loads(path.read_text())
    series = {name: [LayerStats(**s) for s in stats] for name, stats in data["series"].items()}
    return plot_std_by_depth(series)


def hessian_figure(path: Path):
    """Ritz values on a symmetric log scale, with the trace and conditioning in the title."""
    data = json.loads(path.read_text())
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.4), constrained_layout=True)
    ritz = data["ritz_values"]
    axis.stem(range(1, len(ritz) + 1), ritz)
    axis.set_yscale("symlog", linthresh=1e-3)
    axis.set_xlabel("Ritz value rank")
    axis.set_ylabel("eigenvalue")
    condition = data.get("condition_indicator")
    condition_text = f"{condition:.3g}" if condition else "n/a"
    axis.set_title(
        f"λ_max {ritz[0]:.4g}   trace ≈ {data['trace']:.4g} ± {data['trace_stderr']:.2g}   "
        f"λ_max/λ_small {condition_text}",
        fontsize=9,
    )
    axis.grid(True, alpha=0.3)
    return figure


def sweep_curves(path: Path, rows: list[dict]):
    """Mean over seeds of the first accuracy column of each point's runs, per epoch."""
    by_point: dict[str, list[list[dict]]] = {}
    for row in rows:
        run_dir = path / row["point"] / f"seed{row['seed']}"
        metrics = read_metrics(run_dir)
        if metrics:
            by_point.setdefault(row["point"], []).append(metrics)
    if not by_point:
        return None
    sample = next(iter(by_point.values()))[0]
    keys = _numeric_keys(sample)
    key = next((k for k in keys if "val" in k and "acc" in k), None)
    key = key or next((k for k in keys if "acc" in k), None)
    if key is None:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
    for point, runs in by_point.items():
        length = min(len(r) for r in runs)
        mean = [sum(r[i].get(key, float("nan")) for r in runs) / len(runs) for i in range(length)]
        axis.plot(_x_values(runs[0][:length]), mean, marker=".", label=point)
    axis.set_xlabel("epoch")
    axis.set_ylabel(key)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    return figure


def _add_network(section: RunSection, path: Path) -> None:
    """The network drawing and per-layer table of the run's resolved spec, when it has one."""
    spec_path = path / "spec.yaml"
    if not spec_path.is_file():
        section.notes.append("no spec.yaml in the run directory: network not shown")
        return
    from nnspec.compiler import compile_graph, load_spec
    from nnspec.runtime.lab.graph_draw import GraphvizMissing, render_svg

    graph = compile_graph(load_spec(spec_path))
    try:
        svg = render_svg(graph)
        uri = "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")
        section.figures.append(Figure("network graph", uri))
    except GraphvizMissing as missing:
        section.notes.append(str(missing))
    section.layer_columns, section.layers, section.total_params = _layer_table(graph)


def _layer_table(graph) -> tuple[list[str], list[list[str]], str]:
    from nnspec.compiler.summary import summarize

    summary = summarize(graph)
    columns = ["id", "kind", "output shape", "params", "MACs"]
    rows = [
        [
            layer["id"],
            layer["kind"],
            "×".join(str(d) for d in layer["output_shape"]),
            f"{layer['params']:,}",
            f"{layer['macs']:,}",
        ]
        for layer in summary["layers"]
    ]
    return columns, rows, f"{summary['params']:,}"


def _png(figure) -> str:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _numeric_keys(metrics: list[dict]) -> list[str]:
    keys: list[str] = []
    for record in metrics:
        for key, value in record.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and key not in keys and key not in ("epoch", "step"):
                keys.append(key)
    return keys


def _x_values(metrics: list[dict]) -> list:
    return [m.get("epoch", i + 1) for i, m in enumerate(metrics)]


def _is_scalar(value) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


