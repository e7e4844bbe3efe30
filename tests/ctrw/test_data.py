"""Data loading: digits, synthetic, an ImageFolder tree, splits, batching and augmentation."""

import pytest
import torch
from PIL import Image

from ctrw.config import DataConfig, TrainConfig
from ctrw.data import (
    DataNotFoundError,
    StreamedImages,
    TensorSplit,
    as_float_images,
    augment_batch,
    iterate_batches,
    load_data,
)
from ctrw.jobs import load_test_images, load_test_tensors


def test_digits_are_real_offline_and_resized():
    d = load_data(DataConfig(dataset="digits", image_size=16, channels=3), seed=0)
    assert d.input_shape == (3, 16, 16) and d.num_classes == 10
    assert len(d.test) == 360 and len(d.train) + len(d.val) == 1797 - 360
    assert d.train.x.dtype == torch.uint8 and int(d.train.x.max()) > 200


def test_validation_split_is_held_out_and_test_selection_is_explicit():
    d = load_data(DataConfig(dataset="synthetic", image_size=8, channels=1, synthetic_train=100), seed=0)
    assert len(d.val) == 10 and len(d.train) == 90
    t = load_data(DataConfig(dataset="synthetic", image_size=8, channels=1, select_on_test=True), seed=0)
    assert t.val is t.test and any("TEST" in n for n in t.notes)


def test_synthetic_is_deterministic():
    a = load_data(DataConfig(dataset="synthetic", image_size=8, channels=1), seed=0)
    b = load_data(DataConfig(dataset="synthetic", image_size=8, channels=1), seed=0)
    assert torch.equal(a.test.x, b.test.x)


def test_imagenet_folder_loads_and_missing_folder_is_explained(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 30), color=(i * 100, 50, 200)).save(tmp_path / split / cls / f"{i}.png")
    d = load_data(DataConfig(dataset="imagenet", root=str(tmp_path)), seed=0)
    assert d.num_classes == 2 and d.input_shape == (3, 224, 224)
    x, y = next(iterate_batches(d.test, 3, device=torch.device("cpu"), shuffle=False))
    assert x.shape == (3, 3, 224, 224) and 0 <= float(x.min()) and float(x.max()) <= 1
    with pytest.raises(DataNotFoundError, match="ImageFolder"):
        load_data(DataConfig(dataset="imagenet", root=str(tmp_path / "nowhere")))


def test_imagenet_test_tensors_are_decoded_by_workers_in_order(tmp_path):
    for split in ("train", "val"):
        for c, cls in enumerate(("a", "b")):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 30), color=(i * 100, 50, 100 * c)).save(
                    tmp_path / split / cls / f"{i}.png"
                )
    cfg = TrainConfig.model_validate(
        {
            "model": {"name": "resnet50"},
            "data": {"dataset": "imagenet", "root": str(tmp_path), "imagenet_workers": 2},
        }
    )
    x, y, k = load_test_tensors(cfg, None)
    assert x.shape == (6, 3, 224, 224) and y.tolist() == [0, 0, 0, 1, 1, 1] and k == 2
    expected = load_data(cfg.data).test[4][0]  # ImageFolder order: class b, image 1
    assert torch.equal(x[4], expected)
    x4, y4, _ = load_test_tensors(cfg, 4)
    assert torch.equal(x4, x[:4]) and torch.equal(y4, y[:4])

    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    same = augment_batch(x, torch.tensor([[4, 4], [4, 4]]), torch.tensor([False, True]))
    assert torch.equal(same[0], x[0]) and torch.equal(same[1], x[1].flip(2))
    shifted = augment_batch(x, torch.tensor([[3, 4], [4, 5]]), torch.tensor([False, False]))
    assert torch.equal(shifted[0, 0, 1:], x[0, 0, :3]) and torch.equal(shifted[0, 0, 0], torch.zeros(4))
    assert torch.equal(shifted[1, 0, :, :3], x[1, 0, :, 1:])


def test_batches_cover_the_split_and_drop_last():
    split = TensorSplit(torch.zeros(10, 1, 4, 4, dtype=torch.uint8), torch.arange(10))
    g = torch.Generator().manual_seed(0)
    ys = [
        y
        for _, y in iterate_batches(
            split, 4, device=torch.device("cpu"), shuffle=True, generator=g, drop_last=True
        )
    ]
    assert [len(y) for y in ys] == [4, 4] and len(set(torch.cat(ys).tolist())) == 8


def test_test_images_stay_uint8_and_convert_per_batch_exactly(tmp_path):
    """The evaluation streams uint8 test images; their float form is the float loader's, bit for bit."""
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 30), color=(i * 97, 13, 255)).save(tmp_path / split / "a" / f"{i}.png")
    for cfg in (
        TrainConfig.model_validate(
            {"model": {"name": "resnet50"}, "data": {"dataset": "imagenet", "root": str(tmp_path)}}
        ),
        TrainConfig.model_validate(
            {"data": {"dataset": "digits", "image_size": 8, "channels": 1}, "model": {"name": "small_cnn"}}
        ),
    ):
        x8, y8, k8 = load_test_images(cfg, 3)
        x, y, k = load_test_tensors(cfg, 3)
        assert x8.dtype == torch.uint8 and x8.shape == x.shape and torch.equal(y8, y) and k8 == k
        assert torch.equal(as_float_images(x8, torch.device("cpu")), x)
        assert torch.equal(as_float_images(x, torch.device("cpu")), x)  # float images are only moved
        streamed, ys, _ = load_test_images(cfg, 3, stream=True)  # ImageFolder: decoded when used
        assert isinstance(streamed, StreamedImages) == (cfg.data.dataset == "imagenet")
        assert torch.equal(streamed.to("cpu"), x8) and torch.equal(ys, y8)
    expected = load_data(cfg.data).test  # digits: the split's own uint8
    assert torch.equal(x8, expected.x[:3])
