"""ONNX uploads: what torch's two exporters write converts exactly (logits and input gradients),
and every bad file is one CheckpointError line."""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx2torch")
pytest.importorskip("onnxscript")   # torch.onnx.export's default (dynamo) exporter

from helpers_eval import Quantized, first_test_points, mnist  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from robaudit.attacks.common import input_gradient  # noqa: E402
from robaudit.attacks.losses import cross_entropy, dlr  # noqa: E402
from robaudit.evaluation import build_spec, evaluate  # noqa: E402
from robaudit.models import onnx_model  # noqa: E402
from robaudit.models.checkpoint import (  # noqa: E402
    CheckpointError,
    CheckpointMetadata,
    load_checkpoint,
    read_metadata,
    sniff_format,
)
from robaudit.models.normalize import Normalize  # noqa: E402
from robaudit.models.onnx_model import check_onnx_output, load_onnx  # noqa: E402

CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]


# --- a CIFAR ResNet-18 in the pytorch-cifar layout, written here independently of robaudit ----------

class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._layer(64, 1)
        self.layer2 = self._layer(128, 2)
        self.layer3 = self._layer(256, 2)
        self.layer4 = self._layer(512, 2)
        self.linear = nn.Linear(512, num_classes)

    def _layer(self, planes: int, stride: int) -> nn.Sequential:
        blocks = []
        for s in (stride, 1):
            blocks.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


def _resnet18() -> nn.Module:
    torch.manual_seed(0)
    net = ResNet18()
    # Non-trivial running statistics, so the exporters' BatchNorm folding is exercised.
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def _export(model: nn.Module, example: torch.Tensor, path: Path, *, dynamo: bool) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:   # torch's default exporter, weights kept inside the file
            torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False,
                              dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
        else:
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "batch"}})
    return path


@pytest.fixture(scope="module")
def resnet18():
    return _resnet18()


@pytest.fixture(scope="module")
def exports(resnet18, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    x = torch.rand(2, 3, 32, 32)
    return {"dynamo": _export(resnet18, x, folder / "resnet18-dynamo.onnx", dynamo=True),
            "legacy": _export(resnet18, x, folder / "resnet18-legacy.onnx", dynamo=False)}


def _cifar_metadata(**overrides) -> CheckpointMetadata:
    return CheckpointMetadata(**{"arch": "onnx", "num_classes": 10, "in_channels": 3, "mean": CIFAR_MEAN,
                                 "std": CIFAR_STD, "dataset": "cifar10", **overrides})


def _gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss) -> torch.Tensor:
    # What the attacks and the C10 probe take: d loss / d input, through the whole model.
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        return input_gradient(loss(model(x), y).sum(), x)


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_exported_resnet18_gives_the_original_logits_and_input_gradients(exporter, exports, resnet18):
    path = exports[exporter]
    assert sniff_format(path) == "onnx" and read_metadata(path) is None
    converted, meta = load_checkpoint(path, metadata=_cifar_metadata())
    original = nn.Sequential(Normalize(CIFAR_MEAN, CIFAR_STD), resnet18).eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 5, 9])
    with torch.no_grad():
        assert (converted(x) - original(x)).abs().max() < 1e-5
    for loss in (cross_entropy, dlr):
        want, got = _gradient(original, x, y, loss), _gradient(converted, x, y, loss)
        assert want.abs().max() > 1e-5   # a real gradient, not two zeros agreeing
        assert (got - want).abs().max() < 1e-6, loss.__name__
    assert meta.mean == CIFAR_MEAN


def test_dynamo_export_uses_the_opset_18_plus_ops_onnx2torch_lacks(exports):
    # Guards the point of the test above: the default exporter's graph needs robaudit's converters.
    model = onnx.load(str(exports["dynamo"]), load_external_data=False)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 18
    ops = {n.op_type for n in model.graph.node}
    assert "AveragePool" in ops and "Reshape" in ops
    reshape = next(n for n in model.graph.node if n.op_type == "Reshape")
    assert any(a.name == "allowzero" and a.i == 1 for a in reshape.attribute)


class MeanPoolNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 10)

    def forward(self, x):
        pooled = torch.relu(self.conv(x)).mean((2, 3), keepdim=True)
        return self.fc(pooled.view(pooled.size(0), -1))


