"""Sweep planning, resume and result tables, with a fake runner standing in for `nnspec train`."""

from __future__ import annotations

import csv
import json
import sys
import threading
from pathlib import Path

import pytest

from nnspec.compiler.errors import UsageError
from nnspec.runtime.lab.sweep import (
    BackendOptions,
    PlannedRun,
    SweepSettings,
    collect_rows,
    execute_sweep,
    format_summary,
    grid_points,
    parse_grid,
    plan_runs,
    run_sweep,
    summarise,
    train_call,
    train_command,
    write_results,
)


def _fake_train(accuracy_of):
    """A runner that writes what `nnspec train` writes: metrics.jsonl and final.json."""
    calls: list[str] = []

    def run(planned: PlannedRun, run_dir: Path) -> int:
        calls.append(planned.relative_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        accuracy = accuracy_of(dict(planned.point.values), planned.seed)
        if accuracy is None:
            return 1
        (run_dir / "metrics.jsonl").write_text(
            json.dumps({"epoch": 1, "train_loss": 1.0})
            + "\n"
            + json.dumps({"epoch": 2, "train_loss": 0.5})
            + "\n"
        )
        (run_dir / "final.json").write_text(json.dumps({"test_accuracy": accuracy}))
        return 0

    return run, calls


def test_grid_expands_to_the_cartesian_product_in_order():
    axes = parse_grid(["optimizer.lr=0.1,0.01", "optimizer.momentum=0,0.9"])
    points = grid_points(axes)
    assert [p.name for p in points] == [
        "lr=0.1,momentum=0",
        "lr=0.1,momentum=0.9",
        "lr=0.01,momentum=0",
        "lr=0.01,momentum=0.9",
    ]
    assert points[1].overrides == ("optimizer.lr=0.1", "optimizer.momentum=0.9")
    runs = plan_runs(points, seeds=[0, 1])
    assert [r.relative_dir for r in runs[:3]] == [
        "lr=0.1,momentum=0/seed0",
        "lr=0.1,momentum=0/seed1",
        "lr=0.1,momentum=0.9/seed0",
    ]
    assert len(runs) == 8


def test_axes_ending_alike_keep_their_full_names():
    points = grid_points(parse_grid(["optimizer.lr=0.1", "schedule.lr=cosine"]))
    assert points[0].name == "optimizer.lr=0.1,schedule.lr=cosine"


@pytest.mark.parametrize(
    ("items", "message"),
    [(["lr"], "KEY=V1"), (["lr=0.1,"], "KEY=V1"), (["lr=1", "lr=2"], "twice")],
)
def test_bad_grid_items_are_usage_errors(items, message):
    with pytest.raises(UsageError, match=message):
        parse_grid(items)


def test_train_command_follows_the_train_cli_contract(tmp_path):
    settings = SweepSettings(spec="specs/digits_cnn.yaml", epochs=3, data="digits")
    run = plan_runs(grid_points(parse_grid(["optimizer.lr=0.1"])), [7])[0]
    command = train_command(settings, run, tmp_path / "r")
    assert command[:4] == [sys.executable, "-m", "nnspec.runtime.cli", "train"]
    assert command[4:] == [
        "specs/digits_cnn.yaml", "--out", str(tmp_path / "r"), "--seed", "7",
        "--epochs", "3", "--data", "digits", "--set", "optimizer.lr=0.1",
    ]  # fmt: skip
    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    (tmp_path / "r" / "checkpoints" / "last.safetensors").write_bytes(b"")
    assert train_command(settings, run, tmp_path / "r")[-1] == "--resume"

    shared = SweepSettings(spec="s.yaml", overrides=["train.epochs=2"], track=["mlflow"])
    assert train_command(shared, run, tmp_path / "x")[4:] == [
        "s.yaml", "--out", str(tmp_path / "x"), "--seed", "7",
        "--set", "optimizer.lr=0.1", "--set", "train.epochs=2", "--track", "mlflow",
    ]  # fmt: skip


def test_train_call_is_the_same_run_as_the_train_command(tmp_path):
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"nnspec": 1, "name": "s", "input": {"shape": [4]},
                                "network": [{"linear": {"out": 2}}]}))
    settings = SweepSettings(spec=str(spec), epochs=3, data="digits",
                             overrides=["optimizer.lr=0.3"], track=["wandb:p"])
    run = plan_runs(grid_points(parse_grid(["optimizer.lr=0.1"])), [7])[0]
    loaded, options = train_call(settings, run, tmp_path / "r")
    assert loaded.optimizer.lr == 0.3  # shared overrides come after the point's, as on the CLI
    assert (options.seed, options.epochs, options.data, options.out) == (7, 3, "digits", tmp_path / "r")
    assert options.track == ["wandb:p"] and options.resume is False and options.progress is False


