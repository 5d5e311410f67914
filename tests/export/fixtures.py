"""Small specs and trained models shared by the export, fold-bn, predict and quantize tests."""

from __future__ import annotations

import copy

import torch

from nnspec.compiler import build_model

DIGIT_LABELS = [str(i) for i in range(10)]

# A digits-sized CNN: conv+BN pairs to fold, dropout before the classifier, normalisation.
SMALL_CNN = {
    "nnspec": 1,
    "name": "small_cnn",
    "input": {"shape": [1, 8, 8]},
    "normalize": {"mean": [4.0], "std": [5.0]},
    "labels": DIGIT_LABELS,
    "network": [
        {"conv": {"out": 8, "kernel": 3, "padding": 1, "bias": False}},
        "batchnorm",
        "relu",
        {"maxpool": {"kernel": 2}},
        {"conv": {"out": 16, "kernel": 3, "padding": 1}},
        "batchnorm",
        "relu",
        "global_avg_pool",
        {"dropout": {"p": 0.3}},
        {"linear": {"out": 10}},
    ],
}

# A residual net whose first batch norm sits on the input and whose last follows an add:
# neither has a conv to fold into, so both become per-channel scale and shift.
RESIDUAL_NET = {
    "nnspec": 1,
    "name": "small_resnet",
    "input": {"shape": [3, 12, 12]},
    "labels": ["cat", "dog", "bird", "fish", "frog"],
    "blocks": {
        "basic": {
            "args": {"width": "int", "stride": {"type": "int", "default": 1}},
            "residual": {
                "body": [
                    {
                        "conv": {
                            "out": "$width",
                            "kernel": 3,
                            "stride": "$stride",
                            "padding": 1,
                            "bias": False,
                        }
                    },
                    "batchnorm",
                    "relu",
                    {"conv": {"out": "$width", "kernel": 3, "padding": 1, "bias": False}},
                    "batchnorm",
                ],
                "shortcut": "auto",
                "post": ["relu"],
            },
        }
    },
    "network": [
        {"id": "in_bn", "batchnorm": {}},
        {"conv": {"out": 8, "kernel": 3, "padding": 1, "bias": False}},
        "batchnorm",
        "relu",
        {"basic": {"width": 8}},
        {"basic": {"width": 16, "stride": 2}},
        {"id": "skip_conv", "conv": {"out": 16, "kernel": 1}},
        {"id": "skip_bn", "batchnorm": {}},
        {"id": "merge", "add": {}, "from": ["skip_bn", "skip_conv"]},
        {"id": "post_bn", "batchnorm": {}},
        "global_avg_pool",
        {"linear": {"out": 5}},
    ],
}

# Dropout and batch norm on features: a linear+BatchNorm1d pair, channel dropout, an aux head.
DROPOUT_BN_NET = {
    "nnspec": 1,
    "name": "dropout_bn_net",
    "input": {"shape": [2, 10, 10]},
    "network": [
        {"conv": {"out": 6, "kernel": 3}},
        "batchnorm",
        "relu",
        {"id": "features", "dropout": {"p": 0.2}},
        "flatten",
        {"linear": {"out": 32}},
        "batchnorm",
        "relu",
        {"dropout": {"p": 0.5}},
        {"linear": {"out": 4}},
    ],
    "heads": [
        {
            "id": "aux",
            "from": "features",
            "loss_weight": 0.3,
            "network": ["global_avg_pool", {"linear": {"out": 4}}],
        }
    ],
}


def trained(spec: dict, steps: int = 8, seed: int = 0) -> torch.nn.Module:
    """The spec's model after a few SGD steps on random data: weights and batch-norm
    running statistics move away from their initial values. Returned in eval mode."""
    model = build_model(copy.deepcopy(spec), seed=seed)
    shape = tuple(spec["input"]["shape"])
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        x = 3.0 * torch.randn((16, *shape), generator=generator) + 1.5
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        loss = logits.square().mean() + logits.std()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
