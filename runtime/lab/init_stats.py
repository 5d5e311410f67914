"""Activation and gradient statistics of a freshly initialised model, layer by layer.

The lecture's vanishing/exploding picture: push a standard normal batch through the model,
backpropagate a standard normal output gradient, and watch how the spread of activations and
of the backpropagated gradients changes with depth. A good init keeps both roughly constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

# Init schemes compared against the spec's own by `nnspec init-stats --plot`.
ALTERNATIVE_INITS: dict[str, dict] = {
    "kaiming_normal": {"scheme": "kaiming_normal", "nonlinearity": "relu"},
    "xavier_normal": {"scheme": "xavier_normal"},
    "normal_0.01": {"scheme": "normal", "std": 0.01},
}


@dataclass
class LayerStats:
    """Statistics of one leaf module's output (its activation) at initialisation."""

    depth: int
    name: str
    kind: str
    shape: list[int]
    act_mean: float
    act_std: float
    grad_std: float | None  # std of dLoss/d(activation); None when no gradient reached it
    weight_grad_std: float | None  # std of dLoss/d(weight) for layers with a weight matrix

    def to_dict(self) -> dict:
        return asdict(self)


def layer_statistics(
    model: nn.Module, inputs: Sequence[Tensor], seed: int = 0, kinds: dict[str, str] | None = None
) -> list[LayerStats]:
    """Forward `inputs` through `model`, backward a standard normal gradient, collect stats.

    Every leaf module (one with no children) is observed in call order; `kinds` maps module
    names to a display kind (e.g. the spec's layer kinds), defaulting to the class name.
    The model is put in train mode (batch norm uses batch statistics, as in the first step of
    training) and left with no gradients accumulated.
    """
    kinds = kinds or {}
    records: list[dict] = []
    handles = []

    def observe(name: str, module: nn.Module):
        def hook(_module, _args, output):
            if isinstance(output, tuple):
                output = output[0]
            if not isinstance(output, Tensor) or not output.is_floating_point():
                return
            record = {
                "name": name,
                "kind": kinds.get(name, type(module).__name__),
                "shape": list(output.shape[1:]),
                "act_mean": float(output.detach().mean()),
                "act_std": float(output.detach().std()) if output.numel() > 1 else 0.0,
                "grad_std": None,
                "module": module,
            }
            records.append(record)
            if output.requires_grad:
                output.register_hook(lambda grad: record.update(grad_std=float(grad.std())))

        return hook

    for name, module in model.named_modules():
        if name and not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(observe(name, module)))
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        output = model(*inputs)
        if isinstance(output, tuple):  # training-only heads: the main output drives the picture
            output = output[0]
        generator = torch.Generator().manual_seed(seed)
        upstream = torch.randn(output.shape, generator=generator, dtype=output.dtype)
        output.backward(upstream)
        stats = []
        for depth, record in enumerate(records, start=1):
            weight = getattr(record.pop("module"), "weight", None)
            # Weight matrices only (conv, linear): a norm's 1-D scale is not a "layer" of depth.
            has_grad = isinstance(weight, Tensor) and weight.dim() >= 2 and weight.grad is not None
            weight_grad_std = float(weight.grad.std()) if has_grad else None
            stats.append(LayerStats(depth=depth, weight_grad_std=weight_grad_std, **record))
        return stats
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)


def standard_normal_inputs(shapes: Sequence[Sequence[int]], batch: int, seed: int) -> list[Tensor]:
    """One standard normal batch per model input, reproducible from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *shape, generator=generator) for shape in shapes]


def format_table(stats: Sequence[LayerStats]) -> str:
    """A fixed-width text table of the statistics, one line per layer."""
    header = f"{'#':>3}  {'layer':<32} {'kind':<14} {'act mean':>9} {'act std':>9} {'grad std':>9}"
    lines = [header, "-" * len(header)]
    for s in stats:
        grad = f"{s.grad_std:9.3g}" if s.grad_std is not None else f"{'-':>9}"
        lines.append(
            f"{s.depth:>3}  {s.name[:32]:<32} {s.kind[:14]:<14} "
            f"{s.act_mean:9.3g} {s.act_std:9.3g} {grad}"
        )
    return "\n".join(lines)


def plot_std_by_depth(series: dict[str, Sequence[LayerStats]], path: str | None = None):
    """Activation and gradient std per depth, one line per init; saved to `path` if given.

    Only layers with weights (conv/linear/...) are plotted so the x axis counts weighted
    layers, the depth the lecture talks about. Returns the matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (act_axis, grad_axis) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for label, stats in series.items():
        weighted = [s for s in stats if s.weight_grad_std is not None]
        depths = range(1, len(weighted) + 1)
        act_axis.plot(depths, [s.act_std for s in weighted], marker="o", label=label)
        grads = [s.grad_std if s.grad_std is not None else float("nan") for s in weighted]
        grad_axis.plot(depths, grads, marker="o", label=label)
    from matplotlib.ticker import MaxNLocator

    for axis, title in ((act_axis, "activation std"), (grad_axis, "gradient std (dL/da)")):
        axis.set_yscale("log")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("weighted layer")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    act_axis.legend()
    if path:
        figure.savefig(path)
    return figure


def spec_statistics(spec, batch: int = 64, seed: int = 0, init: dict | None = None):
    """`layer_statistics` of the spec's freshly built model (conv/linear init replaced by
    `init` when given), fed a batch that is standard normal *after* the input normalisation.
    """
    from nnspec.compiler import build_model, load_spec
    from nnspec.compiler.errors import UsageError

    if init is not None:
        data = spec.to_data()
        data["init"] = {**data.get("init", {}), "conv": init, "linear": init}
        spec = load_spec(data)
    inputs = spec.input_specs
    integer = [name for name, s in inputs.items() if s.dtype != "float32"]
    if integer:
        raise UsageError(
            f"init-stats feeds standard normal inputs, but input {integer[0]!r} takes integer "
            "token ids",
        )
    model = build_model(spec, seed=seed)
    tensors = standard_normal_inputs([s.shape for s in inputs.values()], batch, seed)
    normalization = model.input_normalization
    if normalization is not None:
        # Feed raw data whose normalised form is N(0, 1), as the data pipeline would.
        view = (-1,) + (1,) * (tensors[0].dim() - 2)
        tensors[0] = tensors[0] * normalization.std.view(view) + normalization.mean.view(view)
    kinds = {node.id: node.kind for node in model.graph.nodes}
    return layer_statistics(model, tensors, seed=seed, kinds=kinds)


def compare_inits(spec, batch: int = 64, seed: int = 0) -> dict[str, list[LayerStats]]:
    """Statistics for the spec's own init and for each of ALTERNATIVE_INITS."""
    series = {"spec init": spec_statistics(spec, batch, seed)}
    for label, scheme in ALTERNATIVE_INITS.items():
        series[label] = spec_statistics(spec, batch, seed, init=scheme)
    return series
