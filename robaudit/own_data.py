"""The user's own test set: a ``.npz`` file with ``x`` (images) and ``y`` (integer labels), or a ``.zip`` of
class folders (robaudit.image_folder).

Accepted images in an npz: uint8 in HWC or CHW layout (or HW for one channel), or floats already in [0, 1].
With a model, the layout is read against what the model takes (channels and size from its checkpoint),
so an ambiguous array is never guessed at: a shape that fits neither layout is refused with the two
shapes that would fit. Without one (an upload to the service), channels are the axis of size 1 or 3,
and an array where both ends could be is refused. Nothing is unpickled (``allow_pickle=False``), and
the arrays' sizes are read from their ``.npy`` headers and checked against the caps before a byte of
them is decompressed.

The service stores a checked test set in one normal form (``save_test_set``): x as (n, C, H, W), uint8
or float32, y as int64 and the class names, written byte-for-byte the same for the same content, so
its sha256 names the images and labels, not the file they came in. ``python -m robaudit.own_data``
does the reading in a subprocess for the service (untrusted bytes never reach the API process).
"""
from __future__ import annotations

import argparse
import json
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robaudit.digest import sha256_file
from robaudit.errors import RobauditError

if TYPE_CHECKING:
    import torch

MAX_POINTS = 1_000_000   # a test set larger than this is a mistake (or a memory bomb) for one evaluation
MAX_BYTES = 16 << 30     # decompressed arrays or images (the CLI's cap; the service sets its own)
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)   # the stored form's zip entries: same content, same bytes


@dataclass(frozen=True)
class OwnData:
    x: torch.Tensor        # (n, C, H, W) float32 in [0, 1]
    y: torch.Tensor        # (n,) int64
    name: str              # the file's name
    sha256: str            # of the file's bytes

    @property
    def n(self) -> int:
        return len(self.y)


@dataclass
class TestSet:
    """A checked test set in its normal form."""
    __test__ = False   # not a pytest test class, whatever its name
    x: np.ndarray                      # (n, C, H, W) uint8, or float32 in [0, 1]
    y: np.ndarray                      # (n,) int64, >= 0
    name: str
    class_names: list[str] | None = None
    transform: dict[str, int] = field(default_factory=dict)   # the declared resize / crop, if any

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else int(self.y.max()) + 1

    def float_images(self, limit: int | None = None) -> torch.Tensor:
        import torch  # here, not at the top: the service's upload check (main) runs without torch

        x = self.x[:limit]
        images = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(images))


def _layout(x: np.ndarray, channels: int, size: int, name: str) -> np.ndarray:
    """``x`` as (n, C, H, W), or a one-line error naming the shapes that would fit."""
    chw, hwc = (channels, size, size), (size, size, channels)
    if x.ndim == 3 and channels == 1 and x.shape[1:] == (size, size):
        return x[:, None]
    if x.ndim == 4 and x.shape[1:] == chw:
        return x
    if x.ndim == 4 and x.shape[1:] == hwc:
        return x.transpose(0, 3, 1, 2)
    raise RobauditError(f"{name}: x has shape {x.shape}; the model takes {channels}-channel {size}x{size} images, "
                        f"so x must be (n, {channels}, {size}, {size}) or (n, {size}, {size}, {channels})")


