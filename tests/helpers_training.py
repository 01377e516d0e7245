"""Small shared pieces for the training, checkpoint and data tests (not a conftest: that file is shared)."""
from __future__ import annotations

import pytest
import torch

from robaudit.data import DATASETS
from robaudit.models import CheckpointMetadata, build_model
from robaudit.training import TrainConfig


def mnist_model(**arch_kwargs) -> torch.nn.Module:
    info = DATASETS["mnist10k"]
    return build_model("smallcnn", num_classes=10, in_channels=1, mean=info.mean, std=info.std, **arch_kwargs)


def mnist_metadata(**overrides) -> CheckpointMetadata:
    info = DATASETS["mnist10k"]
    fields = dict(arch="smallcnn", num_classes=10, in_channels=1, mean=list(info.mean), std=list(info.std),
                  dataset="mnist10k", input_size=28)
    return CheckpointMetadata(**{**fields, **overrides})


def tiny_config(**overrides) -> TrainConfig:
    """A run that takes a few seconds on one CPU core: 256 training images, 20 PGD-20 test points."""
    fields = dict(dataset="mnist10k", arch="smallcnn", epochs=1, batch_size=64, n_train=256,
                  eval_examples=20, device="cpu", seed=0)
    return TrainConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests on one intra-op thread, then restore the setting.

    On a shared 2-core machine, torch's default of 2 OpenMP threads spins against the other
    processes: these tests took 17 min that way against 2 min on one thread (same load).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