@pytest.mark.parametrize("opset", [18, 20])
def test_reduce_mean_and_reshape_allowzero_convert_exactly(opset, tmp_path):
    # The dynamo exporter writes ReduceMean v18 (axes as an input) and Reshape with allowzero=1
    # (v14 at opset 18, where onnx2torch's own converter refuses it; v19 at opset 20).
    torch.manual_seed(0)
    net = MeanPoolNet().eval()
    path = tmp_path / f"meanpool{opset}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(2, 3, 8, 8),), str(path), dynamo=True, external_data=False,
                          opset_version=opset, dynamic_shapes=({0: torch.export.Dim("batch")},))
    graph = onnx.load(str(path)).graph
    assert "ReduceMean" in {n.op_type for n in graph.node}
    reshape = next(n for n in graph.node if n.op_type == "Reshape")
    assert [a.i for a in reshape.attribute if a.name == "allowzero"] == [1]
    converted = load_onnx(path)
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    torch.testing.assert_close(converted(x), net(x), atol=1e-6, rtol=1e-6)
    assert (_gradient(converted, x, y, cross_entropy) - _gradient(net, x, y, cross_entropy)).abs().max() < 1e-7


# --- bad files: one line each ------------------------------------------------------------------

def _save(model, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _graph_model(nodes, inputs, outputs, initializers=(), opset=17, domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=opsets)


def _image_input(name="x", channels=3, size=4):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", channels, size, size])


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_external_data_is_refused_with_how_to_save(tmp_path):
    weight = numpy_helper.from_array(np.ones((48, 10), dtype=np.float32), "w")
    model = _graph_model([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])],
                         [_image_input()], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                         [weight])
    path = tmp_path / "external.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.data", size_threshold=0)
    assert (tmp_path / "weights.data").exists()
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path, metadata=_cifar_metadata(input_size=4))
    message = _one_line(exc)
    assert "external data" in message and "save_as_external_data=False" in message and "external_data=False" in message


def test_graph_claiming_more_than_the_file_holds_is_refused(tmp_path, monkeypatch):
    # A weight whose dims claim 4 GB with 4 bytes of data: refused before anything allocates it.
    huge = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[10**9], raw_data=b"\0\0\0\0")
    model = _graph_model([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Add", ["f", "w"], ["y"])],
                         [_image_input()], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 48])], [huge])
    with pytest.raises(CheckpointError) as exc:
        load_onnx(_save(model, tmp_path / "huge.onnx"))
    assert "claim 4000000000 bytes" in _one_line(exc)

    monkeypatch.setattr(onnx_model, "MAX_NODES", 1)
    two_nodes = _graph_model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Flatten", ["r"], ["y"])],
                             [_image_input()], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 48])])
    with pytest.raises(CheckpointError) as exc:
        load_onnx(_save(two_nodes, tmp_path / "nodes.onnx"))
    assert "has 2 nodes; at most 1" in _one_line(exc)


def test_unsupported_op_names_op_type_domain_and_opset(tmp_path):
    model = _graph_model([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Hardmax", ["f"], ["y"])],
                         [_image_input()], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 48])])
    with pytest.raises(CheckpointError) as exc:
        load_onnx(_save(model, tmp_path / "hardmax.onnx"))
    message = _one_line(exc)
    assert "unsupported ONNX op Hardmax (domain ai.onnx, opset 17)" in message

    custom = _graph_model([helper.make_node("Purify", ["x"], ["y"], domain="com.example.defense")],
                          [_image_input()], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                          domains=["com.example.defense"])
    with pytest.raises(CheckpointError) as exc:
        load_onnx(_save(custom, tmp_path / "custom.onnx"))
    assert "unsupported ONNX op Purify (domain com.example.defense, opset 1)" in _one_line(exc)


def test_output_that_is_not_n_by_classes_is_one_line(tmp_path):
    relu = _graph_model([helper.make_node("Relu", ["x"], ["y"])], [_image_input()],
                        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])])
    path = _save(relu, tmp_path / "feature-map.onnx")
    with pytest.raises(CheckpointError) as exc:
        check_onnx_output(load_onnx(path), 3, 4, 10)
    assert "has shape (3, 3, 4, 4); expected (3, 10) logits (N, classes)" in _one_line(exc)
    with pytest.raises(CheckpointError, match=r"\(3, 3, 4, 4\)"):
        load_checkpoint(path, metadata=_cifar_metadata(input_size=4))

    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path, metadata=_cifar_metadata(in_channels=1, mean=[0.5], std=[0.5], input_size=4))
    assert "the graph takes 3-channel images but the dataset has 1 channel(s)" in _one_line(exc)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path, metadata=_cifar_metadata(input_size=32))
    assert "the graph takes 4x4 images but the dataset's are 32x32" in _one_line(exc)

    two = _graph_model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["b"])],
                       [_image_input()], [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "ab"])
    with pytest.raises(CheckpointError) as exc:
        load_onnx(_save(two, tmp_path / "two.onnx"))
    assert "1 input(s) and 2 output(s)" in _one_line(exc)


