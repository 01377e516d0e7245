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


# --------------------------------------------------------------------------- a zip of class folders

def _png(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _zip(path, members: dict[str, bytes], compression=None) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w", compression or zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def digit_zip(path, digits, *, extra=None, root=""):
    """The first 20 test digits as zeros/, ones/... folders (named, so sorted order is not the label order)."""
    pixels, labels = digits
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    members = {f"{root}{names[c]}/{i:03d}.png": _png(pixels[i, 0]) for i, c in enumerate(labels)}
    members[f"{root}classes.txt"] = "\n".join(names).encode()
    members.update(extra or {})
    _zip(path, members)
    return path


@pytest.mark.parametrize("root", ["", "my-digits/"])
def test_a_zip_of_class_folders_gives_the_same_points_as_the_npz(tmp_path, digits, root):
    pixels, labels = digits
    path = digit_zip(tmp_path / "digits.zip", digits, root=root,
                     extra={"__MACOSX/zero/._000.png": b"junk", f"{root}.DS_Store": b"junk"})
    data = load_npz(path, **MNIST)
    order = np.lexsort((np.arange(20), labels))      # class by class, file names sorted within a class
    assert data.y.tolist() == labels[order].tolist()
    assert torch.equal(data.x, torch.from_numpy(pixels[order].astype(np.float32) / 255))


def test_without_classes_txt_the_folders_sorted_are_the_labels(tmp_path):
    from robaudit.own_data import read_test_set

    _zip(tmp_path / "cd.zip", {"dog/1.png": _png(np.zeros((8, 8, 3), np.uint8)),
                               "cat/1.png": _png(np.full((8, 8), 255, np.uint8))})
    data = read_test_set(tmp_path / "cd.zip")
    assert data.class_names == ["cat", "dog"] and data.y.tolist() == [0, 1]
    assert data.x.shape == (2, 3, 8, 8) and data.x[0].min() == 255   # the grey cat repeated over RGB


def test_a_declared_resize_and_centre_crop_evens_out_sizes(tmp_path):
    from robaudit.own_data import read_test_set

    _zip(tmp_path / "mixed.zip", {"a/1.png": _png(np.zeros((40, 60, 3), np.uint8)),
                                  "b/2.png": _png(np.zeros((50, 32, 3), np.uint8))})
    with pytest.raises(RobauditError, match=r"mixed image sizes: 'a/1.png' is 60x40, 'b/2.png' is 32x50; declare"):
        read_test_set(tmp_path / "mixed.zip")
    data = read_test_set(tmp_path / "mixed.zip", resize=32, crop=28)
    assert data.x.shape == (2, 3, 28, 28) and data.transform == {"resize": 32, "crop": 28}


def _bomb_member() -> dict[str, bytes]:
    return {"a/1.png": _png(np.zeros((8, 8), np.uint8)), "a/2.png": b"\0" * (64 << 20)}   # compresses ~1000:1


def _lying_zip(path, digits) -> None:
    """A member whose headers declare 100 bytes while its deflated data holds 64 MB."""
    import zipfile

    _zip(path, {"a/1.png": _png(digits[0][0, 0]), "a/2.png": b"\0" * (64 << 20)})
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("a/2.png")
    big = (64 << 20).to_bytes(4, "little")
    for at in [i for i in range(len(raw)) if raw[i:i + 4] == big]:   # local header and central directory
        raw[at:at + 4] = (100).to_bytes(4, "little")
    assert info.file_size == 64 << 20
    path.write_bytes(bytes(raw))


HOSTILE = {
    "zip bomb": (lambda p, d: _zip(p, _bomb_member()), "over the cap of 10000000 (a zip bomb"),
    "lying sizes": (_lying_zip, "'a/2.png' is"),
    "dot-dot": (lambda p, d: _zip(p, {"a/1.png": _png(d[0][0, 0]), "a/../../etc/x.png": _png(d[0][0, 0])}),
                "has '..' in its path"),
    "absolute": (lambda p, d: _zip(p, {"/etc/a/1.png": _png(d[0][0, 0])}), "has an absolute path"),
    "drive letter": (lambda p, d: _zip(p, {"C:/a/1.png": _png(d[0][0, 0])}), "has an absolute path"),
    "non-image": (lambda p, d: _zip(p, {"a/1.png": _png(d[0][0, 0]), "a/run.sh": b"rm -rf /"}),
                  "'a/run.sh' is not an image"),
    "too deep": (lambda p, d: _zip(p, {"a/b/c/1.png": _png(d[0][0, 0]), "a/b/2.png": _png(d[0][0, 0])}),
                 "nests deeper than class/image"),
    "mixed sizes": (lambda p, d: _zip(p, {"a/1.png": _png(d[0][0, 0]), "b/1.png": _png(np.zeros((32, 32), np.uint8))}),
                    "mixed image sizes"),
    "corrupt png": (lambda p, d: _zip(p, {"a/1.png": _png(d[0][0, 0])[:-30] + b"\0" * 30}),
                    "'a/1.png' is not a readable PNG or JPEG"),
    "png body flipped": (lambda p, d: _zip(p, {"a/1.png": _png(d[0][0, 0])[:60] + b"\xff" * 20
                                                          + _png(d[0][0, 0])[80:]}),
                         "'a/1.png' is not a readable PNG or JPEG"),
    "gif named png": (lambda p, d: _zip(p, {"a/1.png": b"GIF89a" + b"\0" * 40}), "not a readable PNG or JPEG"),
    "huge image header": (lambda p, d: _zip(p, {"a/1.png": _png(np.zeros((1, 5000), np.uint8))}),
                          "over the cap of 4000 pixels"),
    "symlink": (lambda p, d: _symlink_zip(p), "is a symbolic link"),
    "no images": (lambda p, d: _zip(p, {"classes.txt": b"a\nb"}), "holds no images"),
    "not a zip": (lambda p, d: p.write_bytes(b"\x89PNG not a zip"), "not an .npz file"),
}


def _symlink_zip(path) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("a/1.png")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archives_are_refused_in_one_line(tmp_path, digits, case):
    from robaudit.own_data import read_test_set

    make, message = HOSTILE[case]
    make(tmp_path / "upload.zip", digits)
    with pytest.raises(RobauditError, match=re.escape(message)) as err:
        read_test_set(tmp_path / "upload.zip", max_bytes=10_000_000, max_points=100, max_pixels=4000)
    assert "\n" not in str(err.value) and str(err.value).startswith("upload.zip: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upload.zip"]   # nothing extracted


def test_too_many_images_in_a_zip_are_refused_before_decoding(tmp_path, digits):
    from robaudit.own_data import read_test_set

    digit_zip(tmp_path / "digits.zip", digits)
    with pytest.raises(RobauditError, match="20 images, over the cap of 19"):
        read_test_set(tmp_path / "digits.zip", max_points=19)


def test_an_npz_is_sized_from_its_headers_before_loading(tmp_path):
    from robaudit.own_data import read_test_set

    # savez_compressed: 400 MB of zeros in a file of ~400 KB; refused without decompressing it.
    np.savez_compressed(tmp_path / "bomb.npz", x=np.zeros((500, 3, 256, 1024), np.float32), y=np.zeros(500, np.int64))
    with pytest.raises(RobauditError, match=r"its arrays take 1572868000 bytes decompressed, over the cap of 10000000"):
        read_test_set(tmp_path / "bomb.npz", max_bytes=10_000_000)


def test_classes_txt_must_list_every_folder(tmp_path):
    from robaudit.own_data import read_test_set

    _zip(tmp_path / "c.zip", {"classes.txt": b"cat\n", "cat/1.png": _png(np.zeros((8, 8), np.uint8)),
                              "dog/1.png": _png(np.zeros((8, 8), np.uint8))})
    with pytest.raises(RobauditError, match="class folder\\(s\\) 'dog' are not listed in classes.txt"):
        read_test_set(tmp_path / "c.zip")


def test_the_stored_form_is_the_same_bytes_for_the_same_points(tmp_path, digits):
    from robaudit.own_data import load_test_set, read_test_set, save_test_set

    pixels, labels = digits
    np.savez(tmp_path / "a.npz", x=pixels, y=labels)
    np.savez_compressed(tmp_path / "b.npz", x=pixels.transpose(0, 2, 3, 1), y=labels)
    first = save_test_set(read_test_set(tmp_path / "a.npz"), tmp_path / "a.stored")
    second = save_test_set(read_test_set(tmp_path / "b.npz"), tmp_path / "b.stored")
    assert first == second
    back = load_test_set(tmp_path / "a.stored", "a")
    assert np.array_equal(back.x, pixels) and back.y.tolist() == labels.tolist()


def test_images_that_decode_past_the_cap_are_refused(tmp_path):
    """PNG compresses flat images ~1000:1, so the cap holds for the decoded pixels, not only the zip's bytes."""
    from robaudit.own_data import read_test_set

    _zip(tmp_path / "flat.zip", {"a/1.png": _png(np.zeros((100, 100), np.uint8)),
                                 "a/2.png": _png(np.zeros((100, 100), np.uint8))})
    with pytest.raises(RobauditError, match="2 images of 100x100 take more than the cap of 10000 bytes decoded"):
        read_test_set(tmp_path / "flat.zip", max_bytes=10_000)


def test_the_service_reader_starts_without_torch():
    """`python -m robaudit.own_data` checks every dataset upload: it reads numpy and images only, so an upload
    is not kept waiting for torch to import (seconds on a cold machine)."""
    import subprocess
    import sys

    probe = "import sys, robaudit.own_data, robaudit.models.sandbox; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
