"""Data sources: the bundled digits, .npz files, image folders, synthetic data, torchvision by
name (never downloaded), normalisation statistics and the per-rank loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nnspec.compiler.errors import DataError
from nnspec.runtime.train.data import channel_stats, load_data, make_loader

# Facts about the UCI optical digits as scikit-learn's load_digits() gives them.
DIGITS_PIXEL_SUM = 561718
DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
DIGITS_FIRST_ROW = [0, 0, 5, 13, 9, 1, 0, 0]


def all_samples(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(xs), torch.stack(ys)


def test_bundled_digits_are_the_uci_set_split_with_a_fixed_seed():
    splits = load_data("digits", (1, 8, 8))
    parts = [all_samples(s) for s in (splits.train, splits.val, splits.test)]
    x = torch.cat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts])
    assert len(y) == 1797 and (len(parts[1][1]), len(parts[2][1])) == (179, 359)
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
    assert x.sum().item() == DIGITS_PIXEL_SUM and x.max().item() == 16
    assert torch.bincount(y).tolist() == DIGITS_CLASS_COUNTS
    assert splits.num_classes == 10 and splits.labels == [str(d) for d in range(10)]
    assert any(row[0].tolist() == DIGITS_FIRST_ROW for row in x[:, 0])
    again = all_samples(load_data("digits", (1, 8, 8)).test)
    assert torch.equal(again[0], parts[2][0]) and torch.equal(again[1], parts[2][1])


def test_npz_source_with_and_without_a_test_split(tmp_path):
    x = np.arange(40 * 2, dtype=np.float32).reshape(40, 2)
    y = np.arange(40) % 4
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    np.savez(tmp_path / "split.npz", x=x, y=y, x_test=x[:5] + 1000, y_test=y[:5])
    plain = load_data(str(tmp_path / "plain.npz"), (2,))
    assert (len(plain.train), len(plain.val), len(plain.test)) == (28, 4, 8)
    assert plain.num_classes == 4
    seen = torch.cat([all_samples(s)[0] for s in (plain.train, plain.val, plain.test)])
    assert sorted(seen[:, 0].tolist()) == x[:, 0].tolist()
    split = load_data(str(tmp_path / "split.npz"), (2,))
    assert all_samples(split.test)[0].min().item() >= 1000
    assert len(split.train) + len(split.val) == 40


def test_npz_without_y_is_a_data_error(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 2)))
    with pytest.raises(DataError, match="must hold the targets as an array 'y'"):
        load_data(str(tmp_path / "bad.npz"), (2,))


def test_image_folder_converts_resizes_and_scales_to_unit_range(tmp_path):
    colours = {"cat": (255, 0, 0), "dog": (0, 51, 255)}
    for name, colour in colours.items():
        (tmp_path / name).mkdir()
        for i in range(10):
            Image.new("RGB", (12 + i, 10), colour).save(tmp_path / name / f"{i}.png")
    splits = load_data(str(tmp_path), (3, 8, 8))
    assert splits.labels == ["cat", "dog"] and splits.num_classes == 2
    assert (len(splits.train), len(splits.val), len(splits.test)) == (14, 2, 4)
    x, y = all_samples(splits.train)
    assert x.shape == (14, 3, 8, 8)
    for image, label in zip(x, y, strict=True):
        expected = torch.tensor(colours[splits.labels[label]]) / 255.0
        assert torch.allclose(image.mean((1, 2)), expected)


def test_image_folder_with_split_subfolders(tmp_path):
    for split, count in (("train", 4), ("test", 2)):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("L", (8, 8), 10 * i).save(tmp_path / split / name / f"{i}.png")
    splits = load_data(str(tmp_path), (1, 8, 8), val_fraction=0.25)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 4)


def test_synthetic_source_options():
    splits = load_data("synthetic:classes=3,n=60,shape=2x4x4", (2, 4, 4))
    assert splits.num_classes == 3 and splits.sample_shape == (2, 4, 4)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 60
    default_shape = load_data("synthetic", (5,))
    assert default_shape.sample_shape == (5,) and default_shape.num_classes == 10
    with pytest.raises(DataError, match="unknown option"):
        load_data("synthetic:colour=red", (5,))


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(DataError, match=r"shape \[1, 8, 8\].*input is \[3, 32, 32\]"):
        load_data("digits", (3, 32, 32))


def test_torchvision_dataset_is_never_downloaded(tmp_path):
    with pytest.raises(DataError, match="never downloads"):
        load_data(f"torchvision:CIFAR10:{tmp_path}", (3, 32, 32))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="no dataset named 'Cifar10'"):
        load_data(f"torchvision:Cifar10:{tmp_path}", (3, 32, 32))


def write_idx(path, array: np.ndarray) -> None:
    """An MNIST-format (IDX) file of uint8 values: magic, big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_dataset_from_a_local_root(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", 40), ("t10k", 10)):
        labels = np.arange(count) % 10
        images = np.zeros((count, 28, 28), dtype=np.uint8)
        images[:, :14] = (labels * 25)[:, None, None]  # top half encodes the label
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    splits = load_data(f"torchvision:MNIST:{tmp_path}", (1, 28, 28), val_fraction=0.25)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 10)
    assert splits.num_classes == 10 and splits.labels[3] == "3 - three"
    x, y = all_samples(splits.test)
    assert x.shape == (10, 1, 28, 28) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0, 0, 0], y * 25 / 255.0)
    assert torch.all(x[:, :, 14:] == 0)
    resized = load_data(f"torchvision:MNIST:{tmp_path}", (1, 14, 14))
    assert resized.train[0][0].shape == (1, 14, 14)


