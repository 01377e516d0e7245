"""The adversarial-example gallery: per broken point, the adversarial example of the first attack in the ladder.

Capture. For the first ``spec.gallery_examples`` points (N) the clean pass stores each point's image
and label, and every attack run at an eps inside the primary eps's ball stores, for each point it
broke, the adversarial image exactly as the model was fooled by it (float32, compressed: quantising
to 8 bits could move an example back across the boundary), the step that broke it and the class the
model then predicts. Those batches' store keys carry ``/gallery=<points covered>``, so a batch stored
without images (by an older version, or with a smaller N) is recomputed rather than silently missing
images, while batches past N keep their keys and are shared with runs of any N.

Merge. ``build`` picks per point the candidate of the attack that comes first in the ladder
(``AttackInfo.order``, weakest first), then the smaller eps, then the long run before restarts and
the eps curve, then the earlier step. The gallery is its own artefact (``save_npz``); the results JSON
only gets a small index (``index_of``).

"Missed by PGD-20" (``missed_by_pgd20``): PGD-20 at the primary eps left the point robust and the
worst case did not, read off the results' per-sample bitsets; over the first m points the worst case
includes the attacks that ran on those points only (AutoAttack in the audit).
"""
from __future__ import annotations

import base64
import os
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from robaudit.attacks.common import mean_logits
from robaudit.errors import RobauditError
from robaudit.evaluation.results import bit_key, decode_bits, parse_bit_key, same_eps, worst_case_key
from robaudit.evaluation.store import Record

UNKNOWN_STEP = -1     # AutoAttack does not say at which iteration it succeeded
PGD20 = 20
# The arrays of the .npz download, in this order (docs/results-schema.md, "Adversarial gallery").
NPZ_FIELDS = ("index", "clean", "adversarial", "labels", "predictions", "attack", "eps", "step", "detail",
              "missed_pgd20")

# Class names for the datasets whose labels have names; others show the class number.
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_DIGITS = tuple(str(d) for d in range(10))
CLASS_NAMES: dict[str, tuple[str, ...]] = {"mnist10k": _DIGITS, "mnist": _DIGITS, "svhn": _DIGITS,
                                           "cifar10": _CIFAR10}


def class_names(dataset: str, num_classes: int) -> list[str]:
    names = CLASS_NAMES.get(dataset)
    if names is not None and len(names) == num_classes:
        return list(names)
    return [f"class {k}" for k in range(num_classes)]


# Storing images in records --------------------------------------------------------------------------
def encode_images(images: torch.Tensor | npt.NDArray[Any]) -> str:
    """float32 images as base64 of zlib over the byte-shuffled array (exact; the shuffle helps zlib)."""
    array = np.ascontiguousarray(images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images,
                                 dtype=np.float32)
    shuffled = array.view(np.uint8).reshape(-1, 4).T.tobytes()
    return base64.b64encode(zlib.compress(shuffled, 6)).decode("ascii")


def decode_images(text: str, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    raw = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.uint8)
    count = int(np.prod(shape))
    return raw.reshape(4, count).T.copy().view(np.float32).reshape(shape)


