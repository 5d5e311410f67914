"""The lecture's remaining claims as experiments, and the metrics they need: epochs to a target
and Hessian curvature of a run. (Verdicts, TOST included: tests/lab/test_verdicts.py.)"""

from __future__ import annotations

import json
import math

import pytest
import torch

from nnspec.compiler.errors import SpecError
from nnspec.runtime.lab.experiment_metrics import (
    HessianRecording,
    Target,
    epochs_to_target,
    hessian_metrics,
    target_metrics,
)

NEW_EXPERIMENTS = {
    "momentum_init", "adam_vs_sgd_scale_gap", "ln_vs_bn_batch_size", "residual_hessian",
    "bn_affine", "dropout_slows_training",
}  # fmt: skip


# ------------------------------------------------------------------------------ the files


@pytest.mark.parametrize("name", sorted(NEW_EXPERIMENTS))
def test_new_experiment_loads_and_each_variant_builds(name):
    from nnspec.compiler import build_model
    from nnspec.runtime.lab.experiments import EXPERIMENTS_DIR, load_experiment, variant_specs

    experiment = load_experiment(EXPERIMENTS_DIR / f"{name}.yaml")
    assert experiment.name == name
    assert experiment.seeds >= 3 and experiment.expect
    specs = variant_specs(experiment)
    assert set(specs) == set(experiment.variants)
    for spec in specs.values():
        build_model(spec)


def test_variants_differ_only_in_what_the_claim_compares():
    from nnspec.compiler import build_model
    from nnspec.runtime.lab.experiments import EXPERIMENTS_DIR, load_experiment, variant_specs

    def specs(name):
        return variant_specs(load_experiment(EXPERIMENTS_DIR / f"{name}.yaml"))

    def params(spec):
        return sum(p.numel() for p in build_model(spec).parameters())

    residual = specs("residual_hessian")
    assert params(residual["plain"]) == params(residual["residual"])  # same layers

    def block_ends(spec):  # the last linear layer of each residual body
        return [m for name, m in build_model(spec).named_modules()
                if name.startswith("res_unit") and name.endswith("linear2")]  # fmt: skip

    assert len(block_ends(residual["residual_zero_init"])) == 6
    assert not any(m.weight.any() for m in block_ends(residual["residual_zero_init"]))
    assert all(m.weight.any() for m in block_ends(residual["residual"]))
    affine = specs("bn_affine")
    model = build_model(affine["no_affine"])
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 3 and not any(m.affine for m in norms)
    # gamma and beta: 2 per channel of 32 + 64 + 64 channels
    assert params(affine["affine"]) - params(affine["no_affine"]) == 2 * (32 + 64 + 64)
    norm = specs("ln_vs_bn_batch_size")
    assert norm["ln_batch2"].train.batch_size == 2 and norm["bn_batch64"].train.batch_size == 64
    kinds = {type(m) for m in build_model(norm["ln_batch2"]).modules()}
    assert torch.nn.LayerNorm in kinds and torch.nn.BatchNorm1d not in kinds


# ------------------------------------------------------------------------------ epochs to target


def test_epochs_to_target_on_a_hand_written_metrics_file(tmp_path):
    from nnspec.runtime.lab.sweep import read_metrics

    losses = [2.1, 0.8, 0.3, 0.12, 0.09, 0.11, 0.05]
    accuracy = [0.3, 0.6, 0.8, 0.9, 0.95, 0.96, 0.97]
    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": i + 1, "train_loss": loss, "val_accuracy": acc}) + "\n"
        for i, (loss, acc) in enumerate(zip(losses, accuracy, strict=True))
    ))  # fmt: skip
    records = read_metrics(tmp_path)
    # By hand: 0.09 in epoch 5 is the first loss <= 0.1; 0.95 in epoch 5 the first acc >= 0.95.
    assert epochs_to_target(records, "train_loss", Target(below=0.1), 7) == 5
    assert epochs_to_target(records, "train_loss", Target(below=0.3), 7) == 3  # inclusive
    assert epochs_to_target(records, "val_accuracy", Target(above=0.95), 7) == 5
    # Never reached: one more than the epochs run (a lower bound).
    assert epochs_to_target(records, "train_loss", Target(below=0.01), 7) == 8
    columns = target_metrics(records, {"train_loss": Target(below=0.01)}, 7)
    assert columns == {"epochs_to_train_loss": 8, "reached_train_loss": 0}


def test_a_non_finite_value_never_reaches_a_target():
    records = [{"epoch": 1, "train_loss": math.nan}, {"epoch": 2, "train_loss": 0.05}]
    assert epochs_to_target(records, "train_loss", Target(below=0.1), 2) == 2


