"""`nnspec sweep --backend ray`: Ray Tune trials on a local 2-CPU Ray instance write the same
run directories and table as the local backend, and ASHA's stopped trials still get tested."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnspec.runtime.cli import main

DIGITS_CNN = str(Path(__file__).parents[2] / "specs" / "digits_cnn.yaml")
# Wall-clock figures differ between any two runs; everything else must match.
TIMED = ("train_seconds", "session_seconds", "last_images_per_second", "last_epoch_seconds")


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")  # a test dependency; CI installs it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0", "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


def rows(sweep_dir: Path) -> list[dict]:
    table = json.loads((sweep_dir / "results.json").read_text())["rows"]
    return [{k: v for k, v in row.items() if k not in TIMED} for row in table]


def sweep(*args: str, spec: str = DIGITS_CNN, seeds: int = 2, parallel: int = 2) -> int:
    return main(["sweep", spec, "--set", "train.batch_size=64", "--seeds", str(seeds),
                 "--parallel", str(parallel), *args])


SMALL_CNN = {
    "nnspec": 1,
    "name": "small",
    "input": {"shape": [1, 8, 8]},
    "normalize": "auto",
    "network": [{"conv": {"out": 8, "kernel": 3, "padding": 1}}, "relu", "global_avg_pool",
                {"linear": {"out": 10}}],
    "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
}


def test_ray_trials_give_the_local_backends_table(ray_instance, tmp_path, capsys):
    grid = ["--grid", "optimizer.lr=0.05,0.1", "--epochs", "1"]
    assert sweep(*grid, "--out", str(tmp_path / "local")) == 0
    assert sweep(*grid, "--backend", "ray", "--out", str(tmp_path / "ray")) == 0
    local, ray = rows(tmp_path / "local"), rows(tmp_path / "ray")
    assert len(ray) == 4 and all(r["status"] == "finished" for r in ray)
    assert ray == local
    assert "lr=0.05/seed1" in (tmp_path / "ray" / "lr=0.05" / "seed1" / "train.log").read_text()
    # The table is read from the run directories: `nnspec report` shows it like any sweep's.
    assert main(["report", str(tmp_path / "ray"), "-o", str(tmp_path / "r.html")]) == 0
    capsys.readouterr()


def test_asha_stops_a_poor_trial_whose_run_is_then_tested_at_its_best(ray_instance, tmp_path):
    # One trial at a time: the lr 0.2 run sets ASHA's rungs (epochs 1 and 2), then the lr 1e-5
    # run, which barely moves, falls below the first rung's cutoff and is stopped there.
    (tmp_path / "small.json").write_text(json.dumps(SMALL_CNN))
    out = tmp_path / "asha"
    args = ["--grid", "optimizer.lr=0.2,0.00001", "--epochs", "2", "--backend", "ray",
            "--scheduler", "asha", "--grace-period", "1", "--out", str(out)]
    assert sweep(*args, spec=str(tmp_path / "small.json"), seeds=1, parallel=1) == 0
    good, poor = rows(out)
    assert good["status"] == poor["status"] == "finished"
    assert good["epochs"] == 2 and "stop_reason" not in good
    assert poor["stop_reason"] == "asha" and poor["epochs"] == 1
    assert poor["test_accuracy"] < good["test_accuracy"]
    assert json.loads((out / "lr=0.00001" / "seed0" / "final.json").read_text())["epochs"] == 1