def clean_record(index: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> Record:
    """What the clean pass stores for the gallery's points: their images and labels."""
    return {"index": index.tolist(), "labels": y.tolist(), "shape": list(x.shape[1:]), "images": encode_images(x)}


def adversarial_record(model: torch.nn.Module, index: torch.Tensor, x_adv: torch.Tensor, broken: torch.Tensor,
                       step: torch.Tensor | None, limit: int, restart: torch.Tensor | None = None,
                       passes: int = 1) -> Record | None:
    """The broken points among ``index`` below ``limit``: their adversarial images, step and predicted class.

    The predicted class is the model's on the stored image (one forward over these points only).
    """
    keep = (broken & (index < limit)).nonzero().squeeze(1)
    if keep.numel() == 0:
        return None
    images = x_adv[keep].detach()
    with torch.no_grad():   # not inference_mode: see robaudit.attacks.common.predict
        # A randomized model's class is the one its logits averaged over ``passes`` passes give (EOT attacks).
        predicted = (model(images) if passes == 1 else mean_logits(model, images, passes)).argmax(1)
    record: Record = {"index": index[keep].tolist(), "predicted": predicted.tolist(),
                      "step": step[keep].tolist() if step is not None else [UNKNOWN_STEP] * len(keep),
                      "images": encode_images(images)}
    if restart is not None:
        record["restart"] = restart[keep].tolist()
    return record


@dataclass(frozen=True)
class Source:
    """Where a batch's adversarial examples come from, and its place in the ladder."""

    attack: str     # the name the gallery shows and filters by
    eps: float
    order: int      # AttackInfo.order: weakest first
    sub: int = 0    # within one attack: 0 its own run, 1 restarts, 2 the nested eps curve
    detail: str = ""


# The gallery -------------------------------------------------------------------------------------------
@dataclass
class Gallery:
    """One row per broken point among the first ``limit``, in point order."""

    dataset: str
    limit: int
    eps: float                                   # the primary eps
    num_classes: int
    index: npt.NDArray[np.int64]
    clean: npt.NDArray[np.float32]               # (k, C, H, W) in [0, 1]
    adversarial: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    predictions: npt.NDArray[np.int64]
    attack: list[str]
    attack_eps: npt.NDArray[np.float64]
    step: npt.NDArray[np.int64]                  # UNKNOWN_STEP where the attack does not say
    detail: list[str]
    missed_pgd20: npt.NDArray[np.bool_]          # all False when the results have no PGD-20 row

    def __len__(self) -> int:
        return len(self.index)


def build(dataset: str, limit: int, eps: float, num_classes: int, clean: list[Record],
          captures: list[tuple[Source, Record]]) -> Gallery | None:
    """The gallery from the clean pass's gallery records and the attacks' captures; None if nothing was stored."""
    if limit <= 0 or not clean:
        return None
    shape = tuple(clean[0]["shape"])
    images: dict[int, npt.NDArray[np.float32]] = {}
    labels: dict[int, int] = {}
    for record in clean:
        decoded = decode_images(record["images"], (len(record["index"]), *shape))
        for i, (point, label) in enumerate(zip(record["index"], record["labels"], strict=True)):
            images[point], labels[point] = decoded[i], label
    best: dict[int, tuple[tuple[Any, ...], Source, npt.NDArray[np.float32], int, int, int | None]] = {}
    for source, record in captures:
        decoded = decode_images(record["images"], (len(record["index"]), *shape))
        restarts = record.get("restart") or [None] * len(record["index"])
        for i, point in enumerate(record["index"]):
            step = int(record["step"][i])
            rank = (source.order, source.eps, source.sub, restarts[i] or 0,
                    step if step != UNKNOWN_STEP else float("inf"))
            if point in images and (point not in best or rank < best[point][0]):
                best[point] = (rank, source, decoded[i], int(record["predicted"][i]), step, restarts[i])
    points = sorted(best)
    k = len(points)
    picked = [best[p] for p in points]

    def detail(source: Source, restart: int | None) -> str:
        return f"restart {restart}" if restart is not None else source.detail

    return Gallery(
        dataset=dataset, limit=limit, eps=eps, num_classes=num_classes,
        index=np.asarray(points, dtype=np.int64),
        clean=np.stack([images[p] for p in points]) if k else np.zeros((0, *shape), np.float32),
        adversarial=np.stack([b[2] for b in picked]) if k else np.zeros((0, *shape), np.float32),
        labels=np.asarray([labels[p] for p in points], dtype=np.int64),
        predictions=np.asarray([b[3] for b in picked], dtype=np.int64),
        attack=[b[1].attack for b in picked],
        attack_eps=np.asarray([b[1].eps for b in picked], dtype=np.float64),
        step=np.asarray([b[4] for b in picked], dtype=np.int64),
        detail=[detail(b[1], b[5]) for b in picked],
        missed_pgd20=np.zeros(k, dtype=bool))


def worst_bits(results: dict[str, Any], eps: float) -> npt.NDArray[np.bool_] | None:
    """Per point, robust under every attack at eps (over the first m points also those run on them only)."""
    per_sample = results["per_sample"]
    n = per_sample["n"]
    text = per_sample["bits"].get(worst_case_key(eps))
    if text is None:
        return None
    robust = decode_bits(text, n)
    for key, sub in per_sample.get("subset_bits", {}).items():
        parsed = parse_bit_key(key)
        if parsed is not None and parsed.scope is not None and parsed.attack == "worst-case" \
                and same_eps(parsed.eps, eps):
            robust[:sub["n"]] &= decode_bits(sub["bits"], sub["n"])
    return robust


def missed_by_pgd20(results: dict[str, Any]) -> npt.NDArray[np.bool_] | None:
    """Points PGD-20 left robust at the primary eps that the worst case broke; None without a PGD-20 row."""
    eps = results["config"]["eps"][0]
    text = results["per_sample"]["bits"].get(bit_key("pgd", eps, PGD20, 1))
    worst = worst_bits(results, eps)
    if text is None or worst is None:
        return None
    missed: npt.NDArray[np.bool_] = decode_bits(text, results["per_sample"]["n"]) & ~worst
    return missed


def mark_missed(gallery: Gallery, results: dict[str, Any]) -> None:
    missed = missed_by_pgd20(results)
    if missed is not None:
        gallery.missed_pgd20 = missed[gallery.index]


def index_of(gallery: Gallery | None, limit: int) -> dict[str, Any]:
    """The results JSON's small index of the gallery (no images)."""
    if gallery is None:
        return {"limit": limit, "count": 0, "points": {name: [] for name in
                                                       ("index", "attack", "eps", "step", "true", "predicted")}}
    return {"limit": gallery.limit, "count": len(gallery), "eps": gallery.eps,
            "points": {"index": gallery.index.tolist(), "attack": list(gallery.attack),
                       "eps": [float(f"{e:.6g}") for e in gallery.attack_eps], "step": gallery.step.tolist(),
                       "true": gallery.labels.tolist(), "predicted": gallery.predictions.tolist()},
            "missed_by_pgd20": gallery.index[gallery.missed_pgd20].tolist()}


# Files -------------------------------------------------------------------------------------------------
def save_npz(gallery: Gallery, path: str | Path) -> None:
    """The download: clean, adversarial, labels, predictions, attack, eps, step, index (np.load, no pickle).

    A compressed .npz like ``np.savez_compressed`` writes, at zlib level 1: its level 6 took minutes for
    10,000 CIFAR points and saved little on float images."""
    arrays = {"index": gallery.index, "clean": gallery.clean, "adversarial": gallery.adversarial,
              "labels": gallery.labels, "predictions": gallery.predictions,
              "attack": np.asarray(gallery.attack, dtype=np.str_).reshape(-1), "eps": gallery.attack_eps,
              "step": gallery.step, "detail": np.asarray(gallery.detail, dtype=np.str_).reshape(-1),
              "missed_pgd20": gallery.missed_pgd20, "dataset": np.asarray(gallery.dataset),
              "primary_eps": np.asarray(gallery.eps), "limit": np.asarray(gallery.limit),
              "num_classes": np.asarray(gallery.num_classes)}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)