def test_unknown_source_lists_the_forms():
    with pytest.raises(DataError, match="torchvision:NAME"):
        load_data("imagenet-please", (3, 8, 8))


def test_channel_stats_match_torch_population_statistics():
    splits = load_data("synthetic:classes=4,n=200,shape=3x5x5", (3, 5, 5))
    x, _ = all_samples(splits.train)
    mean, std = channel_stats(splits.train, batch_size=7)
    per_channel = x.double().transpose(0, 1).reshape(3, -1)
    assert mean == pytest.approx(per_channel.mean(1).tolist(), rel=1e-9)
    assert std == pytest.approx(per_channel.std(1, correction=0).tolist(), rel=1e-9)


def labels_in_order(loader) -> list[int]:
    return [int(v) for _, y in loader for v in y]


def test_training_order_depends_only_on_seed_and_epoch():
    x = torch.arange(100).float()[:, None]
    data = torch.utils.data.TensorDataset(x, torch.arange(100))

    def order(seed, epoch):
        loader = make_loader(data, 10, train=True, seed=seed)
        loader.sampler.set_epoch(epoch)
        torch.manual_seed(epoch * 7 + seed)  # global RNG state must not matter
        return labels_in_order(loader)

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(0, 2)
    assert order(0, 1) != order(1, 1)
    assert sorted(order(0, 1)) == list(range(100))


def test_ranks_get_disjoint_shares():
    data = torch.utils.data.TensorDataset(torch.zeros(50, 1), torch.arange(50))
    train = [
        labels_in_order(make_loader(data, 5, train=True, rank=r, world_size=2)) for r in (0, 1)
    ]
    assert not set(train[0]) & set(train[1]) and len(train[0]) == len(train[1]) == 25
    evals = [
        labels_in_order(make_loader(data, 8, train=False, rank=r, world_size=3)) for r in range(3)
    ]
    assert sorted(sum(evals, [])) == list(range(50))


# ---------------------------------------------------------------------- sources per task
def contract(shape, **fields):
    from nnspec.compiler.schema import InputSpec

    return InputSpec(shape=list(shape), **fields)


def test_shapes_source_draws_masks_that_match_the_pictures():
    splits = load_data("shapes:n=30,seed=3", contract((1, 24, 24), range=[0, 255]),
                       task="segmentation", output_shape=(4, 24, 24))  # fmt: skip
    assert splits.labels == ["background", "circle", "square", "triangle"]
    x, y = all_samples(splits.train)
    assert x.shape[1:] == (1, 24, 24) and y.shape[1:] == (24, 24) and y.dtype == torch.int64
    assert x.max() <= 255 and x.max() > 200  # converted into the declared range
    assert torch.equal(x[:, 0] > 96, y > 0)  # shapes are bright, background dark
    regression = load_data("shapes:n=30,seed=3", (1, 24, 24), task="regression",
                           output_shape=(3,))  # fmt: skip
    multilabel = load_data("shapes:n=30,seed=3", (1, 24, 24), task="multilabel",
                           output_shape=(3,))  # fmt: skip
    x, cover = all_samples(regression.train)
    _, present = all_samples(multilabel.train)
    assert torch.equal(present > 0, cover > 0)  # the same pictures, told three ways
    assert torch.allclose(cover.sum(1), (x[:, 0] > 96 / 255).float().mean((1, 2)), atol=1e-6)


