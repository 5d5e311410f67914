"""Curvature of the training loss: Hessian-vector products, Lanczos Ritz values, Hutchinson trace.

The lecture estimates how badly conditioned a region of the loss is from the spread of the
Hessian's eigenvalues. The Hessian itself is never formed: a Hessian-vector product costs two
backward passes (Pearlmutter's trick, as in PyHessian), and Lanczos with full
reorthogonalisation turns a few dozen of them into Ritz values whose extremes converge first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from nnspec.compiler.errors import UsageError

HessianVectorProduct = Callable[[Tensor], Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class HessianSpectrum:
    """What `estimate_spectrum` measured; all eigenvalues in descending order."""

    params: int
    top_eigenvalues: list[float]
    ritz_values: list[float]
    trace: float
    trace_stderr: float
    smallest_positive_ritz: float | None
    condition_indicator: float | None
    lanczos_steps: int
    trace_samples: int

    def to_dict(self) -> dict:
        return asdict(self)


def flat_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters whose curvature is measured, in a fixed order."""
    return [p for p in model.parameters() if p.requires_grad]


def loss_hessian_vector_product(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[tuple[Tensor, Tensor]],
    params: list[nn.Parameter] | None = None,
) -> HessianVectorProduct:
    """Return v -> H v for the mean loss over `batches`, with v and H v flat vectors.

    Each call recomputes the forward pass batch by batch (memory stays at one batch's graph);
    the per-batch products are weighted by batch size so the result is the Hessian of the mean
    loss over all samples. The model should be in eval mode so dropout does not make H random.
    """
    params = flat_parameters(model) if params is None else params
    if not params:
        raise UsageError("the model has no trainable parameters, so there is no Hessian")
    if not batches:
        raise UsageError("at least one batch of data is needed to measure the Hessian")
    total = sum(len(y) for _, y in batches)

    def product(vector: Tensor) -> Tensor:
        vector = vector.to(params[0].dtype)
        pieces = _unflatten(vector, params)
        result = torch.zeros_like(vector)
        for x, y in batches:
            loss = loss_fn(_main_output(model(x)), y)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            dot = sum((g * v).sum() for g, v in zip(grads, pieces, strict=True))
            hv = torch.autograd.grad(dot, params)
            result += _flatten(hv).detach() * (len(y) / total)
        return result

    return product