def test_fixed_batch_export_runs_in_chunks_with_exact_gradients(tmp_path):
    # torch.onnx.export's default call (no dynamic_shapes) bakes the example batch of 2 into the
    # graph; robaudit runs such a graph two images at a time, padding the last chunk.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10)).eval()
    path = tmp_path / "static.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(2, 3, 4, 4),), str(path), external_data=False)
    graph_input = onnx.load(str(path)).graph.input[0]
    assert graph_input.type.tensor_type.shape.dim[0].dim_value == 2
    converted = load_onnx(path)
    x, y = torch.rand(5, 3, 4, 4), torch.tensor([1, 2, 3, 4, 5])
    torch.testing.assert_close(converted(x), net(x), atol=1e-5, rtol=1e-5)
    assert (_gradient(converted, x, y, cross_entropy) - _gradient(net, x, y, cross_entropy)).abs().max() < 1e-6


def test_truncated_and_random_files_are_one_line(exports, tmp_path):
    data = exports["legacy"].read_bytes()
    for cut in (len(data) // 2, len(data) - 100, 64):
        truncated = tmp_path / f"cut{cut}.onnx"
        truncated.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as exc:
            load_checkpoint(truncated, metadata=_cifar_metadata())
        assert "truncated or corrupt" in _one_line(exc)
    rng = np.random.default_rng(0)
    for i in range(20):
        noise = tmp_path / f"noise{i}.onnx"
        noise.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        with pytest.raises(CheckpointError) as exc:
            load_checkpoint(noise, metadata=_cifar_metadata())
        _one_line(exc)


def test_onnx_without_metadata_asks_for_it(exports):
    with pytest.raises(CheckpointError, match="carries no robaudit metadata"):
        load_checkpoint(exports["legacy"])


# --- gradients the diagnostics must see -------------------------------------------------------

@functools.cache
def _mnist_mlp() -> nn.Module:
    """A small MLP fitted to 2,000 digits in a second (~90 % clean): enough for clean-correct points."""
    torch.manual_seed(0)
    x, y = mnist("train")
    x, y = x[:2000], y[:2000]
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(5):
        for i in range(0, len(x), 100):
            loss = F.cross_entropy(net(x[i:i + 100]), y[i:i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def _mnist_onnx(model: nn.Module, path: Path) -> nn.Module:
    _export(model.eval(), torch.rand(2, 1, 28, 28), path, dynamo=False)
    converted, _ = load_checkpoint(path, metadata=CheckpointMetadata(
        arch="onnx", num_classes=10, in_channels=1, mean=[0.0], std=[1.0], dataset="mnist10k"))
    return converted


def test_non_differentiable_ops_give_zero_gradients_not_errors(tmp_path):
    # Sign and Round have zero derivative almost everywhere; the converted graph must say so
    # (neither a straight-through gradient nor an exception on backward).
    for op in ("Sign", "Round"):
        model = _graph_model([helper.make_node(op, ["x"], ["s"]), helper.make_node("Flatten", ["s"], ["y"])],
                             [_image_input(size=2)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12])])
        converted = load_onnx(_save(model, tmp_path / f"{op}.onnx"))
        x = torch.rand(4, 3, 2, 2) * 3 - 1.5
        grad = _gradient(converted, x, torch.zeros(4, dtype=torch.long), cross_entropy)
        assert torch.isfinite(grad).all() and grad.abs().max() == 0, op


def test_input_quantisation_in_the_graph_is_flagged_by_the_gradient_check(tmp_path):
    # A defense that rounds its input inside the ONNX graph masks gradients; C10 must fail.
    converted = _mnist_onnx(Quantized(_mnist_mlp(), levels=2), tmp_path / "binarised.onnx")
    assert "Round" in {n.op_type for n in onnx.load(str(tmp_path / "binarised.onnx")).graph.node}
    x, y = first_test_points(30)
    results = evaluate(converted, x, y, build_spec(attacks="pgd", steps="5", eps="0.3", n_examples=30))
    c10 = next(c for c in results["diagnostics"]["checks"] if c["id"] == "C10")
    assert c10["status"] == "fail" and c10["evidence"]["zero_dlr_gradient"] > 0


def test_converted_model_runs_a_quick_evaluation(tmp_path):
    converted = _mnist_onnx(_mnist_mlp(), tmp_path / "mlp.onnx")
    x, y = first_test_points(20)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), _mnist_mlp()(x), atol=1e-5, rtol=1e-5)
    results = evaluate(converted, x, y, build_spec("quick", eps="0.3", n_examples=20))
    assert results["clean_accuracy"] > 0.8
    checks = {c["id"]: c["status"] for c in results["diagnostics"]["checks"]}
    assert checks["C10"] == "pass"
