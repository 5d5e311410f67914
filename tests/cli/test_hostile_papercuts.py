"""Command-line papercuts from the hostile-input review: --set locations, check's budget flags,
codegen on a run directory, init-stats on an experiment file."""

from __future__ import annotations

import json
import shutil

from nnspec.compiler.resources import specs_dir
from nnspec.runtime.cli import main


def test_set_errors_name_the_argument_not_a_line_of_it(capsys):
    assert main(["check", "digits_cnn", "--set", "optimizer.lrr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "--set optimizer.lrr=0.1: optimizer.lrr: unknown key 'lrr' (did you mean 'lr'?)" in err
    assert ":1:1" not in err


def test_check_budget_flags(tmp_path, capsys):
    spec = tmp_path / "wide.yaml"
    spec.write_text("nnspec: 1\nname: wide\ninput: {shape: [64]}\n"
                    "network: [{linear: {out: 100000000}}]\n")  # 6.5G parameters
    assert main(["check", str(spec)]) == 2
    assert "the model has 6.5G parameters, more than the budget of 4G" in capsys.readouterr().err
    assert main(["check", str(spec), "--max-params", "10G", "--max-memory", "64GiB"]) == 0
    assert main(["check", str(spec), "--max-params", "7G", "--max-memory", "1GiB"]) == 2
    assert "more than the budget of 1 GiB" in capsys.readouterr().err


def test_codegen_takes_a_run_directory_like_export(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(specs_dir() / "digits_cnn.yaml", run / "spec.yaml")
    assert main(["codegen", str(run)]) == 0
    from_run = capsys.readouterr().out
    assert main(["codegen", str(specs_dir() / "digits_cnn.yaml")]) == 0
    from_spec = capsys.readouterr().out
    body = lambda text: text.split("\n", 1)[1]  # noqa: E731 - the first line names the file
    assert "class DigitsCnn(nn.Module)" in from_run and body(from_run) == body(from_spec)


def test_init_stats_measures_each_variant_of_an_experiment(capsys):
    experiment = specs_dir() / "experiments" / "init_deep_relu.yaml"
    assert main(["init-stats", str(experiment), "--batch", "32", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["spec"] == "init_deep_relu"
    assert list(data["series"]) == ["kaiming", "xavier", "normal_0.01"]

    def last_linear_std(series):
        return [row for row in series if row["kind"] == "linear"][-1]["act_std"]

    stds = {name: last_linear_std(series) for name, series in data["series"].items()}
    # the lecture's claim at init: Kaiming keeps the scale through 21 layers, N(0, 0.01) loses it
    assert stds["kaiming"] > 0.3 and stds["normal_0.01"] < 1e-10 < stds["xavier"] < 0.1