def lanczos_ritz_values(
    hvp: HessianVectorProduct,
    size: int,
    steps: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> list[float]:
    """Ritz values of the symmetric operator `hvp` after `steps` Lanczos iterations, descending.

    Full reorthogonalisation keeps the basis orthogonal in floating point, so with
    `steps == size` the Ritz values are the exact eigenvalues. Stops early when the Krylov
    space is exhausted (an invariant subspace was found).
    """
    steps = min(steps, size)
    basis = torch.zeros(steps, size, dtype=dtype)
    alphas: list[float] = []
    betas: list[float] = []
    q = torch.randn(size, generator=generator, dtype=dtype)
    q /= q.norm()
    for i in range(steps):
        basis[i] = q
        w = hvp(q).to(dtype)
        alpha = float(w @ q)
        alphas.append(alpha)
        # Subtract the projection on every earlier vector (twice: "twice is enough").
        for _ in range(2):
            w -= basis[: i + 1].T @ (basis[: i + 1] @ w)
        beta = float(w.norm())
        if i == steps - 1 or beta < 1e-10 * max(1.0, abs(alpha)):
            break
        betas.append(beta)
        q = w / beta
    k = len(alphas)
    tridiagonal = torch.diag(torch.tensor(alphas, dtype=dtype))
    if k > 1:
        off = torch.tensor(betas[: k - 1], dtype=dtype)
        tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
    values = torch.linalg.eigvalsh(tridiagonal)
    return sorted(values.tolist(), reverse=True)


def hutchinson_trace(
    hvp: HessianVectorProduct,
    size: int,
    samples: int,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Hutchinson's estimate of tr(H) as the mean of vᵀHv over Rademacher vectors v.

    Returns (estimate, standard error of the estimate).
    """
    if samples < 1:
        raise UsageError("the trace estimate needs at least one sample")
    values = []
    for _ in range(samples):
        v = torch.randint(0, 2, (size,), generator=generator, dtype=torch.float64) * 2 - 1
        values.append(float(v @ hvp(v).to(torch.float64)))
    mean = sum(values) / samples
    if samples == 1:
        return mean, math.inf
    variance = sum((x - mean) ** 2 for x in values) / (samples - 1)
    return mean, math.sqrt(variance / samples)


def estimate_spectrum(
    hvp: HessianVectorProduct,
    size: int,
    top_k: int = 5,
    lanczos_steps: int = 40,
    trace_samples: int = 20,
    seed: int = 0,
) -> HessianSpectrum:
    """Top-k eigenvalues, the Ritz values, the trace, and a conditioning indicator.

    The indicator is λ_max divided by the smallest positive Ritz value: Lanczos resolves the
    extremes of the spectrum first, so this is a lower-end estimate of how elongated the
    ravine is along the directions Lanczos has explored, not the true condition number.
    """
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    generator = torch.Generator().manual_seed(seed)
    ritz = lanczos_ritz_values(hvp, size, max(lanczos_steps, top_k), generator)
    trace, stderr = hutchinson_trace(hvp, size, trace_samples, generator)
    positive = [r for r in ritz if r > 1e-8 * max(abs(ritz[0]), 1e-12)]
    smallest = min(positive) if positive else None
    condition = ritz[0] / smallest if smallest and ritz[0] > 0 else None
    return HessianSpectrum(
        params=size,
        top_eigenvalues=ritz[:top_k],
        ritz_values=ritz,
        trace=trace,
        trace_stderr=stderr,
        smallest_positive_ritz=smallest,
        condition_indicator=condition,
        lanczos_steps=len(ritz),
        trace_samples=trace_samples,
    )


def model_spectrum(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[tuple[Tensor, Tensor]],
    top_k: int = 5,
    lanczos_steps: int = 40,
    trace_samples: int = 20,
    seed: int = 0,
) -> HessianSpectrum:
    """`estimate_spectrum` of the mean training loss of `model` over `batches` (eval mode)."""
    was_training = model.training
    model.eval()
    try:
        params = flat_parameters(model)
        hvp = loss_hessian_vector_product(model, loss_fn, batches, params)
        size = sum(p.numel() for p in params)
        return estimate_spectrum(hvp, size, top_k, lanczos_steps, trace_samples, seed)
    finally:
        model.train(was_training)


def _main_output(output):
    # A compiled model with training-only heads returns (output, heads) in train mode only;
    # eval mode is used here, but accept the pair so a caller's train-mode model still works.
    return output[0] if isinstance(output, tuple) else output


def _flatten(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflatten(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    pieces, start = [], 0
    for t in like:
        pieces.append(vector[start : start + t.numel()].view_as(t))
        start += t.numel()
    return pieces


def training_batches(
    model: nn.Module, spec, source: str, count: int, batch_size: int
) -> list[tuple[Tensor, Tensor]]:
    """The first `count` batches of the training split of `source`, in a fixed order.

    A freshly built model of a `normalize: auto` spec gets the training split's statistics
    first, as `nnspec train` would give it.
    """
    from nnspec.runtime.train.data import channel_stats, load_spec_data, make_loader

    splits = load_spec_data(spec, source, output_shape=model.graph.output_shape)
    normalization = getattr(model, "input_normalization", None)
    if spec.normalize == "auto" and normalization is not None:
        mean, std = channel_stats(splits.train)
        if bool((normalization.mean == 0).all()) and bool((normalization.std == 1).all()):
            model.set_normalization(mean, std)
    batches = []
    for x, y in make_loader(splits.train, batch_size, train=False):
        batches.append((x, y))
        if len(batches) == count:
            break
    return batches
