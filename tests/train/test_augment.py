"""`train.augment`: torchvision v2 transforms from the spec, masks moving with their images,
the training split only, and the same samples for a seed whatever the workers or a resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnspec.compiler import DataError, SpecError, load_spec
from nnspec.runtime.train.augment import AugmentedDataset, BatchMixer, build_augmentation
from nnspec.runtime.train.data import load_spec_data, make_loader
from nnspec.runtime.train.trainer import TrainOptions, train
from tests.train.test_train import SimulatedKill, assert_same_checkpoint, kill_after_epoch


def seg_spec(augment: list, **extra) -> dict:
    return {
        "nnspec": 1, "name": "seg", "input": {"shape": [1, 16, 16], "range": [0, 1]},
        "task": {"type": "segmentation", "ignore_index": 255},
        "network": [{"conv": {"out": 3, "kernel": 1}}],
        "train": {"data": "shapes:n=40", "augment": augment}, **extra,
    }  # fmt: skip


def augmented(spec: dict, seed: int = 0) -> tuple[AugmentedDataset, object]:
    loaded = load_spec(spec)
    splits = load_spec_data(loaded)
    contract = loaded.input
    augmentation = build_augmentation(loaded.train.augment, contract, loaded.task,
                                      splits.num_classes)  # fmt: skip
    masks = loaded.task.type == "segmentation"
    return AugmentedDataset(splits.train, augmentation, contract, seed, masks), splits


def test_masks_move_with_their_images():
    """Flips and a nearest-neighbour rotation keep every pixel's class with its pixel: in the
    shapes data a pixel is bright exactly where the mask has a shape."""
    dataset, splits = augmented(seg_spec([{"horizontal_flip": {"p": 1.0}},
                                          {"vertical_flip": {"p": 0.5}},
                                          {"rotation": {"degrees": 90}}]))  # fmt: skip
    changed = 0
    for index in range(len(dataset)):
        image, mask = dataset[(index, 3)]
        original, original_mask = splits.train[index]
        assert image.shape == (1, 16, 16) and mask.shape == (16, 16)
        changed += int(not torch.equal(mask, original_mask))
        inside = mask != 255  # corners the rotation uncovers are ignored, not background
        bright = image[0] > 96 / 255  # shapes: 140..255, background 0..50 (plus noise)
        assert torch.equal(bright[inside], (mask > 0)[inside])
        assert bool((image[0][~inside] == 0).all())
    assert changed == len(dataset)  # every sample was flipped at least


def test_same_seed_same_samples_across_workers_and_epochs_differ():
    dataset, _ = augmented(seg_spec(["random_resized_crop", "horizontal_flip",
                                     {"color_jitter": {"brightness": 0.5}}]))  # fmt: skip

    def epoch_samples(workers: int, epoch: int):
        loader = make_loader(dataset, 8, train=True, seed=5, num_workers=workers)
        loader.sampler.set_epoch(epoch)
        return [(x, y) for x, y in loader]

    in_process, with_workers = epoch_samples(0, 1), epoch_samples(2, 1)
    for (a, b), (c, d) in zip(in_process, with_workers, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)
    other_epoch = epoch_samples(0, 2)
    assert not torch.equal(in_process[0][0], other_epoch[0][0])
    torch.manual_seed(123)  # the global RNG does not matter
    assert torch.equal(epoch_samples(0, 1)[0][0], in_process[0][0])


def test_only_the_training_split_is_augmented(tmp_path):
    spec = seg_spec(["horizontal_flip"])
    loaded = load_spec(spec)
    splits = load_spec_data(loaded)
    from nnspec.runtime.train.augment import augment_training_split

    val_before = [splits.val[i][0] for i in range(len(splits.val))]
    augment_training_split(splits, loaded, loaded.train, seed=0)
    assert isinstance(splits.train, AugmentedDataset)
    assert not isinstance(splits.val, AugmentedDataset)
    assert all(torch.equal(a, splits.val[i][0]) for i, a in enumerate(val_before))


def test_mixup_gives_soft_targets_deterministically():
    spec = {"nnspec": 1, "name": "c", "input": {"shape": [1, 8, 8], "range": [0, 16]},
            "network": ["flatten", {"linear": {"out": 10}}],
            "train": {"augment": [{"mixup": {"alpha": 0.4}}, {"cutmix": {"alpha": 1.0}}]}}  # fmt: skip
    loaded = load_spec(spec)
    augmentation = build_augmentation(loaded.train.augment, loaded.input, loaded.task, 10)
    mixer = BatchMixer(augmentation.batch, seed=0)
    x, y = torch.rand(6, 1, 8, 8) * 16, torch.tensor([0, 1, 2, 3, 4, 5])
    mixed_x, soft = mixer(x, y, epoch=1, batch=2)
    again_x, again = mixer(x, y, epoch=1, batch=2)
    assert torch.equal(mixed_x, again_x) and torch.equal(soft, again)
    assert soft.shape == (6, 10) and torch.allclose(soft.sum(1), torch.ones(6))
    assert not torch.equal(soft.argmax(1), soft.max(1).indices * 0)  # not all one class
    assert (soft > 0).sum(1).max() == 2  # each row mixes two samples


def test_colour_augmentation_of_arrays_needs_their_range():
    spec = {"nnspec": 1, "name": "c", "input": {"shape": [1, 8, 8]},
            "network": ["flatten", {"linear": {"out": 10}}],
            "train": {"augment": [{"color_jitter": {"brightness": 0.3}}]}}  # fmt: skip
    with pytest.raises(DataError, match="declare|declares none"):
        augmented(spec)


def test_augmentations_the_task_cannot_take_are_located_spec_errors(tmp_path):
    path = tmp_path / "seg.yaml"
    path.write_text(
        "nnspec: 1\nname: seg\ninput: {shape: [1, 16, 16]}\ntask: segmentation\n"
        "network: [{conv: {out: 3, kernel: 1}}]\n"
        "train:\n  augment:\n    - horizontal_flip\n    - trivial_augment\n    - mixup\n"
    )
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    text = str(caught.value)
    assert f"{path}:9:7: train.augment[1]: trivial_augment cannot move masks" in text
    assert f"{path}:10:7: train.augment[2]: mixup mixes the labels of whole samples" in text


def test_killed_and_resumed_augmented_run_equals_a_straight_one(tmp_path, monkeypatch):
    spec = {
        "nnspec": 1, "name": "aug", "input": {"shape": [1, 8, 8], "range": [0, 16]},
        "normalize": "auto",
        "network": [{"conv": {"out": 4, "kernel": 3, "padding": 1}}, "relu", "global_avg_pool",
                    {"dropout": {"p": 0.2}}, {"linear": {"out": 10}}],
        "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
        "train": {"data": "synthetic:n=240", "epochs": 2, "batch_size": 64, "augment": [
            {"random_resized_crop": {"scale": [0.6, 1.0]}}, "horizontal_flip",
            {"color_jitter": {"brightness": 0.3}}, {"mixup": {"alpha": 0.4}}]},
    }  # fmt: skip

    def run(out, **options):
        return train(load_spec(spec), TrainOptions(out=out, progress=False, **options),
                     lambda _: None)  # fmt: skip

    run(tmp_path / "straight")
    with monkeypatch.context() as patch:
        kill_after_epoch(patch, 1)
        with pytest.raises(SimulatedKill):
            run(tmp_path / "resumed")
    run(tmp_path / "resumed", resume=True)
    assert_same_checkpoint(tmp_path / "straight" / "checkpoints",
                           tmp_path / "resumed" / "checkpoints")  # fmt: skip


def test_augmented_digits_keep_their_range():
    spec = {"nnspec": 1, "name": "c", "input": {"shape": [1, 8, 8], "range": [0, 16]},
            "network": ["flatten", {"linear": {"out": 10}}],
            "train": {"augment": ["trivial_augment", {"random_erasing": {"p": 1.0}}]}}  # fmt: skip
    dataset, splits = augmented(spec)
    values = torch.stack([dataset[(i, 0)][0] for i in range(64)])
    assert values.min() >= 0 and values.max() <= 16
    assert values.max() > 8  # scaled back from [0, 1], not left there
    originals = torch.stack([splits.train[i][0] for i in range(64)])
    assert not torch.equal(values, originals)
    assert np.isclose(values.mean().item(), originals.mean().item(), rtol=0.6)