def test_a_target_gives_exactly_one_bound(tmp_path):
    from nnspec.runtime.lab.experiments import load_experiment

    path = tmp_path / "x.yaml"
    path.write_text(
        "name: x\nclaim: c\nspec: s.yaml\nvariants: {a: {}, b: {}}\n"
        "targets: {train_loss: {below: 0.1, above: 0.2}}\n"
    )
    with pytest.raises(SpecError, match="exactly one of `below` or `above`"):
        load_experiment(path)


# ------------------------------------------------------------------------------ equivalence


def test_the_experiment_verdict_uses_equivalence_when_the_expectation_asks_for_it():
    from nnspec.runtime.lab.experiments import Experiment, verdict

    experiment = Experiment(
        name="x", claim="a and b are alike", spec="s.yaml", variants={"a": {}, "b": {}},
        expect=[{"better": "a", "worse": "b", "metric": "acc", "equivalent_within": 0.01}],
    )  # fmt: skip
    same = [
        {"point": "a", "runs": 3, "finished": 3, "acc": {"mean": 0.97, "std": 0.001}},
        {"point": "b", "runs": 3, "finished": 3, "acc": {"mean": 0.971, "std": 0.001}},
    ]
    [result] = verdict(experiment, same)
    # A plain difference rule would call b (not a) better here; equivalence does not care.
    assert result["outcome"] == "holds" and result["equivalent_within"] == 0.01


# ------------------------------------------------------------------------------ curvature


def _tiny_run(tmp_path, lr: float):
    from nnspec.compiler import load_spec
    from nnspec.runtime.train import train
    from nnspec.runtime.train.options import TrainOptions

    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(
        "nnspec: 1\nname: tiny\ninput: {shape: [1, 8, 8]}\nnormalize: auto\n"
        "network: [flatten, linear: {out: 8}, tanh, linear: {out: 10}]\n"
        f"optimizer: {{type: sgd, lr: {lr}}}\ntrain: {{batch_size: 64}}\n"
    )
    run_dir = tmp_path / f"run_lr{lr}"
    options = TrainOptions(data="digits", epochs=1, seed=3, out=run_dir, progress=False)
    train(load_spec(spec_path), options, log=lambda _: None)
    return run_dir


def test_hessian_metrics_equal_the_hessian_code_called_directly(tmp_path):
    from nnspec.runtime.lab.hessian import model_spectrum, training_batches
    from nnspec.runtime.train.evaluate import load_trained_model
    from nnspec.runtime.train.tasks import make_task

    run_dir = _tiny_run(tmp_path, lr=0.1)
    recording = HessianRecording(at=["trained"], batches=2, batch_size=64, steps=10)
    metrics = hessian_metrics(run_dir, recording)

    model, spec = load_trained_model(run_dir, "last")
    batches = training_batches(model, spec, "digits", 2, 64)
    loss = make_task(spec, model.graph.output_shape).eval_loss
    direct = model_spectrum(model, loss, batches, top_k=1, lanczos_steps=10, trace_samples=10)
    assert metrics["hessian_top_trained"] == pytest.approx(direct.top_eigenvalues[0], rel=1e-6)
    assert metrics["hessian_trace_trained"] == pytest.approx(direct.trace, rel=1e-6)
    assert set(metrics) == {"hessian_top_trained", "hessian_trace_trained"}


def test_hessian_at_init_is_the_trainers_starting_point(tmp_path):
    # With a vanishing lr the trained weights are the initial ones, so the curvature rebuilt
    # "at init" from the run's spec and seed must equal the curvature of the trained weights.
    run_dir = _tiny_run(tmp_path, lr=1e-12)
    recording = HessianRecording(batches=1, batch_size=64, steps=8, trace_samples=4)
    metrics = hessian_metrics(run_dir, recording)
    assert metrics["hessian_top_init"] == pytest.approx(metrics["hessian_top_trained"], rel=1e-5)
    assert metrics["hessian_trace_init"] == pytest.approx(
        metrics["hessian_trace_trained"], rel=1e-5
    )
    # A different seed builds other weights: the rebuild really depends on the run's seed.
    other = tmp_path / "other_seed"
    other.mkdir()
    for name in ("spec.yaml", "task.json", "normalization.json"):
        if (run_dir / name).exists():
            (other / name).write_text((run_dir / name).read_text())
    settings = json.loads((run_dir / "run.json").read_text())
    settings["settings"]["seed"] = 4
    (other / "run.json").write_text(json.dumps(settings))
    other_metrics = hessian_metrics(other, HessianRecording(**{**recording.model_dump(),
                                                               "at": ["init"]}))  # fmt: skip
    assert other_metrics["hessian_top_init"] != pytest.approx(metrics["hessian_top_init"])


