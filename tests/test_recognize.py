"""Recognising a bare state_dict: containers, prefixes, every catalogue network, and the one-line refusal.

Files are written from independent definitions (tests/published_nets.py) where the catalogue helper
provides them, and from robaudit's own networks otherwise; shapes are built on the meta device, so
even a WRN-70-16 costs nothing.
"""
from __future__ import annotations

import pytest
import torch
from helpers_training import mnist_model, one_torch_thread  # noqa: F401  (fixture)
from safetensors.torch import save_file

import robaudit
from robaudit.models.checkpoint import CheckpointError, load_checkpoint, read_shapes
from robaudit.models.recognize import normalise_state_dict, recognize
from robaudit.models.registry import CATALOGUE, build_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")

try:
    from published_nets import PUBLISHED  # the catalogue helper's independent definitions
except ImportError:   # before that branch lands: robaudit's own networks stand in
    PUBLISHED = {}


def _published(name: str, num_classes: int, in_channels: int) -> torch.nn.Module:
    if name in PUBLISHED:
        return PUBLISHED[name](num_classes, in_channels)
    return build_network(name, num_classes=num_classes, in_channels=in_channels)


def _shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


def _channels(name: str) -> int:
    return 1 if CATALOGUE[name].input_size == 28 else 3


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_catalogue_network_is_recognised_with_its_classes_and_channels(name):
    in_channels = _channels(name)
    with torch.device("meta"):
        net = _published(name, 7, in_channels)
    found = recognize(_shapes(net.state_dict()))
    # Two catalogue entries may share a key layout; recognition then names the first and says so.
    assert found.arch == name or name in found.message, found.message
    assert (found.num_classes, found.in_channels) == (7, in_channels)
    assert found.input_size == CATALOGUE[name].input_size


CONTAINERS = {
    "bare": lambda sd: sd,
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 3},
    "model": lambda sd: {"model": sd, "optimizer": {}},
    "net": lambda sd: {"net": sd},
    "model_state_dict": lambda sd: {"model_state_dict": sd, "acc": 0.5},
    "ema": lambda sd: {"ema": sd},
    "nested": lambda sd: {"model": {"state_dict": sd}},
}
PREFIXES = ["", "module.", "model.", "net.", "module.basic_net.", "module.model.", "_orig_mod."]


@pytest.mark.parametrize("container", sorted(CONTAINERS))
@pytest.mark.parametrize("prefix", PREFIXES)
def test_containers_and_prefixes_are_unwrapped(container, prefix):
    with torch.device("meta"):
        net = _published("preactresnet18", 10, 3)
    sd = {prefix + k: v for k, v in net.state_dict().items()}
    state, original = normalise_state_dict(CONTAINERS[container](sd))
    assert set(state) == set(net.state_dict())
    assert original["linear.weight"] == prefix + "linear.weight"
    assert recognize(_shapes(state), original_keys=original).arch == "preactresnet18"


def test_averaged_model_step_count_is_dropped():
    with torch.device("meta"):
        net = _published("smallcnn", 10, 1)
    sd = {"n_averaged": torch.tensor(5), **{f"module.{k}": v for k, v in net.state_dict().items()}}
    state, _ = normalise_state_dict(sd)
    assert set(state) == set(net.state_dict())


def test_a_wrong_shape_names_the_closest_network_and_the_files_own_key():
    with torch.device("meta"):
        net = _published("wrn-28-10", 10, 3)
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    conv = next(k for k in sd if k.endswith("conv1.weight") and sd[k].shape == (160, 16, 3, 3))
    sd[conv] = torch.empty(320, 16, 3, 3, device="meta")
    state, original = normalise_state_dict(sd)
    found = recognize(_shapes(state), original_keys=original)
    assert found.arch is None and found.closest == "wrn-28-10"
    assert found.message == (f"no catalogue architecture matches: closest is wrn-28-10; the file's {conv!r} is "
                             "(320, 16, 3, 3) where wrn-28-10 has (160, 16, 3, 3)")