def test_segmentation_folders_pair_images_with_masks(tmp_path):
    from tests.train.task_data import write_segmentation_folder

    masks = write_segmentation_folder(tmp_path / "seg", count=5, size=(20, 24))
    splits = load_data(str(tmp_path / "seg"), contract((3, 10, 12)), 0.2, 0.2,
                       task="segmentation", output_shape=(3, 10, 12))  # fmt: skip
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3, 1, 1)
    for dataset in (splits.train, splits.val, splits.test):
        for image, mask in dataset:
            assert image.shape == (3, 10, 12) and mask.shape == (10, 12)
            # nearest-neighbour resizing keeps class indices and the ignored border row
            assert set(mask.unique().tolist()) <= {0, 1, 2, 255}
            assert (mask[0] == 255).all()
    from PIL import Image as PILImage

    first = splits.train.items[0][1]
    want = np.asarray(PILImage.fromarray(masks[int(first.stem)]).resize((12, 10),
                                                                        PILImage.NEAREST))  # fmt: skip
    assert np.array_equal(splits.train[0][1].numpy(), want)
    (tmp_path / "seg" / "masks" / "4.png").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) in .* have no mask .*4\.png"):
        load_data(str(tmp_path / "seg"), contract((3, 10, 12)), task="segmentation")


def test_multilabel_csv_reads_label_sets(tmp_path):
    for name in ("a", "b", "c"):
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / f"{name}.png")
    (tmp_path / "labels.csv").write_text("path,labels\na.png,cat dog\nb.png,\nc.png,dog;bird\n")
    splits = load_data(str(tmp_path / "labels.csv"), (3, 8, 8), 0.0, 0.0, task="multilabel")
    assert splits.labels == ["bird", "cat", "dog"] and splits.num_classes == 3
    targets = {path.name: t.tolist() for path, t in splits.train.items}
    assert targets == {"a.png": [0, 1, 1], "b.png": [0, 0, 0], "c.png": [1, 0, 1]}
    with pytest.raises(DataError, match=r"labels.csv:4: label\(s\) bird are not in the spec's"):
        load_data(str(tmp_path / "labels.csv"), (3, 8, 8), task="multilabel",
                  labels=["cat", "dog"])  # fmt: skip


def test_npz_gives_one_array_per_named_input(tmp_path):
    np.savez(tmp_path / "two.npz", image=np.ones((20, 1, 4, 4)), meta=np.zeros((20, 3)),
             y=np.arange(20) % 2)  # fmt: skip
    inputs = {"image": contract((1, 4, 4)), "meta": contract((3,))}
    splits = load_data(str(tmp_path / "two.npz"), inputs, 0.1, 0.1)
    (image, meta), label = splits.train[0]
    assert image.shape == (1, 4, 4) and meta.shape == (3,) and label.dtype == torch.int64
    np.savez(tmp_path / "one.npz", image=np.ones((20, 1, 4, 4)), y=np.arange(20) % 2)
    with pytest.raises(DataError, match="needs one array per input .*missing meta"):
        load_data(str(tmp_path / "one.npz"), inputs)


def test_data_outside_the_declared_range_is_refused(tmp_path):
    np.savez(tmp_path / "bytes.npz", x=np.full((10, 1, 8, 8), 200.0), y=np.arange(10) % 2)
    with pytest.raises(DataError, match=r"values in \[200, 200\], outside the spec's input.range "
                                        r"\[0, 16\]"):  # fmt: skip
        load_data(str(tmp_path / "bytes.npz"), contract((1, 8, 8), range=[0, 16]))
    bad = np.zeros((10, 2), np.float32)
    bad[3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=bad, y=np.arange(10) % 2)
    with pytest.raises(DataError, match="not finite"):
        load_data(str(tmp_path / "nan.npz"), (2,))


def test_preprocess_resizes_and_crops_as_torchvision_does(tmp_path):
    from torchvision.transforms.v2 import functional as TF

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)).save(
            tmp_path / name / "0.png")
    spec = contract((3, 16, 16), range=[0, 255],
                    preprocess={"resize": 20, "center_crop": 16})  # fmt: skip
    splits = load_data(str(tmp_path), spec, 0.0, 0.0)
    for index, (path, _) in enumerate(splits.train.items):
        with Image.open(path) as image:
            want = TF.pil_to_tensor(TF.center_crop(TF.resize(image, 20), [16, 16]))
        assert torch.equal(splits.train[index][0], want.float())


def test_a_source_without_the_tasks_targets_says_which_sources_have_them():
    with pytest.raises(DataError, match="(?s)gives classification targets, but the spec's task "
                                        "is segmentation.*sources for segmentation: shapes, "
                                        "npz, segmentation_folders"):  # fmt: skip
        load_data("digits", (1, 8, 8), task="segmentation")
