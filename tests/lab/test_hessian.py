"""Hessian estimates checked against the exact Hessian of a tiny model (torch.autograd)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from nnspec.compiler.errors import UsageError
from nnspec.runtime.lab.hessian import (
    estimate_spectrum,
    hutchinson_trace,
    lanczos_ritz_values,
    loss_hessian_vector_product,
    model_spectrum,
)


def _tiny_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = torch.randn(10, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    batches = [(x[:6], y[:6]), (x[6:], y[6:])]  # unequal sizes: weighting must be per sample
    return model, batches, x, y


def _exact_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(vector: torch.Tensor) -> torch.Tensor:
        params, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            n = shape.numel()
            params[name] = vector[start : start + n].view(shape)
            start += n
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(loss_of, flat)


def test_hessian_vector_product_equals_exact_hessian_times_vector():
    model, batches, x, y = _tiny_problem()
    exact = _exact_hessian(model, x, y)
    hvp = loss_hessian_vector_product(model, nn.functional.cross_entropy, batches)
    v = torch.randn(exact.shape[0], dtype=torch.float64)
    torch.testing.assert_close(hvp(v), exact @ v, rtol=1e-9, atol=1e-10)


def test_full_lanczos_gives_every_exact_eigenvalue():
    model, batches, x, y = _tiny_problem()
    exact = torch.linalg.eigvalsh(_exact_hessian(model, x, y)).flip(0)
    hvp = loss_hessian_vector_product(model, nn.functional.cross_entropy, batches)
    ritz = lanczos_ritz_values(hvp, len(exact), steps=len(exact))
    # The loss surface here has exactly-zero directions (softmax shift invariance), where
    # Lanczos may stop early; the nonzero part of the spectrum must match exactly.
    nonzero = exact[exact.abs() > 1e-8]
    found = torch.tensor([r for r in ritz if abs(r) > 1e-8], dtype=torch.float64)
    torch.testing.assert_close(found, nonzero, rtol=1e-6, atol=1e-8)


def test_top_eigenvalues_converge_with_fewer_steps_than_parameters():
    model, batches, x, y = _tiny_problem()
    exact = torch.linalg.eigvalsh(_exact_hessian(model, x, y)).flip(0)
    spectrum = model_spectrum(
        model, nn.functional.cross_entropy, batches, top_k=2, lanczos_steps=15, trace_samples=2
    )
    assert spectrum.params == len(exact) == 31
    torch.testing.assert_close(
        torch.tensor(spectrum.top_eigenvalues, dtype=torch.float64), exact[:2], rtol=1e-4, atol=0
    )


def test_hutchinson_trace_is_close_to_the_exact_trace():
    model, _, x, y = _tiny_problem()
    exact = _exact_hessian(model, x, y)  # the products themselves are checked above
    estimate, stderr = hutchinson_trace(
        lambda v: exact @ v,
        exact.shape[0],
        samples=1000,
        generator=torch.Generator().manual_seed(1),
    )
    assert abs(estimate - float(exact.trace())) < 4 * stderr
    assert stderr < 0.1 * abs(float(exact.trace()))


def test_condition_indicator_is_top_over_smallest_positive_ritz_value():
    # A diagonal operator with known eigenvalues: the indicator is 100 / 0.5 = 200.
    diagonal = torch.tensor([100.0, 3.0, 0.5, -2.0], dtype=torch.float64)
    spectrum = estimate_spectrum(lambda v: diagonal * v, 4, top_k=2, lanczos_steps=4)
    assert spectrum.top_eigenvalues == pytest.approx([100.0, 3.0])
    assert spectrum.smallest_positive_ritz == pytest.approx(0.5)
    assert spectrum.condition_indicator == pytest.approx(200.0)
    assert spectrum.trace == pytest.approx(101.5)  # exact for a diagonal operator


def test_no_data_is_a_usage_error():
    model, _, _, _ = _tiny_problem()
    with pytest.raises(UsageError, match="batch"):
        loss_hessian_vector_product(model, nn.functional.cross_entropy, [])


def test_command_measures_the_loss_on_the_first_training_batches(tmp_path, capsys):
    import json

    import numpy as np

    from nnspec.runtime.cli import main
    from nnspec.runtime.train.data import load_data

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((50, 3)) * [1.0, 0.3, 0.05]).astype(np.float32)
    y = (x[:, 0] + 5 * x[:, 2] > 0).astype(np.int64)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    spec = tmp_path / "logreg.yaml"
    spec.write_text("nnspec: 1\nname: logreg\ninput: {shape: [3]}\nnetwork: [linear: {out: 2}]\n")
    argv = ["hessian", str(spec), "--data", str(tmp_path / "data.npz"), "--batches", "2",
            "--batch-size", "16", "--top-k", "3", "--steps", "8", "--json", "--seed", "3"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)

    # Reference: the exact Hessian of the same model on the same 32 training samples.
    from nnspec.compiler import build_model

    model = build_model(str(spec), seed=3).double()
    train = load_data(str(tmp_path / "data.npz"), (3,)).train
    xs = torch.stack([train[i][0] for i in range(32)]).double()
    ys = torch.stack([train[i][1] for i in range(32)])
    exact = torch.linalg.eigvalsh(_exact_hessian(model, xs, ys)).flip(0)
    assert result["params"] == 8 and result["batches"] == 2
    torch.testing.assert_close(
        torch.tensor(result["top_eigenvalues"], dtype=torch.float64),
        exact[:3],
        rtol=1e-4,
        atol=1e-7,
    )
