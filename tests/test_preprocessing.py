"""Preprocessing is explicit: presets, custom mean and std, the input range, and no default anywhere."""
from __future__ import annotations

import json

import pytest
import torch
from helpers_training import mnist_metadata, mnist_model, one_torch_thread  # noqa: F401  (fixture)

import robaudit
from robaudit.models import build_model, save_checkpoint
from robaudit.models.checkpoint import CheckpointError, CheckpointMetadata, load_checkpoint
from robaudit.models.preprocessing import PREPROCESSING, resolve_preprocessing

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_presets_broadcast_to_the_channels():
    assert resolve_preprocessing("none", None, None, 1) == ("none", [0.0], [1.0])
    assert resolve_preprocessing("cifar-0.5", None, None, 3) == ("cifar-0.5", [0.5] * 3, [0.5] * 3)
    assert resolve_preprocessing("ImageNet", None, None, 3) == ("imagenet", [0.485, 0.456, 0.406],
                                                                [0.229, 0.224, 0.225])
    assert resolve_preprocessing("cifar10", None, None, 3)[1] == [0.4914, 0.4822, 0.4465]
    assert set(PREPROCESSING) >= {"none", "cifar-0.5", "imagenet", "cifar10"}


def test_custom_mean_and_std():
    assert resolve_preprocessing(None, [0.1307], [0.3081], 1) == ("custom", [0.1307], [0.3081])
    assert resolve_preprocessing(None, [0.5], [0.25], 3) == ("custom", [0.5] * 3, [0.25] * 3)


@pytest.mark.parametrize(("preset", "mean", "std", "message"), [
    (None, None, None, "input normalisation is unknown: give a preprocessing preset (none, cifar-0.5, imagenet, "
                       "cifar10) or mean and std"),
    ("zca", None, None, "unknown preprocessing 'zca'; choose one of: none, cifar-0.5, imagenet, cifar10"),
    ("none", [0.5], [0.5], "either a preprocessing preset or mean and std, not both"),
    (None, [0.5], None, "give both mean and std"),
    (None, [0.5, 0.5], [0.5, 0.5], "mean has 2 values but the model takes 3 input channel(s)"),
    (None, [0.5], [0.0], "std values must be positive"),
    ("imagenet", None, None, None),
])
def test_bad_or_missing_preprocessing_says_what_to_give(preset, mean, std, message):
    channels = 1 if preset == "imagenet" else 3
    with pytest.raises(CheckpointError) as info:
        resolve_preprocessing(preset, mean, std, channels)
    assert message is None or message in str(info.value)


def test_a_file_without_metadata_is_never_given_a_default(tmp_path):
    model = mnist_model()
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="give a preprocessing preset"):
        robaudit.load_model(tmp_path / "bare.pt", dataset="mnist10k")
    net_only = {k[2:]: v for k, v in model.state_dict().items() if k.startswith("1.")}
    torch.save(net_only, tmp_path / "net.pt")
    loaded = robaudit.load_model(tmp_path / "net.pt", dataset="mnist10k", mean=[0.1307], std=[0.3081])
    assert loaded[0].mean.flatten().tolist() == pytest.approx([0.1307])
    assert loaded[0].std.flatten().tolist() == pytest.approx([0.3081])
    # A file holding robaudit's own Normalize layer must agree with what is given.
    with pytest.raises(CheckpointError, match=r"the file's own normalisation '0.mean' is \[0.0\] but"):
        robaudit.load_model(tmp_path / "bare.pt", dataset="mnist10k", mean=[0.1307], std=[0.3081])
    assert robaudit.load_model(tmp_path / "bare.pt", dataset="mnist10k", preprocessing="none")[0].std.item() == 1.0


def test_files_with_metadata_keep_what_they_state(tmp_path):
    model = build_model("smallcnn", num_classes=10, in_channels=1, mean=[0.25], std=[0.5])
    path = save_checkpoint(tmp_path / "m.safetensors", model, mnist_metadata(mean=[0.25], std=[0.5]))
    loaded = robaudit.load_model(path)
    assert loaded[0].mean.item() == 0.25 and loaded[0].std.item() == 0.5
    with pytest.raises(robaudit.RobauditError, match="states its own preprocessing"):
        robaudit.load_model(path, preprocessing="none")


def test_an_old_file_without_the_new_fields_still_loads(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", mnist_model(), mnist_metadata())
    meta = json.loads(path.with_suffix(".json").read_text())
    for key in ("preprocessing", "input_range"):
        meta.pop(key)
    old = CheckpointMetadata.from_dict(meta)
    assert old.preprocessing is None and old.input_range == [0.0, 1.0]


def test_a_0_255_network_takes_0_1_inputs(tmp_path):
    torch.manual_seed(0)
    model = mnist_model().eval()
    x = torch.rand(4, 1, 28, 28)
    expected = model(x)
    # The same network for 0..255 pixels: its first convolution divided by 255.
    state = {k[2:]: v.clone() for k, v in model.state_dict().items() if k.startswith("1.")}
    state["features.0.weight"] /= 255.0
    torch.save(state, tmp_path / "pixels.pt")
    loaded = robaudit.load_model(tmp_path / "pixels.pt", dataset="mnist10k", preprocessing="none",
                                 input_range=[0, 255])
    assert torch.allclose(loaded(x), expected, atol=1e-5)
    meta = mnist_metadata(input_range=[0, 255], preprocessing="none")
    _, stored = load_checkpoint(tmp_path / "pixels.pt", metadata=meta)
    assert stored.input_range == [0, 255]
    with pytest.raises(CheckpointError, match=r"input_range must be \[0, 1\] or \[0, 255\]"):
        CheckpointMetadata.from_dict({**json.loads(meta.to_json()), "input_range": [0, 2]})