def save_download(found: Gallery | None, path: Path, n: int, limit: int) -> None:
    """``--save-adversarial`` / ``audit(save_adversarial=)``: the .npz written whole or not at all (with no
    rows when no point was broken)."""
    if found is None:
        raise RobauditError(f"no gallery was built for the first {min(limit, n)} points: nothing to save")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    try:
        save_npz(found, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_npz(path: str | Path) -> Gallery:
    with np.load(path, allow_pickle=False) as data:
        return Gallery(dataset=str(data["dataset"]), limit=int(data["limit"]), eps=float(data["primary_eps"]),
                       num_classes=int(data["num_classes"]), index=data["index"], clean=data["clean"],
                       adversarial=data["adversarial"], labels=data["labels"], predictions=data["predictions"],
                       attack=[str(a) for a in data["attack"]], attack_eps=data["eps"], step=data["step"],
                       detail=[str(d) for d in data["detail"]], missed_pgd20=data["missed_pgd20"])


# Pictures ----------------------------------------------------------------------------------------------
def panels(gallery: Gallery) -> npt.NDArray[np.uint8]:
    """(k, 3, H, W, C) uint8 for display: clean, adversarial, and the perturbation scaled per image so that
    its largest |value| reaches black or white (grey is no change). Display only: the .npz keeps float32."""
    clean, adv = gallery.clean, gallery.adversarial
    delta = adv - clean
    scale = np.abs(delta).reshape(len(delta), -1).max(1) if len(delta) else np.zeros(0, np.float32)
    scale = np.where(scale > 0, scale, 1.0).reshape(-1, *([1] * (delta.ndim - 1)))
    magnified = 0.5 + 0.5 * delta / scale
    stacked = np.stack([clean, adv, magnified], axis=1)            # (k, 3, C, H, W)
    pixels: npt.NDArray[np.uint8] = np.round(np.clip(stacked, 0, 1) * 255).astype(np.uint8)
    return pixels.transpose(0, 1, 3, 4, 2)


def png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """A PNG of (H, W, 1 or 3) uint8 pixels at their own size (pages enlarge them with pixelated scaling)."""
    height, width, channels = pixels.shape
    colour = {1: 0, 3: 2}[channels]
    rows = b"".join(b"\x00" + pixels[r].tobytes() for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 1)) + \
        chunk(b"IEND", b"")


def data_uri(pixels: npt.NDArray[np.uint8]) -> str:
    return "data:image/png;base64," + base64.b64encode(png(pixels)).decode("ascii")
