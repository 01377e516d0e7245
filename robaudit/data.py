"""Datasets, always as float tensors in [0, 1] (N, C, H, W) plus int64 labels.

``mnist10k`` is bundled (see README, "Bundled data"); the others come through
torchvision from ``--data-dir``, downloaded only when asked (``--download``), except
``imagenet``: its validation images are read from a folder and never downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from robaudit.errors import DatasetUnavailable, RobauditError
from robaudit.norms import DEFAULT_NORM, check_norm, label


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_eps: float          # the L-inf default, in [0, 1] pixel units
    augment: bool               # random crop (pad 4) + horizontal flip during training
    expected_files: str         # what --data-dir must contain, for the error message
    # The L2 and L1 defaults (distances between [0, 1] images); sources in docs/references.md, section 6.
    norm_eps: tuple[tuple[str, float], ...] = ()

    @property
    def input_dims(self) -> int:
        """Pixels per image, channels included: what the L2 and L1 budgets are measured over."""
        return self.in_channels * self.size * self.size

    def default_eps_for(self, norm: str = DEFAULT_NORM) -> float:
        """The default budget under ``norm``; a norm without a published default asks for --eps."""
        norm = check_norm(norm)
        if norm == "linf":
            return self.default_eps
        found = dict(self.norm_eps)
        if norm not in found:
            raise RobauditError(f"no default {label(norm)} eps for {self.name}: pass --eps")
        return found[norm]


# MNIST: L-inf 0.3 (Madry et al. 2018), L2 2.0 and L1 10 (Tramer & Boneh 2019). 32x32 colour images:
# L-inf 8/255 and L2 0.5 (RobustBench's CIFAR-10 threat models), L1 12 (Croce & Hein 2021, CIFAR-10).
MNIST_NORM_EPS = (("l2", 2.0), ("l1", 10.0))
CIFAR_NORM_EPS = (("l2", 0.5), ("l1", 12.0))
DATASETS: dict[str, DatasetInfo] = {
    "mnist10k": DatasetInfo("mnist10k", 10, 1, 28, (0.0,), (1.0,), 0.3, False, "bundled", MNIST_NORM_EPS),
    "mnist": DatasetInfo("mnist", 10, 1, 28, (0.0,), (1.0,), 0.3, False,
                         "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte", MNIST_NORM_EPS),
    # The paper normalises CIFAR/SVHN to [-1, 1]: mean = std = 0.5 inside the model.
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, (0.5,) * 3, (0.5,) * 3, 8 / 255, True,
                           "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}", CIFAR_NORM_EPS),
    "cifar100": DatasetInfo("cifar100", 100, 3, 32, (0.5,) * 3, (0.5,) * 3, 8 / 255, True,
                            "cifar-100-python/{train,test,meta}", CIFAR_NORM_EPS),
    "svhn": DatasetInfo("svhn", 10, 3, 32, (0.5,) * 3, (0.5,) * 3, 8 / 255, False,
                        "{train,test}_32x32.mat", CIFAR_NORM_EPS),
    # Test split only: the 50,000 validation images, resized to 256 and centre-cropped to 224.
    # eps 4/255 is RobustBench's ImageNet L-inf threat model; L2 3.0 is the largest budget of the
    # robustness library's ImageNet L2 models (Engstrom et al. 2019). No L1 default.
    "imagenet": DatasetInfo("imagenet", 1000, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 4 / 255,
                            False, "imagenet/val/<wnid>/*.JPEG (1000 class folders; sorted names = class index)",
                            (("l2", 3.0),)),
}
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise RobauditError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


def class_interleaved_order(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.intp]:
    """Indices that deal the examples out class by class: the 1st of each class, then the 2nd, ...

    The bundled file stores each split sorted by class, so "the first 500 test
    points" would be all zeros, ones and twos. In this order every prefix is
    (nearly) class-balanced, and the order is fixed without any RNG.
    """
    rank_in_class = np.empty(len(labels), dtype=np.int64)
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        rank_in_class[members] = np.arange(len(members))
    return np.lexsort((labels, rank_in_class))


def _mnist10k(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    with resources.files("robaudit.datasets").joinpath("mnist10k.npz").open("rb") as fh:
        data = np.load(fh)
        x, y = data[f"x_{split}"], data[f"y_{split}"]
    order = class_interleaved_order(y)
    x, y = x[order], y[order]
    return torch.from_numpy(x).float().div_(255.0).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def _torchvision(name: str, split: str, data_dir: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision

    train = split == "train"
    try:
        if name == "mnist":
            ds = torchvision.datasets.MNIST(str(data_dir), train=train, download=download)
            x, y = ds.data.numpy()[:, None], ds.targets.numpy()
        elif name in ("cifar10", "cifar100"):
            cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
            ds = cls(str(data_dir), train=train, download=download)
            x, y = ds.data.transpose(0, 3, 1, 2), np.asarray(ds.targets)
        else:
            ds = torchvision.datasets.SVHN(str(data_dir), split=split, download=download)
            x, y = ds.data, ds.labels
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted."
        hint = "" if download else "; pass --download to fetch it"
        raise DatasetUnavailable(f"{name} not found in {data_dir} (expected {DATASETS[name].expected_files})"
                                 f"{hint}: {str(exc).splitlines()[0]}") from None
    except OSError as exc:  # download attempted but no network
        raise DatasetUnavailable(f"{name} not found in {data_dir} (expected {DATASETS[name].expected_files}) "
                                 f"and the download failed: {exc}") from None
    x = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
    return x, torch.from_numpy(np.asarray(y, dtype=np.int64))


def _imagenet_files(folder: Path) -> tuple[list[Path], npt.NDArray[np.int64]]:
    """Every image of the validation folder and its label (the index of its class folder in sorted order)."""
    expected = DATASETS["imagenet"].expected_files
    if not folder.is_dir():
        raise DatasetUnavailable(f"imagenet not found: {folder} does not exist (expected {expected} under "
                                 "--data-dir; robaudit never downloads ImageNet)")
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if len(classes) != 1000:
        raise DatasetUnavailable(f"imagenet: {folder} has {len(classes)} class folders, expected 1000 "
                                 f"({expected})")
    files: list[Path] = []
    labels: list[int] = []
    for index, directory in enumerate(classes):
        images = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files += images
        labels += [index] * len(images)
    if not files:
        raise DatasetUnavailable(f"imagenet: no images (*.JPEG, *.jpg, *.png) in the class folders of {folder}")
    return files, np.asarray(labels, dtype=np.int64)


def _imagenet(split: str, data_dir: Path, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image, UnidentifiedImageError
    from torchvision import transforms

    if split != "test":
        raise RobauditError("imagenet has only a test split (its validation images); robaudit does not "
                            "train on ImageNet")
    files, labels = _imagenet_files(data_dir / "imagenet" / "val")
    # Class-interleaved like mnist10k, so the first N points (all an evaluation decodes) cover the classes.
    order = class_interleaved_order(labels)[:limit]
    preprocess = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    x = torch.empty(len(order), 3, 224, 224)
    for row, i in enumerate(order):
        try:
            with Image.open(files[i]) as img:
                x[row] = preprocess(img.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetUnavailable(f"imagenet: cannot read {files[i]}: {exc}") from None
    return x, torch.from_numpy(labels[order])


def load_arrays(name: str, split: str = "test", data_dir: str | Path | None = None,
                download: bool = False, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of a split as (x in [0, 1], y): all of them, or the first ``limit``.

    The exact tensors robaudit trains and evaluates on. Evaluations use the first N test points, so they
    pass N: for ``imagenet`` only those images are decoded (all 50,000 as floats would take 30 GB).
    """
    dataset_info(name)
    if split not in ("train", "test"):
        raise RobauditError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise RobauditError(f"limit must be a positive number of points, got {limit!r}")
    root = Path(data_dir or "./data").expanduser()
    if name == "imagenet":
        return _imagenet(split, root, limit)
    x, y = _mnist10k(split) if name == "mnist10k" else _torchvision(name, split, root, download)
    return (x, y) if limit is None else (x[:limit], y[:limit])


