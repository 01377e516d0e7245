"""The user's own test set: a ``.npz`` file with ``x`` (images) and ``y`` (integer labels).

Accepted images: uint8 in HWC or CHW layout (or HW for one channel), or floats already in [0, 1].
The layout is read against what the model takes (channels and size from its checkpoint), so an
ambiguous array is never guessed at: a shape that fits neither layout is refused with the two shapes
that would fit. Nothing is unpickled (``allow_pickle=False``).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robaudit.digest import sha256_file
from robaudit.errors import RobauditError

MAX_POINTS = 1_000_000   # a test set larger than this is a mistake (or a memory bomb) for one evaluation


@dataclass(frozen=True)
class OwnData:
    x: torch.Tensor        # (n, C, H, W) float32 in [0, 1]
    y: torch.Tensor        # (n,) int64
    name: str              # the file's name
    sha256: str            # of the file's bytes

    @property
    def n(self) -> int:
        return len(self.y)


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


def load_npz(path: str | Path, *, channels: int, size: int, num_classes: int,
             max_points: int = MAX_POINTS) -> OwnData:
    """Read and check a test set for a model with these input channels, image size and classes."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise RobauditError(f"test set not found: {path}")
    if not zipfile.is_zipfile(path):   # else numpy would try the bytes as a pickle (and refuse)
        raise RobauditError(f"{name}: not an .npz file (numpy.savez writes one, with arrays x and y)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "x" not in npz.files or "y" not in npz.files:
                raise RobauditError(f"{name}: needs arrays 'x' (images) and 'y' (labels); it has {npz.files}")
            x, y = npz["x"], npz["y"]
    except RobauditError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise RobauditError(f"{name}: holds an object array, which would need unpickling; save x and y "
                                "as numeric arrays") from None
        raise RobauditError(f"{name}: not a readable .npz ({str(exc).splitlines()[0][:120]})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise RobauditError(f"{name}: not a readable .npz ({str(exc).splitlines()[0][:120]})") from None
    n = len(x) if x.ndim else 0
    if n == 0:
        raise RobauditError(f"{name}: x holds no images")
    if n > max_points:
        raise RobauditError(f"{name}: {n} images, over the cap of {max_points}")
    if y.shape != (n,):
        raise RobauditError(f"{name}: y must be one label per image, shape ({n},); got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise RobauditError(f"{name}: y must hold integer class labels, not {y.dtype}")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise RobauditError(f"{name}: labels must be in 0..{num_classes - 1} (the model's classes); "
                            f"found {int(y.min())}..{int(y.max())}")
    if x.dtype == np.uint8:
        images = _layout(x, channels, size, name).astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        images = _layout(x, channels, size, name).astype(np.float32)
        if not np.isfinite(images).all() or float(images.min()) < 0.0 or float(images.max()) > 1.0:
            raise RobauditError(f"{name}: float images must lie in [0, 1]; found "
                                f"{float(np.nanmin(images)):.3g}..{float(np.nanmax(images)):.3g} "
                                "(save uint8 pixels, or divide by 255)")
    else:
        raise RobauditError(f"{name}: x must be uint8 pixels or floats in [0, 1], not {x.dtype}")
    return OwnData(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(y.astype(np.int64)),
                   name, sha256_file(path))
