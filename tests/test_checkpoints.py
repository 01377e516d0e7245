"""The checkpoint format: round trips, prefixes, and every way a file can be unusable."""
from __future__ import annotations

import json
import pickle
from dataclasses import asdict

import pytest
import torch
from helpers_training import mnist_metadata, mnist_model, one_torch_thread  # noqa: F401  (fixture)
from safetensors.torch import save_file

import robaudit
from robaudit.models import CheckpointError, build_model, load_checkpoint, read_metadata, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.fixture
def model():
    torch.manual_seed(0)
    return mnist_model()


def test_round_trip_keeps_weights_and_metadata(tmp_path, model):
    meta = mnist_metadata(method="feature-scatter", epoch=3, hyperparameters={"eps": 0.3, "lr_milestones": [2, 3]},
                          metrics={"history": [{"epoch": 1, "clean_acc": 0.5}], "final": {"clean_acc": 0.5}})
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    loaded, loaded_meta = load_checkpoint(path)
    assert_same_weights(model, loaded)
    assert not loaded.training
    assert asdict(loaded_meta) == asdict(meta)
    assert loaded_meta.robaudit_version and loaded_meta.created_at
    assert json.loads(path.with_suffix(".json").read_text()) == asdict(meta)
    assert asdict(read_metadata(path)) == asdict(meta)
    assert_same_weights(model, robaudit.load_model(path))


def test_header_lengths_that_start_like_a_pickle_still_load(tmp_path, model):
    # A safetensors file begins with its header length, little-endian: a trained checkpoint whose
    # length ended in 0x80 (the pickle PROTO opcode) was once refused as "no robaudit metadata".
    for pad in range(300):
        meta = mnist_metadata(method="feature-scatter", hyperparameters={"note": "x" * pad})
        path = save_checkpoint(tmp_path / "m.safetensors", model, meta)
        if path.read_bytes()[0] == 0x80:   # headers are padded to 8 bytes: one length in 32 does this
            break
    else:
        pytest.fail("no padding gave a header length ending in 0x80")
    loaded, loaded_meta = load_checkpoint(path)
    assert_same_weights(model, loaded)
    assert loaded_meta.hyperparameters == {"note": "x" * pad}
    assert read_metadata(path).method == "feature-scatter"


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_data_parallel_prefix_is_accepted(tmp_path, model, suffix):
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / f"dp{suffix}"
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    loaded, _ = load_checkpoint(path, metadata=mnist_metadata())
    assert_same_weights(model, loaded)


def test_plain_state_dicts_of_the_bare_network_load_through_the_public_api(tmp_path, model):
    bare = {k.removeprefix("1."): v for k, v in model.state_dict().items() if k.startswith("1.")}
    torch.save({"state_dict": bare}, tmp_path / "bare.pt")
    assert_same_weights(model, robaudit.load_model(tmp_path / "bare.pt", arch="smallcnn", dataset="mnist10k",
                                                   preprocessing="none"))
    # The architecture is recognised from the keys; the preprocessing is never guessed.
    assert_same_weights(model, robaudit.load_model(tmp_path / "bare.pt", preprocessing="none"))
    with pytest.raises(CheckpointError, match="input normalisation is unknown: give a preprocessing preset"):
        robaudit.load_model(tmp_path / "bare.pt", arch="smallcnn", dataset="mnist10k")


class CreatesMarkerOnLoad:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize("writer", ["torch-zip", "torch-legacy", "plain-pickle", "inside-state-dict"])
def test_pickled_code_is_refused_and_never_runs(tmp_path, model, writer):
    marker = tmp_path / "pwned"
    payload = CreatesMarkerOnLoad(marker)
    path = tmp_path / "evil.pt"
    if writer == "torch-zip":
        torch.save(payload, path)
    elif writer == "torch-legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    elif writer == "plain-pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save({"state_dict": model.state_dict(), "extra": payload}, path)

    with pytest.raises(CheckpointError, match="refused.*could run code"):
        load_checkpoint(path, metadata=mnist_metadata())
    with pytest.raises(CheckpointError):
        robaudit.load_model(path, arch="smallcnn", dataset="mnist10k", preprocessing="none")
    assert not marker.exists()

    # The payload is live: an unsafe load would have run it.
    if writer != "plain-pickle":
        torch.load(path, weights_only=False)
        assert marker.exists()


@pytest.fixture
def saved(tmp_path, model):
    return save_checkpoint(tmp_path / "good.safetensors", model, mnist_metadata())


def test_empty_file(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"^empty\.safetensors is empty$"):
        load_checkpoint(tmp_path / "empty.safetensors")


def test_truncated_tensor_data(tmp_path, saved):
    data = saved.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"cut\.safetensors is truncated: its tensors need {len(data)} bytes "
                                               rf"but the file has {len(data) // 2}"):
        load_checkpoint(tmp_path / "cut.safetensors")


def test_truncated_header(tmp_path, saved):
    (tmp_path / "cut.safetensors").write_bytes(saved.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors is truncated: its safetensors header claims"):
        load_checkpoint(tmp_path / "cut.safetensors")


def test_truncated_torch_file(tmp_path, model):
    torch.save(model.state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt is truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt", metadata=mnist_metadata())


def test_corrupt_header(tmp_path, saved):
    data = bytearray(saved.read_bytes())
    data[9:15] = b"######"  # inside the JSON header, right after its opening brace
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"bad\.safetensors is corrupt: its safetensors header is not valid"):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    (tmp_path / "noise.safetensors").write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError, match=r"noise\.safetensors is not a checkpoint"):
        load_checkpoint(tmp_path / "noise.safetensors", metadata=mnist_metadata())


def test_shape_mismatch_names_the_key_and_both_shapes(tmp_path):
    narrow = mnist_model(width=16)
    torch.save(narrow.state_dict(), tmp_path / "narrow.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "narrow.pt", metadata=mnist_metadata())
    message = str(info.value)
    assert "'1.features.0.weight'" in message
    assert "(16, 1, 3, 3)" in message and "(32, 1, 3, 3)" in message


def test_wrong_architecture_names_the_missing_key(tmp_path):
    other = build_model("preactresnet18", num_classes=10, in_channels=1, mean=[0.0], std=[1.0])
    torch.save(other.state_dict(), tmp_path / "resnet.pt")
    with pytest.raises(CheckpointError, match=r"does not match smallcnn: the file has no '1\.features\.0\.weight' "
                                               r"\(smallcnn has it, shape \(32, 1, 3, 3\)\)"):
        load_checkpoint(tmp_path / "resnet.pt", metadata=mnist_metadata())


def test_wrong_number_of_classes(tmp_path, model):
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match=r"the file's '1\.classifier\.6\.weight' is \(10, 200\) "
                                               r"where smallcnn has \(100, 200\)"):
        load_checkpoint(path, metadata=mnist_metadata(num_classes=100))
