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
from robaudit.models.validate import datasets_json, inspect_file, parse_datasets, validate_file


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
    # A dataset the file does not fit is reported before the missing preprocessing.
    wrong = validate_file(bare, datasets=DATASETS, arch="smallcnn", dataset="cifar10")
    assert wrong["error"].startswith("checkpoint does not match smallcnn: the file's '0.mean' is (1, 1, 1, 1) where "
                                     "smallcnn has (1, 3, 1, 1)")
    ok = validate_file(bare, datasets=DATASETS, arch="smallcnn", dataset="mnist10k", preprocessing="none")
    assert ok["ok"] and ok["metadata"]["preprocessing"] == "none" and ok["detected_arch"] is None


def test_the_api_runs_it_as_a_module(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", mnist_model(), mnist_metadata())
    out = subprocess.run([sys.executable, "-m", "robaudit.models.validate", str(path), "--datasets",
                          datasets_json(DATASETS), "--dataset", "mnist10k"],
                         capture_output=True, text=True, timeout=120, check=True)
    verdict = json.loads(out.stdout.strip().splitlines()[-1])
    assert verdict["ok"] and verdict["metadata"]["dataset"] == "mnist10k"


def test_inspect_recognises_a_bare_file_and_lists_the_datasets_that_fit(tmp_path):
    from safetensors.torch import save_file

    model = mnist_model()
    bare = {f"module.{k[2:]}": v.contiguous() for k, v in model.state_dict().items() if k.startswith("1.")}
    save_file(bare, str(tmp_path / "bare.safetensors"))
    out = subprocess.run([sys.executable, "-m", "robaudit.models.validate", str(tmp_path / "bare.safetensors"),
                          "--datasets", datasets_json(DATASETS), "--inspect"],
                         capture_output=True, text=True, timeout=120, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["ok"] and found["detected_arch"] == "smallcnn"
    assert (found["num_classes"], found["in_channels"], found["input_size"]) == (10, 1, 28)
    fitting = [n for n, d in DATASETS.items() if (d.num_classes, d.in_channels, d.size) == (10, 1, 28)]
    assert found["datasets"] == fitting
    assert "mnist10k" in found["datasets"] and "cifar10" not in found["datasets"]

    # Without the dataset the answer names the architecture and the datasets to choose from.
    verdict = validate_file(tmp_path / "bare.safetensors", datasets=DATASETS)
    assert not verdict["ok"]
    assert "give the 'dataset' and 'preprocessing' form fields (the 'arch' field is optional: recognised smallcnn" \
        in verdict["error"]
    assert "compatible datasets: mnist10k, mnist" in verdict["error"]
    # With dataset and preprocessing and no arch: recognised, and said so.
    ok = validate_file(tmp_path / "bare.safetensors", datasets=DATASETS, dataset="mnist10k", preprocessing="none")
    assert ok["ok"] and ok["detected_arch"] == "smallcnn" and ok["metadata"]["arch"] == "smallcnn"
    custom = validate_file(tmp_path / "bare.safetensors", datasets=DATASETS, dataset="mnist10k", mean=[0.1307],
                           std=[0.3081])
    assert custom["ok"] and custom["metadata"]["preprocessing"] == "custom"


def test_a_file_matching_nothing_names_the_closest_network(tmp_path):
    state = {k[2:]: v for k, v in mnist_model().state_dict().items() if k.startswith("1.")}
    state["classifier.1.weight"] = torch.zeros(200, 999)
    torch.save(state, tmp_path / "odd.pt")
    verdict = validate_file(tmp_path / "odd.pt", datasets=DATASETS, dataset="mnist10k", preprocessing="none")
    assert verdict == {"ok": False, "closest": "smallcnn", "error": (
        "odd.pt: no catalogue architecture matches: closest is smallcnn; the file's 'classifier.1.weight' is "
        "(200, 999) where smallcnn has (200, 1024)")}
    inspected = inspect_file(tmp_path / "odd.pt", datasets=DATASETS)
    assert not inspected["ok"] and inspected["closest"] == "smallcnn"


def test_the_validator_takes_the_input_range(tmp_path):
    state = {k[2:]: v for k, v in mnist_model().state_dict().items() if k.startswith("1.")}
    torch.save(state, tmp_path / "net.pt")
    out = subprocess.run([sys.executable, "-m", "robaudit.models.validate", str(tmp_path / "net.pt"), "--datasets",
                          datasets_json(DATASETS), "--dataset", "mnist10k", "--preprocessing", "none",
                          "--input-range", "[0, 255]"], capture_output=True, text=True, timeout=120, check=True)
    verdict = json.loads(out.stdout.strip().splitlines()[-1])
    assert verdict["ok"] and verdict["detected_arch"] == "smallcnn" and verdict["metadata"]["input_range"] == [0, 255]
    bad = validate_file(tmp_path / "net.pt", datasets=DATASETS, dataset="mnist10k", preprocessing="none",
                        input_range=[0, 2])
    assert bad["error"] == "input_range must be [0, 1] or [0, 255], got [0, 2]"
