"""Training throughput (images/s) of a compiled zoo spec against torchvision's model, in one
process and one training loop: forward, cross-entropy loss, backward, SGD step.

Rounds alternate which model goes first; each round times `--steps` steps of each model after
warmup, and the median images/s per model is reported with the ratio nnspec / torchvision
(goal >= 0.97), per second of wall time and per second of the process's CPU time (on a CPU
shared with other jobs and one thread, the CPU-time figure is the one that measures the model
rather than the neighbours; it means nothing on CUDA). The nnspec model normalises its input inside; torchvision's step does the same
normalisation outside, so both do the same work.

    python tests/benchmarks/bench_train.py                      # resnet18, CPU, 3x64x64, batch 16
    python tests/benchmarks/bench_train.py --size 224 --batch 64 --device cuda
    python tests/benchmarks/bench_train.py --model resnet50 --device cuda --amp --channels-last \\
        --size 224 --batch 128 --only nnspec
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torchvision import models as tv

from nnspec.compiler import build_model, load_spec
from nnspec.compiler.training_schema import OptimizerConfig
from nnspec.runtime.train.device import autocast_for, prepare_input
from nnspec.runtime.train.optim import build_optimizer
from nnspec.runtime.train.trainer import training_loss

OPTIMIZER = OptimizerConfig(type="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4)


class Normalized(torch.nn.Module):
    """torchvision's model with the same input normalisation the spec applies inside."""

    def __init__(self, model: torch.nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return self.model((x - self.mean) / self.std)


def make_stepper(model, args, device):
    memory_format = torch.channels_last if args.channels_last else torch.preserve_format
    model = model.to(device, memory_format=memory_format).train()
    optimizer = build_optimizer(model, OPTIMIZER)
    loss_fn = torch.nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cuda") if args.amp and args.amp_dtype == "float16" else None
    generator = torch.Generator().manual_seed(0)
    x = prepare_input(torch.rand(args.batch, 3, args.size, args.size, generator=generator),
                      device, args.channels_last)  # fmt: skip
    y = torch.randint(0, 1000, (args.batch,), generator=generator).to(device)

    def run_steps(steps: int) -> tuple[float, float]:
        """Images per second of wall time and of this process's CPU time, over `steps`."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            with autocast_for(device, args.amp, args.amp_dtype):
                loss = training_loss(model(x), y, loss_fn, {})
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        return steps * args.batch / wall, steps * args.batch / cpu

    return run_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18", help="zoo spec with a torchvision twin")
    parser.add_argument("--size", type=int, default=64, help="input height and width")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--amp-dtype", default="bfloat16", choices=("bfloat16", "float16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--only", choices=("nnspec", "torchvision"), help="time one model")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    spec = load_spec(args.model, overrides=[f"input.shape=[3, {args.size}, {args.size}]"])
    models = {}
    if args.only != "torchvision":
        models["nnspec"] = make_stepper(build_model(spec, seed=0), args, device)
    if args.only != "nnspec":
        reference = Normalized(tv.get_model(args.model), spec.normalize.mean, spec.normalize.std)
        models["torchvision"] = make_stepper(reference, args, device)
    for stepper in models.values():
        stepper(args.warmup)
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
    names = list(models)
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            rates[name].append(models[name](args.steps))
    result = {
        "model": args.model,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "input": [3, args.size, args.size],
        "batch": args.batch,
        "amp": args.amp and args.amp_dtype,
        "channels_last": args.channels_last,
    }
    for name, pairs in rates.items():
        result[f"{name}_images_per_s"] = statistics.median(wall for wall, _ in pairs)
        result[f"{name}_images_per_cpu_s"] = statistics.median(cpu for _, cpu in pairs)
    if len(models) == 2:
        for unit in ("s", "cpu_s"):
            result[f"ratio_per_{unit}"] = (
                result[f"nnspec_images_per_{unit}"] / result[f"torchvision_images_per_{unit}"]
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
