"""The user's own test set (`robaudit evaluate --data FILE.npz`): every layout a user saves is read the
same way, every mistake is one line naming the fix, and the results name the file."""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
import torch
from helpers_eval import first_test_points

from robaudit.cli import main
from robaudit.errors import RobauditError
from robaudit.own_data import load_npz

MNIST = {"channels": 1, "size": 28, "num_classes": 10}


@pytest.fixture(scope="module")
def digits():
    x, y = first_test_points(20)
    return (x.numpy() * 255).round().astype(np.uint8), y.numpy()


@pytest.mark.parametrize("layout", ["NHW", "NCHW", "NHWC", "float NCHW"])
def test_every_layout_gives_the_same_images(tmp_path, digits, layout):
    pixels, labels = digits                              # (20, 1, 28, 28) uint8
    x = {"NHW": pixels[:, 0], "NCHW": pixels, "NHWC": pixels.transpose(0, 2, 3, 1),
         "float NCHW": pixels.astype(np.float32) / 255}[layout]
    np.savez(tmp_path / "mine.npz", x=x, y=labels)
    data = load_npz(tmp_path / "mine.npz", **MNIST)
    assert data.x.shape == (20, 1, 28, 28) and data.x.dtype == torch.float32
    assert torch.allclose(data.x, torch.from_numpy(pixels.astype(np.float32) / 255))
    assert data.y.tolist() == labels.tolist() and data.n == 20
    assert data.sha256 == hashlib.sha256((tmp_path / "mine.npz").read_bytes()).hexdigest()


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x": np.zeros((3, 28, 28), np.uint8)}, "needs arrays 'x' (images) and 'y' (labels)"),
    ({"x": np.zeros((0, 28, 28), np.uint8), "y": np.zeros(0, np.int64)}, "x holds no images"),
    ({"x": np.zeros((3, 28, 28), np.uint8), "y": np.zeros(2, np.int64)}, "one label per image"),
    ({"x": np.zeros((3, 28, 28), np.uint8), "y": np.zeros(3, np.float32)}, "integer class labels"),
    ({"x": np.zeros((3, 28, 28), np.uint8), "y": np.array([0, 3, 10])}, "labels must be in 0..9"),
    ({"x": np.zeros((3, 32, 32, 3), np.uint8), "y": np.zeros(3, np.int64)},
     "must be (n, 1, 28, 28) or (n, 28, 28, 1)"),
    ({"x": np.full((3, 28, 28), 255.0, np.float32), "y": np.zeros(3, np.int64)}, "float images must lie in [0, 1]"),
    ({"x": np.zeros((3, 28, 28), np.int32), "y": np.zeros(3, np.int64)}, "uint8 pixels or floats"),
])
def test_mistakes_are_one_line_naming_the_fix(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(RobauditError, match=re.escape(message)) as err:
        load_npz(tmp_path / "bad.npz", **MNIST)
    assert "\n" not in str(err.value) and str(err.value).startswith("bad.npz: ")


def test_a_pickled_array_is_never_loaded(tmp_path):
    np.savez(tmp_path / "pickled.npz", x=np.array([object()], dtype=object), y=np.zeros(1, np.int64))
    with pytest.raises(RobauditError, match="holds an object array, which would need unpickling"):
        load_npz(tmp_path / "pickled.npz", **MNIST)


def test_a_file_that_is_not_an_npz_says_so(tmp_path):
    (tmp_path / "notes.npz").write_text("not a zip")
    with pytest.raises(RobauditError, match=r"^notes.npz: not an .npz file \(numpy.savez writes one"):
        load_npz(tmp_path / "notes.npz", **MNIST)


def test_too_many_images_are_refused(tmp_path):
    np.savez(tmp_path / "big.npz", x=np.zeros((5, 28, 28), np.uint8), y=np.zeros(5, np.int64))
    with pytest.raises(RobauditError, match="5 images, over the cap of 4"):
        load_npz(tmp_path / "big.npz", **MNIST, max_points=4)


def test_evaluate_on_your_own_file_names_it_in_the_results(tmp_path, digits, capsys):
    from helpers_eval import standard_model

    from robaudit.models import CheckpointMetadata, save_checkpoint

    meta = CheckpointMetadata(arch="smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0],
                              dataset="mnist10k", input_size=28, method="standard")
    checkpoint = save_checkpoint(tmp_path / "model.safetensors", standard_model(n_train=500), meta)
    pixels, labels = digits
    np.savez(tmp_path / "my-digits.npz", x=pixels.transpose(0, 2, 3, 1), y=labels)
    out = tmp_path / "results.json"
    assert main(["evaluate", str(checkpoint), "--data", str(tmp_path / "my-digits.npz"), "--attacks", "fgsm",
                 "--eps", "0.1", "--n-examples", "16", "--no-progress", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["dataset"] == "my-digits.npz" and results["n"] == 16
    assert results["test_points"] == "the first 16 of the 20 points in my-digits.npz"
    prov = results["provenance"]["dataset"]
    assert prov["name"] == "my-digits.npz"
    assert prov["file_sha256"] == hashlib.sha256((tmp_path / "my-digits.npz").read_bytes()).hexdigest()
    # A broken file is one line and exit code 2.
    np.savez(tmp_path / "broken.npz", x=pixels, y=labels + 10)
    assert main(["evaluate", str(checkpoint), "--data", str(tmp_path / "broken.npz"), "--no-progress",
                 "--out", str(out)]) == 2
    assert "broken.npz: labels must be in 0..9" in capsys.readouterr().err
