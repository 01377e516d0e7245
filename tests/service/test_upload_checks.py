"""What the upload does with a file that is not robaudit's own: explicit preprocessing, the recognised
architecture, the clean-accuracy check stored with the checkpoint, ONNX files, and
POST /checkpoints/inspect (a file, or a .safetensors header's names and shapes) which stores nothing."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from robaudit.backend.app.main import create_app
from robaudit.backend.app.models import Checkpoint
from robaudit.data import DATASETS, dataset_info
from robaudit.models import CheckpointMetadata, build_model, load_checkpoint, save_checkpoint
from robaudit.models.registry import build_network

from .conftest import count_rows, make_settings


@pytest.fixture
def settings(tmp_path):
    # An empty datasets folder: mnist10k is bundled, torchvision datasets (cifar10) are absent for sure.
    (tmp_path / "no-datasets").mkdir()
    return make_settings(tmp_path / "data", max_upload_mb=4.0, datasets_dir=tmp_path / "no-datasets")


@pytest.fixture(scope="module")
def trained_net(trained_checkpoint) -> dict[str, torch.Tensor]:
    """The bare network of a SmallCNN trained on [0, 1] MNIST digits (~85% clean): the state_dict a
    user would publish, without robaudit's Normalize wrapper or metadata."""
    model, _ = load_checkpoint(trained_checkpoint)
    return {k: v.contiguous() for k, v in model[1].state_dict().items()}


def _post(client, filename: str, data: bytes, **fields):
    return client.post("/api/v1/checkpoints", files={"file": (filename, data, "application/octet-stream")}, data=fields)


def _inspect_file(client, filename: str, data: bytes):
    return client.post("/api/v1/checkpoints/inspect", files={"file": (filename, data, "application/octet-stream")})


def _safetensors(state: dict[str, torch.Tensor], path: Path) -> bytes:
    save_file(state, str(path))
    return path.read_bytes()


def _pt(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _nothing_stored(client, settings) -> None:
    assert count_rows(settings, Checkpoint) == 0
    assert client.get("/api/v1/checkpoints").json()["count"] == 0
    assert not any(settings.checkpoints_dir.iterdir()) and not any(settings.tmp_dir.iterdir())


def _shapes(state) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in state.items()}


# --------------------------------------------------------------------------- upload

def test_bare_file_without_preprocessing_is_refused_with_what_to_give(client, settings, trained_net, tmp_path):
    data = _safetensors(trained_net, tmp_path / "net.safetensors")
    resp = _post(client, "net.safetensors", data, dataset="mnist10k")
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert "preprocessing" in detail and "mean and std" in detail and "\n" not in detail
    _nothing_stored(client, settings)


def test_recognised_upload_stores_its_clean_accuracy(client, settings, trained_net, tmp_path):
    data = _safetensors(trained_net, tmp_path / "net.safetensors")
    resp = _post(client, "net.safetensors", data, dataset="mnist10k", preprocessing="none")   # no arch given
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["detected_arch"] == "smallcnn" and body["arch"] == "smallcnn"
    assert body["preprocessing"] == "none" and not body["embedded_metadata"]
    check = body["clean_check"]
    assert check["ran"] and check["n"] == 500 and check["chance"] == pytest.approx(0.1)
    assert check["accuracy"] > 0.6 and not check["suspect"]
    stored = client.get(f"/api/v1/checkpoints/{body['id']}").json()
    assert stored["clean_check"] == check and stored["detected_arch"] == "smallcnn"
    assert client.get("/api/v1/checkpoints").json()["data"][0]["clean_check"] == check


def test_wrong_preprocessing_is_flagged_near_chance_and_the_right_one_is_not(client, settings, trained_net, tmp_path):
    data = _pt(trained_net)
    # Trained on [0, 1] pixels; told it takes (x - 0) / 255, it sees blank images and guesses one class.
    wrong = _post(client, "net.pt", data, dataset="mnist10k", preprocessing="custom", mean="[0]", std="[255]")
    assert wrong.status_code == 201, wrong.text
    check = wrong.json()["clean_check"]
    assert check["ran"] and check["suspect"] and check["accuracy"] < 0.2
    assert "wrong preprocessing, class order or dataset?" in check["message"]
    assert wrong.json()["preprocessing"] == "custom" and wrong.json()["metadata"]["std"] == [255.0]
    assert client.delete(f"/api/v1/checkpoints/{wrong.json()['id']}").status_code == 204

    # The range is stored with the checkpoint (load_checkpoint folds it into the Normalize layer).
    scaled = _post(client, "net.pt", data, dataset="mnist10k", preprocessing="none", input_range="[0, 255]")
    assert scaled.status_code == 201, scaled.text
    assert scaled.json()["metadata"]["input_range"] == [0.0, 255.0]
    assert client.delete(f"/api/v1/checkpoints/{scaled.json()['id']}").status_code == 204

    right = _post(client, "net.pt", data, dataset="mnist10k", preprocessing="none")
    assert right.status_code == 201, right.text
    assert right.json()["clean_check"]["ran"] and not right.json()["clean_check"]["suspect"]