def _layout_alone(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as (n, C, H, W) without a model to read it against: the channel axis is the one of size 1 or 3."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        first, last = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
        if first and not last:
            return x
        if last and not first:
            return x.transpose(0, 3, 1, 2)
        if first and last:
            raise RobauditError(f"{name}: x has shape {x.shape}, where either end could be the channels; "
                                "upload it with the checkpoint it is for, which settles the layout")
    raise RobauditError(f"{name}: x has shape {x.shape}; expected (n, H, W), (n, C, H, W) or (n, H, W, C) "
                        "with 1 or 3 channels")


def _npy_header(zf: zipfile.ZipFile, member: str, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy member's header: what loading it would allocate, read before loading."""
    try:
        with zf.open(member) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise RobauditError(f"{name}: {member} is .npy version {version}; save it with numpy.savez")
    except RobauditError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
        raise RobauditError(f"{name}: not a readable .npz ({str(exc).splitlines()[0][:120] if str(exc) else exc!r})"
                            ) from None
    return tuple(shape), dtype


def _read_npz(path: Path, name: str, max_points: int, max_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as zf:
            members = set(zf.namelist())
            arrays = sorted(m[:-4] for m in members if m.endswith(".npy"))
            if "x.npy" not in members or "y.npy" not in members:
                raise RobauditError(f"{name}: needs arrays 'x' (images) and 'y' (labels); it has {arrays}")
            headers = {k: _npy_header(zf, f"{k}.npy", name) for k in ("x", "y")}
    except (zipfile.BadZipFile, OSError) as exc:
        raise RobauditError(f"{name}: not a readable .npz ({str(exc).splitlines()[0][:120]})") from None
    total = 0
    for shape, dtype in headers.values():
        if dtype.hasobject:
            raise RobauditError(f"{name}: holds an object array, which would need unpickling; save x and y "
                                "as numeric arrays")
        total += int(np.prod(shape, dtype=object)) * dtype.itemsize
    x_shape = headers["x"][0]
    n = x_shape[0] if x_shape else 0
    if n > max_points:
        raise RobauditError(f"{name}: {n} images, over the cap of {max_points}")
    if total > max_bytes:
        raise RobauditError(f"{name}: its arrays take {total} bytes decompressed, over the cap of {max_bytes}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz["x"], npz["y"]
    except ValueError as exc:
        raise RobauditError(f"{name}: not a readable .npz ({str(exc).splitlines()[0][:120]})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise RobauditError(f"{name}: not a readable .npz ({str(exc).splitlines()[0][:120]})") from None


def _is_npz(path: Path) -> bool:
    with zipfile.ZipFile(path) as zf:
        return any(m.endswith(".npy") for m in zf.namelist())


def read_test_set(path: str | Path, *, max_points: int = MAX_POINTS, max_bytes: int = MAX_BYTES,
                  resize: int | None = None, crop: int | None = None, channels: int | None = None,
                  size: int | None = None, name: str | None = None, max_pixels: int | None = None) -> TestSet:
    """Read and check an .npz or a zip of class folders, with or without the model's channels and image size."""
    from robaudit.image_folder import MAX_PIXELS, read_image_folder

    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise RobauditError(f"test set not found: {path}")
    if not zipfile.is_zipfile(path):   # else numpy would try the bytes as a pickle (and refuse)
        raise RobauditError(f"{name}: not an .npz file (numpy.savez writes one, with arrays x and y) "
                            "nor a .zip of class folders")
    try:
        npz = _is_npz(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise RobauditError(f"{name}: not a readable zip ({str(exc)[:100]})") from None
    if not npz:
        folder = read_image_folder(path, max_images=max_points, max_bytes=max_bytes, resize=resize, crop=crop,
                                   name=name, max_pixels=max_pixels or MAX_PIXELS)
        transform = {k: v for k, v in (("resize", resize), ("crop", crop)) if v is not None}
        return TestSet(folder.x, folder.y, name, folder.class_names, transform)
    if resize is not None or crop is not None:
        raise RobauditError(f"{name}: a resize and crop applies to a zip of images; save the .npz at the "
                            "model's image size")
    x, y = _read_npz(path, name, max_points, max_bytes)
    n = len(x) if x.ndim else 0
    if n == 0:
        raise RobauditError(f"{name}: x holds no images")
    if y.shape != (n,):
        raise RobauditError(f"{name}: y must be one label per image, shape ({n},); got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise RobauditError(f"{name}: y must hold integer class labels, not {y.dtype}")
    if int(y.min()) < 0:
        raise RobauditError(f"{name}: labels must be class indices 0, 1, ...; found {int(y.min())}")
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise RobauditError(f"{name}: x must be uint8 pixels or floats in [0, 1], not {x.dtype}")
    images = _layout(x, channels, size, name) if channels and size else _layout_alone(x, name)
    if x.dtype != np.uint8:
        images = images.astype(np.float32)
        if not np.isfinite(images).all() or float(images.min()) < 0.0 or float(images.max()) > 1.0:
            raise RobauditError(f"{name}: float images must lie in [0, 1]; found "
                                f"{float(np.nanmin(images)):.3g}..{float(np.nanmax(images)):.3g} "
                                "(save uint8 pixels, or divide by 255)")
    return TestSet(np.ascontiguousarray(images), y.astype(np.int64), name)


def check_fits(data: TestSet, *, channels: int, size: int, num_classes: int, name: str | None = None) -> None:
    """A one-line error when the test set's images or labels do not fit a model with these inputs and classes."""
    name = name or data.name
    c, h, w = data.shape
    if (c, h, w) != (channels, size, size):
        resizable = size >= 64 and (h, w) != (size, size)
        hint = "; declare a resize and centre crop (e.g. resize 256, crop 224)" if resizable else ""
        raise RobauditError(f"{name}: images are {c}-channel {w}x{h}; the model takes {channels}-channel "
                            f"{size}x{size} images{hint}")
    high = int(data.y.max())
    if high >= num_classes:
        raise RobauditError(f"{name}: labels must be in 0..{num_classes - 1} (the model's classes); "
                            f"found {int(data.y.min())}..{high}")
    if data.class_names and len(data.class_names) > num_classes:
        raise RobauditError(f"{name}: names {len(data.class_names)} classes; the model has {num_classes}")


def load_npz(path: str | Path, *, channels: int, size: int, num_classes: int,
             max_points: int = MAX_POINTS, resize: int | None = None, crop: int | None = None) -> OwnData:
    """Read and check a test set (.npz, or .zip of class folders) for a model with these input channels,
    image size and classes."""
    path = Path(path)
    data = read_test_set(path, max_points=max_points, channels=channels, size=size, resize=resize, crop=crop)
    check_fits(data, channels=channels, size=size, num_classes=num_classes)
    import torch

    return OwnData(data.float_images(), torch.from_numpy(data.y), data.name, sha256_file(path))


# --------------------------------------------------------------------------- the stored normal form

def save_test_set(data: TestSet, path: Path) -> str:
    """Write the normal form (x, y and classes as .npy members, fixed timestamps); returns its sha256."""
    arrays = {"x": np.ascontiguousarray(data.x), "y": data.y.astype(np.int64)}
    if data.class_names:
        arrays["classes"] = np.array(data.class_names, dtype=str)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, array, allow_pickle=False)
    return sha256_file(path)


def load_test_set(path: Path, name: str) -> TestSet:
    """A stored normal form back (trusted: the service wrote it after checking)."""
    with np.load(path, allow_pickle=False) as npz:
        classes = [str(c) for c in npz["classes"]] if "classes" in npz.files else None
        return TestSet(npz["x"], npz["y"], name, classes)


def describe(data: TestSet) -> dict[str, Any]:
    c, h, w = data.shape
    return {"n": data.n, "channels": c, "height": h, "width": w, "dtype": str(data.x.dtype),
            "num_classes": data.num_classes, "class_names": data.class_names, "transform": data.transform or None}


# --------------------------------------------------------------------------- the service's subprocess

def main(argv: list[str] | None = None) -> int:
    """Check an upload and write its normal form; prints one JSON line, {"ok": true, ...} or {"ok": false, "error"}."""
    from robaudit.models.sandbox import limit_memory, out_of_memory, over_cap_message

    parser = argparse.ArgumentParser(prog="python -m robaudit.own_data", description="check an uploaded test set")
    parser.add_argument("path", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="where to write the normal form (.npz)")
    parser.add_argument("--name", required=True, help="the file name the user gave")
    parser.add_argument("--max-points", type=int, required=True)
    parser.add_argument("--max-bytes", type=int, required=True)
    parser.add_argument("--resize", type=int)
    parser.add_argument("--crop", type=int)
    parser.add_argument("--model", help='JSON {"channels", "size", "num_classes"} to check the test set against')
    parser.add_argument("--memory-mb", type=float)
    args = parser.parse_args(argv)
    limit_memory(args.memory_mb)
    model = json.loads(args.model) if args.model else None
    try:
        data = read_test_set(args.path, max_points=args.max_points, max_bytes=args.max_bytes, resize=args.resize,
                             crop=args.crop, name=args.name,
                             channels=model["channels"] if model else None, size=model["size"] if model else None)
        if model:
            check_fits(data, **model)
        sha256 = save_test_set(data, args.out)
        verdict: dict[str, Any] = {"ok": True, "sha256": sha256, **describe(data)}
    except RobauditError as exc:
        verdict = {"ok": False, "error": str(exc)}
    except Exception as exc:
        if not out_of_memory(exc):
            raise
        verdict = {"ok": False, "error": over_cap_message(f"reading {args.name}", args.memory_mb)}
    print(json.dumps(verdict))
    return 0


if __name__ == "__main__":
    sys.exit(main())