Batch = tuple[torch.Tensor, torch.Tensor]   # (images, labels)


class AugmentedDataset(Dataset[Batch]):
    """Random crop (zero padding 4) and horizontal flip, as in the paper's CIFAR training."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> None:
        self.x, self.y, self.generator = x, y, generator

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> Batch:
        img = self.x[i]
        size = img.shape[-1]
        padded = torch.nn.functional.pad(img, (4, 4, 4, 4))
        dx, dy = torch.randint(0, 9, (2,), generator=self.generator).tolist()
        img = padded[:, dy:dy + size, dx:dx + size]
        if torch.rand((), generator=self.generator) < 0.5:
            img = img.flip(-1)
        return img, self.y[i]


def train_loader(name: str, batch_size: int, *, data_dir: str | Path | None = None, download: bool = False,
                 seed: int = 0, limit: int | None = None) -> DataLoader[tuple[torch.Tensor, ...]]:
    x, y = load_arrays(name, "train", data_dir, download)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    generator = torch.Generator().manual_seed(seed)
    ds: Dataset[tuple[torch.Tensor, ...]] = (
        AugmentedDataset(x, y, generator) if DATASETS[name].augment else TensorDataset(x, y))
    return DataLoader(ds, batch_size=batch_size, shuffle=True, generator=generator, drop_last=False)