def test_backends_refuse_what_they_cannot_do(tmp_path):
    runs = plan_runs(grid_points(parse_grid(["optimizer.lr=0.1"])), [0])
    settings = SweepSettings(spec="s.yaml")
    with pytest.raises(UsageError, match="choose local, ray"):
        execute_sweep("slurm", runs, tmp_path, settings, BackendOptions())
    with pytest.raises(UsageError, match="--address, --scheduler needs --backend ray"):
        execute_sweep("local", runs, tmp_path, settings, BackendOptions(address="auto", scheduler="asha"))


def test_sweep_resumes_skipping_finished_runs_and_retrying_failed_ones(tmp_path):
    runs = plan_runs(grid_points(parse_grid(["optimizer.momentum=0,0.9"])), [0, 1])
    flaky = {"failed_once": False}

    def accuracy(values, seed):
        if values["optimizer.momentum"] == "0.9" and seed == 1 and not flaky["failed_once"]:
            flaky["failed_once"] = True
            return None
        return 0.5 + float(values["optimizer.momentum"]) / 2 + seed / 100

    runner, calls = _fake_train(accuracy)
    first = run_sweep(runs, tmp_path, runner)
    assert [o.status for o in first] == ["done", "done", "done", "failed"]
    assert first[3].returncode == 1

    second = run_sweep(runs, tmp_path, runner)
    assert [o.status for o in second] == ["skipped", "skipped", "skipped", "done"]
    assert calls == [r.relative_dir for r in runs] + ["momentum=0.9/seed1"]