def test_missing_and_unknown_keys_are_named_in_the_files_own_names():
    with torch.device("meta"):
        net = _published("preactresnet18", 10, 3)
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    sd.pop("module.linear.bias")
    state, original = normalise_state_dict(sd)
    found = recognize(_shapes(state), original_keys=original)
    assert found.closest == "preactresnet18"
    assert "the file has no 'module.linear.bias' (preactresnet18 has it, shape (10,))" in found.message

    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    sd["module.projector.weight"] = torch.empty(128, 512, device="meta")
    state, original = normalise_state_dict(sd)
    found = recognize(_shapes(state), original_keys=original)
    assert found.message.endswith("the file's 'module.projector.weight' (128, 512) is not part of preactresnet18")

    nothing = recognize({"encoder.weight": (3, 3)})
    assert nothing.arch is None and nothing.closest is None
    assert nothing.message.startswith("no catalogue architecture matches: no catalogue network shares a key")


def test_a_bare_file_loads_without_arch_and_a_wrong_arch_is_refused_in_the_files_names(tmp_path):
    torch.manual_seed(0)
    model = mnist_model()
    bare = {f"module.{k.removeprefix('1.')}": v for k, v in model.state_dict().items() if k.startswith("1.")}
    save_file(bare, str(tmp_path / "bare.safetensors"))
    loaded = robaudit.load_model(tmp_path / "bare.safetensors", dataset="mnist10k", preprocessing="none")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    with pytest.raises(CheckpointError) as info:
        robaudit.load_model(tmp_path / "bare.safetensors", arch="preactresnet18", dataset="mnist10k",
                            preprocessing="none")
    message = str(info.value)
    assert "checkpoint does not match preactresnet18: the file has no 'module.conv1.weight'" in message
    assert "the file is a smallcnn" in message
    assert "'1." not in message   # never robaudit's wrapper keys

    with pytest.raises(CheckpointError, match="dataset/architecture mismatch: bare.safetensors is a smallcnn for 10 "
                                              "classes and 1 input channel"):
        robaudit.load_model(tmp_path / "bare.safetensors", dataset="cifar10", preprocessing="none")


def test_a_file_matching_nothing_is_one_line(tmp_path):
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError) as info:
        robaudit.load_model(tmp_path / "other.pt", dataset="mnist10k", preprocessing="none")
    assert str(info.value).startswith("other.pt: no catalogue architecture matches")
    assert "\n" not in str(info.value)


def test_a_truncated_file_is_one_line(tmp_path):
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in mnist_model().state_dict().items()}, str(tmp_path / "m.safetensors"))
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"^cut\.safetensors is truncated"):
        read_shapes(tmp_path / "cut.safetensors")
    torch.save(mnist_model().state_dict(), tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"^cut\.pt is truncated or corrupt"):
        robaudit.load_model(tmp_path / "cut.pt", preprocessing="none")


def test_shapes_come_from_a_safetensors_header_alone(tmp_path):
    torch.manual_seed(0)
    net = build_network("smallcnn", num_classes=10, in_channels=1)
    save_file({f"model.{k}": v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "m.safetensors"))
    shapes, original = read_shapes(tmp_path / "m.safetensors")
    assert shapes == _shapes(net.state_dict())
    assert original["features.0.weight"] == "model.features.0.weight"


def test_metadata_given_by_the_service_still_loads(tmp_path):
    from helpers_training import mnist_metadata

    model = mnist_model()
    torch.save({"state_dict": {k[2:]: v for k, v in model.state_dict().items() if k.startswith("1.")}},
               tmp_path / "bare.pt")
    loaded, meta = load_checkpoint(tmp_path / "bare.pt", metadata=mnist_metadata(preprocessing="none"))
    assert meta.preprocessing == "none" and not loaded.training
