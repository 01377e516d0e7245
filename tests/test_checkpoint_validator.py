"""The upload validator next to the checkpoint format (robaudit.models.validate): the dataset table
it is handed over the command line, its verdicts, and the `python -m` entry the API runs."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers_training import mnist_metadata, mnist_model

from robaudit.data import DATASETS, dataset_info
from robaudit.errors import RobauditError
from robaudit.models import save_checkpoint
from robaudit.models.validate import datasets_json, parse_datasets, validate_file


def test_the_dataset_table_survives_the_command_line():
    shapes = parse_datasets(datasets_json(DATASETS))
    assert set(shapes) == set(DATASETS)
    for name, info in DATASETS.items():
        got = shapes[name]
        assert (got.num_classes, got.in_channels, got.size) == (info.num_classes, info.in_channels, info.size)
        assert list(got.mean) == list(info.mean) and list(got.std) == list(info.std)


def test_verdicts(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", mnist_model(), mnist_metadata())
    ok = validate_file(path, datasets=DATASETS)
    assert ok["ok"] and ok["ext"] == "safetensors" and ok["embedded"] and ok["metadata"]["arch"] == "smallcnn"

    with pytest.raises(RobauditError) as unknown:   # the science package's message for the same mistake
        dataset_info("mnist11k")
    assert validate_file(path, datasets=DATASETS, dataset="mnist11k") == {"ok": False, "error": str(unknown.value),
                                                                              "closest": None}
    mismatch = validate_file(path, datasets=DATASETS, dataset="cifar10")
    assert not mismatch["ok"] and mismatch["error"].startswith("dataset/architecture mismatch")

    bare = tmp_path / "bare.pt"
    torch.save(mnist_model().state_dict(), bare)
    assert "carries no robaudit metadata" in validate_file(bare, datasets=DATASETS)["error"]
    no_preprocessing = validate_file(bare, datasets=DATASETS, arch="smallcnn", dataset="mnist10k")
    assert "give a preprocessing preset (none, cifar-0.5, imagenet, cifar10)" in no_preprocessing["error"]
    ok = validate_file(bare, datasets=DATASETS, arch="smallcnn", dataset="mnist10k", preprocessing="none")
    assert ok["ok"] and ok["metadata"]["preprocessing"] == "none" and ok["detected_arch"] is None


def test_the_api_runs_it_as_a_module(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", mnist_model(), mnist_metadata())
    out = subprocess.run([sys.executable, "-m", "robaudit.models.validate", str(path), "--datasets",
                          datasets_json(DATASETS), "--dataset", "mnist10k"],
                         capture_output=True, text=True, timeout=120, check=True)
    verdict = json.loads(out.stdout.strip().splitlines()[-1])
    assert verdict["ok"] and verdict["metadata"]["dataset"] == "mnist10k"
