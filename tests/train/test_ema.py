"""`train.ema` against timm's ModelEmaV3, the reference its rule is taken from."""

from __future__ import annotations

import pytest
import torch
from timm.utils.model_ema import ModelEmaV3

from nnspec.compiler import build_model, load_spec
from nnspec.compiler.training_schema import EmaConfig
from nnspec.runtime.train.ema import ModelEma
from tests.train.test_finetune import tiny_spec


@pytest.mark.parametrize("warmup", [False, True])
def test_averages_equal_timms_model_ema_v3_step_by_step(warmup):
    torch.manual_seed(0)
    model = build_model(load_spec(tiny_spec()), seed=0)
    ours = ModelEma(model, EmaConfig(decay=0.9, warmup=warmup, warmup_power=0.75))
    theirs = ModelEmaV3(model, decay=0.9, use_warmup=warmup, warmup_power=0.75)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(1, 8):
        x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()  # also moves the batch-norm running statistics
        ours.update(model, step)
        theirs.update(model, step=step)
        assert ours.decay_at(step) == theirs.get_decay(step)
        for key, value in theirs.module.state_dict().items():
            assert torch.equal(ours.state_dict()[key], value), (step, key)
    assert not torch.equal(ours.module.head.weight, model.head.weight)
    assert not ours.module.training and not any(p.requires_grad for p in ours.module.parameters())


def test_decay_schedule_by_hand():
    ema = ModelEma(torch.nn.Linear(2, 2), EmaConfig(decay=0.99, warmup=True, warmup_power=0.5))
    # step 1 copies the weights; then 1 - (1 + t)^-0.5 with t = step - 1, capped at 0.99.
    assert ema.decay_at(1) == 0.0
    assert ema.decay_at(4) == pytest.approx(1 - 4**-0.5)
    assert ema.decay_at(10**6) == 0.99
    plain = ModelEma(torch.nn.Linear(2, 2), EmaConfig(decay=0.99))
    assert [plain.decay_at(s) for s in (1, 2, 50)] == [0.0, 0.99, 0.99]