def test_clean_check_says_why_it_could_not_run_when_the_dataset_is_absent(client, settings, tmp_path):
    info = dataset_info("cifar10")
    kwargs = {"depth": 10, "widen_factor": 1}   # a WideResNet of 80 k parameters: small enough to upload here
    model = build_model("wideresnet", num_classes=10, in_channels=3, mean=info.mean, std=info.std, **kwargs)
    meta = CheckpointMetadata(arch="wideresnet", arch_kwargs=kwargs, num_classes=10, in_channels=3,
                              mean=list(info.mean), std=list(info.std), dataset="cifar10", input_size=32)
    path = save_checkpoint(tmp_path / "c.safetensors", model, meta)
    resp = _post(client, "c.safetensors", path.read_bytes())
    assert resp.status_code == 201, resp.text   # the model loads: it is stored, and the answer says why no figure
    check = resp.json()["clean_check"]
    assert check["ran"] is False and "cifar10" in check["reason"].lower()
    assert client.get(f"/api/v1/checkpoints/{resp.json()['id']}").json()["clean_check"] == check


@pytest.mark.parametrize("fields, says", [
    ({"preprocessing": "bogus"}, "unknown preprocessing"),
    ({"mean": "[0.5]"}, "both mean and std"),
    ({"preprocessing": "custom"}, "needs the mean and std"),
    ({"preprocessing": "none", "mean": "[0.5]", "std": "[0.5]"}, "not both"),
    ({"mean": "[0.5]", "std": "[0]"}, "positive"),
    ({"mean": "0.5", "std": "[0.5]"}, "JSON list"),
    ({"mean": "[1, 2, 3]", "std": "[1, 1, 1]"}, "3 values"),   # three values for a one-channel network
    ({"preprocessing": "none", "input_range": "[0, 2]"}, "input_range must be [0, 1] or [0, 255]"),
])
def test_bad_preprocessing_fields_are_refused(client, settings, trained_net, fields, says):
    resp = _post(client, "net.pt", _pt(trained_net), dataset="mnist10k", **fields)
    assert resp.status_code == 422 and says in resp.json()["detail"], resp.text
    _nothing_stored(client, settings)


