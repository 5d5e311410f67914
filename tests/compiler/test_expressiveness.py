"""The language expresses torchvision models it has no special support for: MobileNetV2's
inverted residuals, DenseNet's dense connectivity and ShuffleNetV2's channel split and shuffle
match torchvision exactly (parameters, state_dict shapes in order, and outputs with the same
weights)."""

from __future__ import annotations

import pytest
import torch
import torchvision  # a test dependency ([test] extra); the product does not need it

from nnspec.compiler import build_model

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.mark.parametrize("name", ["mobilenet_v2", "densenet121", "shufflenet_v2_x0_5"])
def test_example_matches_torchvision(name):
    # the spec's own size is 224; shapes are static, so compare at 64x64 through an override
    ours = build_model(f"specs/examples/{name}.yaml", overrides=["input.shape=[3, 64, 64]"])
    theirs = getattr(torchvision.models, name)()
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert [tuple(t.shape) for t in ours_sd.values()] == \
        [tuple(t.shape) for t in theirs_sd.values()]
    assert sum(p.numel() for p in ours.parameters()) == \
        sum(p.numel() for p in theirs.parameters())
    ours.load_state_dict(dict(zip(ours_sd, theirs_sd.values(), strict=True)))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()((x - MEAN) / STD),
                                   atol=1e-5, rtol=1e-5)


def test_squeeze_excitation_gates_channels(tmp_path):
    from tests.compiler.fixtures import write_spec

    model = build_model(write_spec(tmp_path, """
        input: {shape: [8, 5, 5]}
        network:
          - branches:
              merge: multiply
              paths:
                - []
                - [{global_avg_pool: {keep_dims: true}}, {conv: {out: 2, kernel: 1}}, relu,
                   {conv: {out: 8, kernel: 1}}, sigmoid]
    """)).eval()
    x = torch.randn(3, 8, 5, 5)
    b = model.branches1.branch2
    gate = torch.sigmoid(b.conv2(torch.relu(b.conv1(x.mean((2, 3), keepdim=True)))))
    torch.testing.assert_close(model(x), x * gate)
