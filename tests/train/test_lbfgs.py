"""`optimizer.type: lbfgs`: nnspec's optimizer is torch.optim.LBFGS (same weights as torch's run
directly with the same closure), it trains end to end through `nnspec train` (below plain
SGD's training loss at the same number of steps on an ill-conditioned problem), and the
combinations it cannot honour are located spec errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from nnspec.compiler.training_schema import OptimizerConfig
from nnspec.runtime.cli import main
from nnspec.runtime.train.optim import build_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")


def ill_conditioned(n: int = 256, features: int = 10, seed: int = 0):
    """Logistic regression whose feature scales run from 1 to 1/sqrt(1000): a Hessian with a
    condition number around 1000, the lecture's ravine."""
    rng = np.random.default_rng(seed)
    scales = np.logspace(0, -1.5, features)
    x = rng.standard_normal((n, features)) * scales
    w_true = rng.standard_normal(features) / scales
    y = (x @ w_true + 0.3 * rng.standard_normal(n) > 0).astype(np.int64)
    return x.astype(np.float32), y


@pytest.mark.parametrize("line_search", ["strong_wolfe", None])
def test_nnspec_lbfgs_equals_torch_lbfgs_with_the_same_closure(line_search):
    x, y = (torch.from_numpy(a) for a in ill_conditioned())
    x, y = x.double(), y.double()
    options = {"lr": 0.5, "max_iter": 7, "history_size": 5, "line_search_fn": line_search,
               "tolerance_grad": 1e-12, "tolerance_change": 1e-14}
    weights = []
    for ours in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Linear(10, 1).double()
        if ours:
            optimizer = build_optimizer(model, OptimizerConfig(type="lbfgs", **options))
        else:
            optimizer = torch.optim.LBFGS(model.parameters(), **options)

        def closure(model=model, optimizer=optimizer):
            optimizer.zero_grad()
            loss = F.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
            loss.backward()
            return loss

        for _ in range(4):
            optimizer.step(closure)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], torch.nn.Linear(10, 1).double().weight.flatten())


def test_lbfgs_lr_defaults_to_one():
    assert OptimizerConfig(type="lbfgs").lr == 1.0
    assert OptimizerConfig(type="lbfgs", lr=0.3).lr == 0.3
    assert OptimizerConfig().lr == 0.1


def spec_file(tmp_path, optimizer: dict, name: str = "logreg", **train) -> str:
    spec = {
        "nnspec": 1, "name": name, "input": {"shape": [10]},
        "network": [{"linear": {"out": 2}}],
        "optimizer": optimizer,
        "train": {"epochs": 8, "batch_size": 1024, "val_fraction": 0.1, "test_fraction": 0.1,
                  **train},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def last_train_loss(run_dir) -> float:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["train_loss"]


def test_lbfgs_trains_end_to_end_below_sgd_at_the_same_steps(tmp_path, capsys):
    x, y = ill_conditioned(n=320)
    data = tmp_path / "logreg.npz"
    np.savez(data, x=x, y=y)
    losses = {}
    for name, optimizer in [("lbfgs", {"type": "lbfgs", "max_iter": 10}),
                            ("sgd", {"type": "sgd", "lr": 1.0})]:
        spec = spec_file(tmp_path, optimizer, name=name)
        out = tmp_path / "runs" / name
        args = ["train", spec, "--data", str(data), "--out", str(out), "--no-progress"]
        assert main(args) == 0, capsys.readouterr().err
        final = json.loads((out / "final.json").read_text())
        assert final["steps"] == 8  # full batch: one step per epoch
        losses[name] = last_train_loss(out)
    # the loss before the 8th step; measured: lbfgs 1.6e-7, sgd 0.60 (momentum 0.9: 0.60)
    assert losses["lbfgs"] < 0.5 * losses["sgd"], losses


@pytest.mark.parametrize(("extra", "train", "where"), [
    ({"weight_decay": 0.01}, {}, "optimizer.weight_decay"),
    ({"no_decay": ["bias"]}, {}, "optimizer.no_decay"),
    ({"groups": [{"params": ["linear1"], "lr": 0.5}]}, {}, "optimizer.groups"),
    ({}, {"amp": True}, "train.amp"),
    ({}, {"accumulate": 2}, "train.accumulate"),
    ({}, {"grad_clip": 1.0}, "train.grad_clip"),
])
def test_combinations_lbfgs_cannot_honour_exit_2_located(tmp_path, capsys, extra, train, where):
    spec = spec_file(tmp_path, {"type": "lbfgs", **extra}, **train)
    key = where.split(".")[-1] + ":"
    line = next(i for i, text in enumerate(open(spec), 1) if text.strip().startswith(key))
    assert main(["check", spec]) == 2
    captured = capsys.readouterr()
    err = captured.err + captured.out
    # the mark is the value's: on the key's line, or the next for a block list
    assert re.search(rf"logreg.yaml:({line}|{line + 1}):\d+: {where}: ", err), err
    assert "(optimizer.type: lbfgs)" in err and "hint:" in err


def test_momentum_schedules_and_momentum_are_refused_for_lbfgs(tmp_path, capsys):
    spec = spec_file(tmp_path, {"type": "lbfgs"})
    for schedule in ("{lr: {type: one_cycle}}", "{momentum: {type: sutskever}}"):
        code = main(["check", spec, "--set", f"schedule={schedule}"])
        err = capsys.readouterr()
        assert code == 2 and "LBFGS has no momentum" in err.err + err.out
    assert main(["check", spec, "--set", "optimizer.momentum=0.9"]) == 2
    assert "lbfgs has no momentum" in capsys.readouterr().err
    assert main(["check", spec, "--set", "optimizer.type=sgd",
                 "--set", "optimizer.history_size=5"]) == 2
    assert "history_size: options of type: lbfgs" in capsys.readouterr().err


def test_amp_from_the_command_line_is_refused(tmp_path, capsys):
    x, y = ill_conditioned(n=64)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    spec = spec_file(tmp_path, {"type": "lbfgs"})
    code = main(["train", spec, "--data", str(tmp_path / "d.npz"), "--amp",
                 "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 2
    assert "lbfgs cannot train with mixed precision" in capsys.readouterr().err


def test_resume_continues_lbfgs_exactly(tmp_path, capsys):
    """LBFGS keeps its curvature history in lists of tensors; the checkpoint carries them."""
    from safetensors.torch import load_file

    x, y = ill_conditioned(n=200, seed=1)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    spec = spec_file(tmp_path, {"type": "lbfgs", "max_iter": 4, "history_size": 3},
                     epochs=6, batch_size=64)
    common = ["--data", str(tmp_path / "d.npz"), "--no-progress"]
    assert main(["train", spec, "--out", str(tmp_path / "straight"), *common]) == 0
    assert main(["train", spec, "--out", str(tmp_path / "split"), "--epochs", "3", *common]) == 0
    assert main(["train", spec, "--out", str(tmp_path / "split"), "--resume", "--epochs", "6",
                 *common]) == 0
    capsys.readouterr()
    straight, split = (load_file(tmp_path / d / "checkpoints" / "last.safetensors")
                       for d in ("straight", "split"))
    assert straight.keys() == split.keys()
    assert all(torch.equal(straight[k], split[k]) for k in straight)
