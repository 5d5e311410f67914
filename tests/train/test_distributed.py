"""`nnspec train` under torchrun: 2 gloo ranks on CPU end with identical weights, and only
rank 0 writes the run directory; with gradient accumulation (no_sync), an EMA, and a frozen
stem that unfreezes in epoch 2 (the DDP wrapper is rebuilt)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

SPEC = {
    "nnspec": 1,
    "name": "tiny_ddp",
    "input": {"shape": [1, 8, 8]},
    "normalize": "auto",
    "network": [
        {"conv": {"out": 4, "kernel": 3, "padding": 1}, "id": "stem"},
        "batchnorm",
        "relu",
        "global_avg_pool",
        {"dropout": {"p": 0.3}},
        {"linear": {"out": 10}},
    ],
    "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {
        "epochs": 2,
        "batch_size": 64,
        "accumulate": 2,
        "ema": {"decay": 0.9},
        "freeze": {"params": ["stem"], "unfreeze_at_epoch": 2},
    },
}

# Each rank saves the weights it ends with, just before the final test evaluation.
WORKER = textwrap.dedent(
    """
    import os, sys
    from safetensors.torch import save_file
    from nnspec.compiler import load_spec
    from nnspec.runtime.train import trainer as train_module

    out, spec_path = sys.argv[1], sys.argv[2]
    finish = train_module._Run._finish

    def dump_then_finish(self, run, *rest):
        weights = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        weights.update({f"ema.{k}": v.clone() for k, v in run.recipes.ema.state_dict().items()})
        save_file(weights, os.path.join(out, f"rank{os.environ['RANK']}.safetensors"))
        return finish(self, run, *rest)

    train_module._Run._finish = dump_then_finish
    options = train_module.TrainOptions(out=os.path.join(out, "run"), device="cpu", progress=False)
    train_module.train(load_spec(spec_path), options)
    """
)


@pytest.mark.slow
def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    (tmp_path / "worker.py").write_text(WORKER)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(tmp_path / "worker.py"), str(tmp_path), str(tmp_path / "spec.json"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    rank0 = load_file(tmp_path / "rank0.safetensors")
    rank1 = load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # Training changed the weights, and rank 0's checkpoint holds what both ranks ended with.
    last = load_file(tmp_path / "run" / "checkpoints" / "last.safetensors")
    assert torch.equal(last["linear1.weight"], rank0["linear1.weight"])

    final = json.loads((tmp_path / "run" / "final.json").read_text())
    # 1259 training samples: 630 per rank, 9 full batches of 64 per epoch, 5 optimizer steps
    # (4 of two batches, 1 of the last batch alone).
    assert final["world_size"] == 2 and final["steps"] == 2 * 5
    assert "test_ema_accuracy" in final
    assert final["test_count"] == 359  # sharded evaluation adds up to the whole split
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert done.stdout.count("test accuracy") == 1  # rank 0 alone reports