def test_results_table_has_mean_and_std_over_seeds(tmp_path):
    runs = plan_runs(grid_points(parse_grid(["optimizer.momentum=0,0.9"])), [0, 1, 2])
    runner, _ = _fake_train(lambda values, seed: [0.90, 0.92, 0.97][seed])
    run_sweep(runs, tmp_path, runner)
    rows = collect_rows(tmp_path, runs)
    summary = summarise(rows)
    write_results(tmp_path, rows, summary)

    assert rows[0] == {
        "point": "momentum=0",
        "optimizer.momentum": "0",
        "seed": 0,
        "status": "finished",
        "test_accuracy": 0.90,
        "last_epoch": 2,
        "last_train_loss": 0.5,
    }
    accuracy = summary[0]["test_accuracy"]
    assert accuracy["mean"] == pytest.approx(0.93)
    # sample std of 0.90, 0.92, 0.97 by hand: sqrt((0.03^2 + 0.01^2 + 0.04^2) / 2)
    assert accuracy["std"] == pytest.approx((0.0026 / 2) ** 0.5)
    assert summary[0]["finished"] == 3

    with open(tmp_path / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 6 and table[5]["test_accuracy"] == "0.97"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"][1]["test_accuracy"]["mean"] == pytest.approx(0.93)
    assert "0.93 ± 0.036" in format_summary(summary, ["test_accuracy"])


def test_parallel_runs_overlap(tmp_path):
    # Both runs must be inside the runner at once to pass the barrier; run one at a time,
    # the first would wait out the timeout and fail.
    barrier = threading.Barrier(2, timeout=20)
    runner, _ = _fake_train(lambda values, seed: 1.0)

    def meeting_runner(planned, run_dir):
        barrier.wait()
        return runner(planned, run_dir)

    runs = plan_runs(grid_points(parse_grid(["optimizer.lr=0.1"])), [0, 1])
    outcomes = run_sweep(runs, tmp_path, meeting_runner, parallel=2)
    assert [o.status for o in outcomes] == ["done", "done"]


# ------------------------------------------------------------------------------ experiments


def test_every_bundled_experiment_loads_and_each_variant_compiles():
    from nnspec.compiler import compile_graph
    from nnspec.runtime.lab.experiments import experiment_files, load_experiment

    files = experiment_files()
    assert len(files) >= 7
    for path in files.values():
        experiment = load_experiment(path)
        assert experiment.expect, experiment.name
        spec = experiment.spec
        for overrides in experiment.variants.values():
            compile_graph(spec, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def test_bundled_experiments_compare_fairly():
    """Every claim rests on at least 3 seeds, and where the variants need different settings
    (lambda for Adam+L2 vs AdamW, lr for raw vs normalised inputs) each picks its own best of a
    grid of at least 5 values."""
    from nnspec.runtime.lab.experiments import experiment_files, load_experiment

    loaded = {name: load_experiment(path) for name, path in experiment_files().items()}
    assert {name: e.seeds for name, e in loaded.items() if e.seeds < 3} == {}
    assert len(loaded["adam_l2_vs_adamw"].grid["optimizer.weight_decay"]) >= 5
    assert len(loaded["input_normalization"].grid["optimizer.lr"]) >= 5


def test_generated_data_has_the_conditioning_it_promises():
    import numpy as np

    from nnspec.runtime.lab.experiments import GeneratedData, generate_data

    x, y = generate_data(GeneratedData(generate="ill_conditioned", samples=4000, condition=1000))
    eigenvalues = np.linalg.eigvalsh(np.cov(x.T))
    assert eigenvalues.max() / eigenvalues.min() == pytest.approx(1000, rel=0.15)
    assert x.dtype == np.float32 and set(np.unique(y)) == {0, 1}

    gap, labels = generate_data(GeneratedData(generate="scale_gap", scale=1000))
    assert gap.shape == (1797, 2, 8, 8) and labels.shape == (1797,)
    assert gap[:, 1].std() / gap[:, 0].std() == pytest.approx(1000, rel=1e-4)


def test_unknown_experiment_name_suggests_the_closest(capsys):
    from nnspec.runtime.cli import main

    assert main(["experiments", "run", "momentum_ill_conditoned"]) == 2
    assert "did you mean 'momentum_ill_conditioned'" in capsys.readouterr().err


@pytest.mark.slow  # two real `nnspec train` processes: ~15 s idle, a minute on a busy machine
def test_tiny_experiment_runs_real_training_processes(tmp_path):
    from nnspec.runtime.cli import main

    (tmp_path / "tiny.yaml").write_text(
        "name: tiny\n"
        "claim: momentum helps\n"
        "data: {generate: ill_conditioned, samples: 200, features: 4, condition: 100}\n"
        "epochs: 1\n"
        "seeds: 1\n"
        "spec:\n"
        "  nnspec: 1\n"
        "  name: tiny_logreg\n"
        "  input: {shape: [4]}\n"
        "  network: [linear: {out: 2}]\n"
        "  optimizer: {type: sgd, lr: 0.5}\n"
        "  train: {batch_size: 20}\n"
        "variants:\n"
        "  sgd: {optimizer.momentum: 0.0}\n"
        "  momentum: {optimizer.momentum: 0.9}\n"
        "expect: [{better: momentum, worse: sgd, metric: last_train_loss, "
        "lower_is_better: true}]\n"
    )
    out = tmp_path / "out"
    args = ["experiments", "run", "tiny", "--dir", str(tmp_path), "--out", str(out)]
    assert main([*args, "--parallel", "2"]) == 0
    outcome = json.loads((out / "tiny" / "outcome.json").read_text())
    assert [e["point"] for e in outcome["summary"]] == ["sgd", "momentum"]
    assert all(e["finished"] == 1 and e["params"]["mean"] == 10 for e in outcome["summary"])
    metrics = [json.loads(line) for line in (out / "tiny/momentum/seed0/metrics.jsonl").open()]
    assert metrics[-1]["momentum"] == 0.9  # the override reached the training process
    verdict = outcome["verdicts"][0]
    assert verdict["better_value"]["mean"] == outcome["summary"][1]["last_train_loss"]["mean"]


def test_dry_run_writes_the_plan_and_prints_job_array_commands(tmp_path, capsys):
    from nnspec.runtime.cli import main

    out = tmp_path / "sweep"
    argv = ["sweep", "digits_cnn", "--grid", "optimizer.lr=0.1,0.01", "--seeds", "2"]
    assert main([*argv, "--epochs", "1", "--out", str(out), "--dry-run"]) == 0
    commands = capsys.readouterr().out.splitlines()
    assert len(commands) == 4
    assert commands[0].endswith(
        f"train digits_cnn --out {out}/lr=0.1/seed0 --seed 0 --epochs 1 --set optimizer.lr=0.1"
    )
    plan = json.loads((out / "sweep.json").read_text())
    assert [r["dir"] for r in plan["runs"]][-1] == "lr=0.01/seed1"
    assert not (out / "lr=0.1").exists()  # nothing ran


def test_markdown_table_shows_runs_failures_and_verdicts():
    from nnspec.runtime.lab.experiments import markdown_table

    outcome = {
        "name": "gap",
        "summary": [
            {"point": "fc", "runs": 2, "finished": 2, "acc": {"mean": 0.98751, "std": 0.002},
             "params": {"mean": 1070314.0, "std": 0.0}},
            {"point": "gap", "runs": 2, "finished": 0, "params": {"mean": 19562.0, "std": 0.0}},
        ],
        "verdicts": [{"better": "gap", "worse": "fc", "metric": "acc",
                      "outcome": "does not hold"}],
    }  # fmt: skip
    lines = markdown_table([outcome], ["acc", "params"]).splitlines()
    assert lines[2] == "| gap | fc | 2/2 | 0.9875 ± 0.002 | 1,070,314 |"
    assert lines[3] == "| gap | gap | 0/2 | failed | 19,562 |"
    assert lines[-1] == "- **gap**: gap better than fc on acc: **does not hold**"


def test_a_point_named_like_a_parent_folder_is_refused():
    # experiment variants name their run folders: `..` would write beside the sweep
    from nnspec.runtime.lab.sweep import GridPoint

    with pytest.raises(UsageError, match="the run name '..' cannot name a folder"):
        plan_runs([GridPoint("..", (), ())], [0])