def test_rows_of_finished_runs_get_the_derived_columns(tmp_path):
    from nnspec.runtime.lab.experiment_metrics import add_run_metrics
    from nnspec.runtime.lab.sweep import read_metrics

    run_dir = _tiny_run(tmp_path, lr=0.1)
    rows = [{"status": "finished"}, {"status": "missing"}]
    recording = HessianRecording(at=["init"], batches=1, batch_size=32, steps=5, trace_samples=2)
    add_run_metrics(rows, [run_dir, tmp_path / "never_ran"],
                    {"train_loss": Target(below=100.0)}, recording, epochs=1)  # fmt: skip
    assert rows[1] == {"status": "missing"}  # a run that did not finish gets nothing
    assert rows[0]["epochs_to_train_loss"] == 1 and rows[0]["reached_train_loss"] == 1
    assert read_metrics(run_dir)[0]["train_loss"] <= 100.0
    cached = json.loads((run_dir / "experiment_hessian.json").read_text())["metrics"]
    assert rows[0]["hessian_top_init"] == cached["hessian_top_init"]


# ------------------------------------------------------------------------------ end to end


@pytest.mark.slow  # two real `nnspec train` processes of one epoch each
def test_dropout_experiment_runs_and_counts_epochs_to_its_target(tmp_path):
    from nnspec.runtime.cli import main

    out = tmp_path / "out"
    argv = ["experiments", "run", "dropout_slows_training", "--epochs", "2", "--seeds", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    outcome = json.loads((out / "dropout_slows_training" / "outcome.json").read_text())
    for entry in outcome["summary"]:
        lines = (out / "dropout_slows_training" / entry["point"] / "seed0" / "metrics.jsonl")
        losses = [json.loads(line)["train_loss"] for line in lines.read_text().splitlines()]
        expected = next((i + 1 for i, loss in enumerate(losses) if loss <= 0.1), 3)
        assert entry["epochs_to_train_loss"]["mean"] == expected
        assert entry["reached_train_loss"]["mean"] == float(expected <= 2)
    assert outcome["verdicts"][0]["metric"] == "epochs_to_train_loss"


# ------------------------------------------------------------------------------ display


def _outcome_with_derived_columns():
    return {
        "name": "norms",
        "claim": "ln at batch 2 is as good as at 64",
        "summary": [
            {"point": "ln_batch2", "runs": 3, "finished": 3,
             "test_accuracy": {"mean": 0.95, "std": 0.01},
             "epochs_to_train_loss": {"mean": 4.0, "std": 1.0}},
            {"point": "ln_batch64", "runs": 3, "finished": 3,
             "test_accuracy": {"mean": 0.96, "std": 0.01}},
        ],
        "verdicts": [{"better": "ln_batch2", "worse": "ln_batch64", "metric": "test_accuracy",
                      "equivalent_within": 0.02, "outcome": "inconclusive"}],
    }  # fmt: skip


def test_the_table_names_an_equivalence_and_leaves_unmeasured_cells_blank():
    from nnspec.runtime.lab.experiments import markdown_table

    lines = markdown_table([_outcome_with_derived_columns()],
                           ["test_accuracy", "epochs_to_train_loss"]).splitlines()  # fmt: skip
    assert lines[2] == "| norms | ln_batch2 | 3/3 | 0.95 ± 0.01 | 4 ± 1 |"
    assert lines[3] == "| norms | ln_batch64 | 3/3 | 0.96 ± 0.01 | – |"  # measured, not failed
    assert lines[-1] == (
        "- **norms**: ln_batch2 equivalent to ln_batch64 within ±0.02 on test_accuracy: "
        "**inconclusive**"
    )


def test_the_report_shows_derived_columns_and_equivalence_verdicts(tmp_path):
    from nnspec.runtime.lab.report import sweep_section

    outcome = _outcome_with_derived_columns()
    (tmp_path / "results.json").write_text(json.dumps({"rows": [], "summary": outcome["summary"]}))
    (tmp_path / "outcome.json").write_text(json.dumps(outcome))
    section = sweep_section(tmp_path)
    assert section.columns == ["point", "runs", "test_accuracy", "epochs_to_train_loss"]
    [line] = section.verdicts  # re-judged from the summary by the current rule
    assert line.startswith("ln_batch2 equivalent to ln_batch64 within ±0.02 on test_accuracy: ")
    assert "rule: TOST" in line


def test_scale_split_data_scales_the_right_half_of_each_digit():
    import numpy as np

    from nnspec.runtime.lab.experiments import GeneratedData, generate_data
    from nnspec.runtime.train.data import digits_arrays

    images, labels = digits_arrays()
    x, y = generate_data(GeneratedData(generate="scale_split", scale=1000))
    assert x.shape == images.shape and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., :4], images[..., :4])
    np.testing.assert_allclose(x[..., 4:], images[..., 4:] * 1000)
    np.testing.assert_array_equal(y, labels)
