"""The trainer's DataLoader over this process's share of a split, and input statistics."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from nnspec.compiler.errors import DataError


class EpochKeyedSampler(Sampler):
    """A DistributedSampler whose indices come with the epoch, `(index, epoch)`, so a dataset
    that augments can draw each sample's randomness from (seed, epoch, index) alone: the same
    in any worker process, with any number of workers, and after a resume."""

    def __init__(self, sampler: DistributedSampler):
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.sampler.epoch
        return ((index, epoch) for index in self.sampler)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over this process's share of `dataset`.

    Training shuffles with a DistributedSampler seeded by `seed`; call
    `loader.sampler.set_epoch(epoch)` each epoch. The order then depends only on (seed, epoch),
    never on global RNG state, which is what lets a resumed run see the same batches. Training
    drops a last partial batch (a batch of one breaks batch norm). Evaluation shards without
    padding, so per-rank counts add up to the dataset size. `pin_memory` speeds up copies to
    a GPU. A dataset that augments (`keyed_by_epoch`) is given `(index, epoch)` keys.
    """
    options = {"num_workers": num_workers, "pin_memory": pin_memory}
    if num_workers > 0:
        options["persistent_workers"] = train  # workers outlive an epoch; keys carry the epoch
    if train:
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
        )
        drop_last = len(sampler) > batch_size
        if getattr(dataset, "keyed_by_epoch", False):
            sampler = EpochKeyedSampler(sampler)
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **options
        )
    shard = Subset(dataset, range(rank, len(dataset), world_size))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, **options)


def channel_stats(dataset: Dataset, batch_size: int = 512) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) standard deviation over every sample of `dataset`.

    The channel is the first per-sample dim; a constant channel gets std 1 so that normalising
    it cannot divide by zero.
    """
    total = total_sq = None
    count = 0
    for x, _ in DataLoader(dataset, batch_size=batch_size):
        x = x.double().transpose(0, 1).reshape(x.shape[1], -1)
        total = x.sum(1) if total is None else total + x.sum(1)
        total_sq = (x * x).sum(1) if total_sq is None else total_sq + (x * x).sum(1)
        count += x.shape[1]
    if total is None:
        raise DataError("cannot compute normalisation statistics: the training split is empty")
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.tolist(), std.tolist()
