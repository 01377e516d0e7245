"""The imagenet dataset: a validation folder of 1000 class folders, read in a fixed class-interleaved order,
resized to 256 and centre-cropped to 224; only the first N images are decoded when N is given."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import robaudit
from robaudit.data import DATASETS
from robaudit.errors import DatasetUnavailable, RobauditError

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def wnid(i: int) -> str:
    return f"n{1440764 + 37 * i:08d}"   # shaped like real WordNet ids; sorted order == i


def make_val(root: Path) -> Path:
    """1000 class folders, images in three of them: class 0 (three colours, named out of order), class 5
    (one image split black | white, wider than tall) and class 999 (a greyscale image)."""
    val = root / "imagenet" / "val"
    for i in range(1000):
        (val / wnid(i)).mkdir(parents=True)
    Image.new("RGB", (300, 400), GREEN).save(val / wnid(0) / "ILSVRC2012_val_00000002.JPEG", quality=100)
    Image.new("RGB", (400, 300), RED).save(val / wnid(0) / "ILSVRC2012_val_00000001.JPEG", quality=100)
    Image.new("RGB", (256, 256), BLUE).save(val / wnid(0) / "ILSVRC2012_val_00000003.JPEG", quality=100)
    halves = np.zeros((256, 512, 3), dtype=np.uint8)
    halves[:, 256:] = 255
    Image.fromarray(halves).save(val / wnid(5) / "ILSVRC2012_val_00000004.JPEG", quality=100)
    Image.new("L", (224, 300), 128).save(val / wnid(999) / "ILSVRC2012_val_00000005.JPEG", quality=100)
    (val / wnid(0) / "LOC_synset_mapping.txt").write_text("not an image\n")
    return val


def colour(img: torch.Tensor) -> tuple[int, int, int]:
    """The solid colour of an image, to within JPEG's error (a few levels)."""
    r, g, b = (255 if float(c) > 0.97 else 0 if float(c) < 0.03 else -1 for c in img.mean(dim=(1, 2)))
    return r, g, b


def test_the_dataset_entry() -> None:
    info = DATASETS["imagenet"]
    assert (info.num_classes, info.in_channels, info.size) == (1000, 3, 224)
    assert info.mean == (0.485, 0.456, 0.406) and info.std == (0.229, 0.224, 0.225)
    assert info.default_eps == pytest.approx(4 / 255) and info.augment is False


def test_labels_order_shapes_and_range(tmp_path: Path) -> None:
    make_val(tmp_path)
    x, y = robaudit.load_dataset("imagenet", "test", data_dir=tmp_path)
    assert x.shape == (5, 3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # Dealt out class by class: the first image of each class, then the second... Within a class, by name.
    assert y.tolist() == [0, 5, 999, 0, 0]
    assert [colour(x[i]) for i in (0, 3, 4)] == [RED, GREEN, BLUE]
    # Centre crop, not a squash: 512x256 -> 224x224 from columns 144..368, so 112 black then 112 white.
    assert float(x[1, :, :, :110].max()) < 0.05 and float(x[1, :, :, 114:].min()) > 0.95
    # Greyscale becomes three equal channels.
    assert torch.allclose(x[2, 0], x[2, 1]) and torch.allclose(x[2, 1], x[2, 2])
    assert abs(float(x[2].mean()) - 128 / 255) < 0.02


def test_limit_reads_the_same_first_points(tmp_path: Path) -> None:
    make_val(tmp_path)
    x, y = robaudit.load_dataset("imagenet", data_dir=tmp_path)
    x3, y3 = robaudit.load_dataset("imagenet", data_dir=tmp_path, limit=3)
    assert torch.equal(x3, x[:3]) and torch.equal(y3, y[:3])
    with pytest.raises(RobauditError, match="limit must be a positive number"):
        robaudit.load_dataset("imagenet", data_dir=tmp_path, limit=0)


def test_limit_on_other_datasets_is_the_first_points() -> None:
    x, y = robaudit.load_dataset("mnist10k", "test")
    x7, y7 = robaudit.load_dataset("mnist10k", "test", limit=7)
    assert torch.equal(x7, x[:7]) and torch.equal(y7, y[:7])


def test_missing_folder_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable) as info:
        robaudit.load_dataset("imagenet", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "imagenet" / "val") in message and "<wnid>/*.JPEG" in message
    assert "never downloads" in message and "\n" not in message


def test_wrong_number_of_class_folders(tmp_path: Path) -> None:
    (make_val(tmp_path) / wnid(1)).rmdir()
    with pytest.raises(DatasetUnavailable, match="has 999 class folders, expected 1000"):
        robaudit.load_dataset("imagenet", data_dir=tmp_path)


def test_only_a_test_split(tmp_path: Path) -> None:
    make_val(tmp_path)
    with pytest.raises(RobauditError, match="only a test split"):
        robaudit.load_dataset("imagenet", "train", data_dir=tmp_path)


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    val = make_val(tmp_path)
    bad = val / wnid(0) / "ILSVRC2012_val_00000000.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(DatasetUnavailable) as info:
        robaudit.load_dataset("imagenet", data_dir=tmp_path, limit=1)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
