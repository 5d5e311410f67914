"""torchvision's own figures for the zoo specs, shown beside nnspec's by `nnspec compare`.

torchvision is optional (a test dependency): it is imported only when a figure is asked for,
and every function here answers ``None`` when it is missing or does not know the name.
"""

from __future__ import annotations

from dataclasses import dataclass

# Zoo spec names that mirror a torchvision classification builder of the same name.
ZOO_MODELS = (
    "alexnet",
    "vgg16",
    "vgg16_bn",
    "googlenet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "vit_b_16",
)


@dataclass(frozen=True)
class TorchvisionFigures:
    """What torchvision publishes for a model's default weights.

    ``gmacs`` is the weights' ``meta["_ops"]``: torchvision labels it GFLOPS, but it counts
    multiply-accumulates (one sample, 224x224). ``params`` is ``meta["num_params"]``, the
    eval-time model (GoogLeNet without its auxiliary classifiers).
    """

    name: str
    weights: str
    params: int
    gmacs: float
    acc1: float | None


def torchvision_figures(name: str) -> TorchvisionFigures | None:
    """Return torchvision's published figures for zoo model `name`, or None when unavailable."""
    if name not in ZOO_MODELS:
        return None
    try:
        from torchvision.models import get_model_weights
    except ImportError:
        return None
    weights = get_model_weights(name).DEFAULT
    meta = weights.meta
    metrics = next(iter(meta.get("_metrics", {}).values()), {})
    return TorchvisionFigures(
        name=name,
        weights=str(weights),
        params=int(meta["num_params"]),
        gmacs=float(meta["_ops"]),
        acc1=metrics.get("acc@1"),
    )
