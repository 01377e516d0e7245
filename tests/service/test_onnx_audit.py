"""The issue's ONNX case end to end: a CIFAR-10 ResNet-18 (pytorch-cifar layout) exported with torch's
default (dynamo) exporter is uploaded, and audited by the worker's job code on CIFAR-10 test images
(a few synthetic ones in CIFAR-10's own file format)."""
from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient
from published_nets import PUBLISHED
from test_data import skip_cifar_checksums, write_cifar10  # noqa: F401 (a fixture)

from robaudit.backend.app.main import create_app

from .conftest import make_settings, run_inline

pytest.importorskip("onnxscript")   # torch.onnx.export's default (dynamo) exporter


def test_a_default_exporter_onnx_resnet18_uploads_and_is_audited(tmp_path, auth, skip_cifar_checksums):
    torch.manual_seed(0)
    net = PUBLISHED["resnet18"](10, 3).eval()
    onnx_path = tmp_path / "resnet18.onnx"
    torch.onnx.export(net, (torch.rand(1, 3, 32, 32),), str(onnx_path), dynamo=True, external_data=False,
                      dynamic_shapes=({0: torch.export.Dim("batch")},))
    write_cifar10(tmp_path / "datasets")
    settings = make_settings(tmp_path / "data")
    object.__setattr__(settings, "datasets_dir", tmp_path / "datasets")
    with TestClient(create_app(settings, janitor=False), headers=auth) as client:
        upload = client.post("/api/v1/checkpoints",
                             files={"file": ("resnet18.onnx", onnx_path.read_bytes(), "application/octet-stream")},
                             data={"dataset": "cifar10", "preprocessing": "cifar10", "name": "onnx-resnet18"})
        assert upload.status_code == 201, upload.text
        checkpoint = upload.json()
        assert checkpoint["ext"] == "onnx" and checkpoint["arch"] == "onnx" and checkpoint["preprocessing"] == "cifar10"
        job = client.post("/api/v1/evaluations", json={"checkpoint_id": checkpoint["id"], "preset": "quick",
                                                       "n_examples": 5, "batch_size": 5})
        assert job.status_code == 201, job.text
        assert run_inline(settings, job.json()["id"]) == "succeeded"
        results = client.get(f"/api/v1/evaluations/{job.json()['id']}/results").json()
    assert results["dataset"] == "cifar10" and results["n"] == 5
    assert {row["attack"] for row in results["summary"]} >= {"fgsm", "pgd", "cw"}
    # An untrained network on random images: the audit runs, and says its clean accuracy is no audit.
    assert results["clean_check"]["n"] == 5 and results["diagnostics"]["verdict"]