def _mismatched(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The right keys, one with the wrong shape."""
    key = next(k for k, v in state.items() if v.dim() == 4)
    return {**state, key: torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])}


def test_unrecognisable_and_truncated_files_are_refused_and_nothing_is_stored(client, settings, trained_net, tmp_path):
    nothing = _post(client, "x.safetensors", _safetensors({"encoder.w": torch.zeros(3, 3)}, tmp_path / "x.safetensors"),
                    dataset="mnist10k", preprocessing="none")
    assert nothing.status_code == 422 and "encoder.w" in nothing.json()["detail"], nothing.text
    wrong_shape = _post(client, "y.pt", _pt({f"module.{k}": v for k, v in _mismatched(trained_net).items()}),
                        dataset="mnist10k", preprocessing="none")
    # Named as the file names it, prefix included.
    assert wrong_shape.status_code == 422 and "module." in wrong_shape.json()["detail"], wrong_shape.text
    full = _pt(trained_net)
    truncated = _post(client, "z.pt", full[: len(full) // 2], dataset="mnist10k", preprocessing="none")
    assert truncated.status_code == 422, truncated.text
    _nothing_stored(client, settings)


# --------------------------------------------------------------------------- inspect

def test_inspect_a_file_recognises_it_and_stores_nothing(client, settings, trained_net, tmp_path):
    for name, data in (("net.pt", _pt({f"module.{k}": v for k, v in trained_net.items()})),
                       ("net.safetensors", _safetensors(trained_net, tmp_path / "n.safetensors"))):
        resp = _inspect_file(client, name, data)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["detected_arch"] == "smallcnn" and body["arch"] == "smallcnn"
        assert (body["num_classes"], body["in_channels"]) == (10, 1) and "mnist10k" in body["datasets"]
        assert "cifar10" not in body["datasets"]
    bad = _inspect_file(client, "bad.pt", _pt(_mismatched(trained_net)))
    assert bad.status_code == 422 and "smallcnn" in bad.json()["detail"]
    assert _inspect_file(client, "e.pt", b"").status_code == 422
    _nothing_stored(client, settings)


def test_inspect_from_header_shapes(client, settings, trained_net):
    shapes = {f"model.{k}": s for k, s in _shapes(trained_net).items()}
    resp = client.post("/api/v1/checkpoints/inspect", json={"tensors": shapes})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["detected_arch"] == "smallcnn" and body["num_classes"] == 10 and body["in_channels"] == 1
    mnist_like = [d.name for d in DATASETS.values() if (d.num_classes, d.in_channels, d.size) == (10, 1, 28)]
    assert body["datasets"] == mnist_like
    assert "mnist10k" in body["datasets"] and not body["embedded"]

    key = next(k for k, s in shapes.items() if len(s) == 4)
    wrong = client.post("/api/v1/checkpoints/inspect", json={"tensors": {**shapes, key: [1, 1, 1, 1]}})
    assert wrong.status_code == 422
    assert key in wrong.json()["detail"] and "smallcnn" in wrong.json()["detail"]
    nothing = client.post("/api/v1/checkpoints/inspect", json={"tensors": {"encoder.w": [3, 3]}})
    assert nothing.status_code == 422 and "encoder.w" in nothing.json()["detail"]
    _nothing_stored(client, settings)


@pytest.mark.parametrize("body, status, says", [
    (b"{not json", 422, "not valid JSON"),
    (b"[" * 50_000 + b"]" * 50_000, 422, "not valid JSON"),
    (json.dumps({"shapes": {}}).encode(), 422, '{"tensors"'),
    (json.dumps({"tensors": {}}).encode(), 422, "no tensors"),
    (json.dumps({"tensors": {"a": [2, -1]}}).encode(), 422, "non-negative integers"),
    (json.dumps({"tensors": {"a": [1] * 9}}).encode(), 422, "at most 8"),
    (json.dumps({"tensors": {"a": [True]}}).encode(), 422, "non-negative integers"),
    (json.dumps({"tensors": {f"k{i}": [1] for i in range(20_001)}}).encode(), 413, "KB"),
])
def test_inspect_refuses_bad_shape_tables(client, settings, body, status, says):
    resp = client.post("/api/v1/checkpoints/inspect", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == status and says in resp.json()["detail"], resp.text


def test_inspect_needs_the_token_and_a_known_content_type(settings, auth):
    with TestClient(create_app(settings, janitor=False)) as anonymous:
        assert anonymous.post("/api/v1/checkpoints/inspect", json={"tensors": {"a": [1]}}).status_code == 401
        resp = anonymous.post("/api/v1/checkpoints/inspect", content=b"x",
                              headers={**auth, "Content-Type": "text/plain"})
        assert resp.status_code == 415 and "multipart" in resp.json()["detail"]


# --------------------------------------------------------------------------- ONNX

def _onnx_bytes(net: torch.nn.Module, in_channels: int, size: int) -> bytes:
    buf = io.BytesIO()
    torch.onnx.export(net.eval(), (torch.zeros(1, in_channels, size, size),), buf, dynamo=False,
                      input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return buf.getvalue()


def test_onnx_upload_is_stored_with_its_clean_accuracy(client, settings, trained_net):
    pytest.importorskip("onnx2torch")
    net = build_network("smallcnn", num_classes=10, in_channels=1)
    net.load_state_dict(trained_net)
    data = _onnx_bytes(net, 1, 28)
    resp = _post(client, "net.onnx", data, dataset="mnist10k", preprocessing="none")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["ext"] == "onnx" and (settings.checkpoints_dir / f"{body['sha256']}.onnx").read_bytes() == data
    assert body["clean_check"]["ran"] and body["clean_check"]["accuracy"] > 0.6
    download = client.get(f"/api/v1/checkpoints/{body['id']}/file")
    assert download.status_code == 200 and download.content == data
    seen = _inspect_file(client, "net.onnx", data).json()   # a graph is its own architecture
    assert seen["detected_arch"] is None and seen["arch"] == "onnx" and "mnist10k" in seen["datasets"]
    assert (seen["num_classes"], seen["in_channels"], seen["input_size"]) == (10, 1, 28)
    assert "cifar10" not in seen["datasets"]


def test_onnx_with_an_unsupported_op_is_refused(client, settings):
    pytest.importorskip("onnx2torch")
    from onnx import TensorProto, helper

    # A custom-domain op no converter knows: named in the one-line refusal.
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    resp = _post(client, "odd.onnx", model.SerializeToString(), dataset="mnist10k", preprocessing="none")
    assert resp.status_code == 422 and "Frobnicate" in resp.json()["detail"], resp.text
    seen = _inspect_file(client, "odd.onnx", model.SerializeToString())
    assert seen.status_code == 422 and "Frobnicate" in seen.json()["detail"], seen.text
    truncated = _post(client, "cut.onnx", model.SerializeToString()[:20], dataset="mnist10k", preprocessing="none")
    assert truncated.status_code == 422, truncated.text
    _nothing_stored(client, settings)
