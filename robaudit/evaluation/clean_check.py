"""Clean accuracy right after loading: the one number that catches a wrong preprocessing, class order or dataset.

A model given the wrong normalisation (or labels in another order, or another dataset's images) still
runs; it just classifies near chance, and every attack on it then "succeeds". Below twice chance the
model is flagged ``suspect``, and no evaluation of it is presented as an audit of the model
(docs/preprocessing.md). ``judge`` is the rule; ``clean_check`` measures it on the first ``n`` test
points; ``python -m robaudit.evaluation.clean_check PATH --metadata JSON`` runs it on a checkpoint in
a subprocess (the API, after an upload).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SUSPECT_MESSAGE = "wrong preprocessing, class order or dataset?"
# The diagnostics verdict of such a run: the attacks ran on a model that does not work on these inputs,
# so nothing they found says anything about the model's robustness.
VERDICT_INVALID = "invalid: clean accuracy near chance"
DEFAULT_POINTS = 500


def judge(accuracy: float, n: int, num_classes: int) -> dict[str, Any]:
    """The clean-check verdict for an accuracy measured on ``n`` points of a ``num_classes``-way task."""
    chance = 1.0 / max(num_classes, 1)
    suspect = accuracy < 2 * chance
    if suspect:
        message = (f"clean accuracy {100 * accuracy:.1f} % on {n} points is below twice chance "
                   f"({100 * 2 * chance:.1f} %): {SUSPECT_MESSAGE} This is not an audit of the model.")
    else:
        message = f"clean accuracy {100 * accuracy:.1f} % on {n} points (chance {100 * chance:.1f} %)"
    return {"ran": True, "accuracy": accuracy, "n": n, "chance": chance, "suspect": suspect, "message": message}


def clean_check(model: Any, dataset: str, *, data_dir: str | Path | None = None, n: int = DEFAULT_POINTS,
                device: str = "cpu") -> dict[str, Any]:
    """Clean accuracy of ``model`` on the first ``n`` test points of ``dataset``, judged.

    ``{"ran": false, "reason"}`` when the dataset's files are not on this machine.
    """
    import torch

    from robaudit.data import load_arrays
    from robaudit.errors import DatasetUnavailable

    try:
        x, y = load_arrays(dataset, "test", data_dir)
    except DatasetUnavailable as exc:
        return {"ran": False, "reason": str(exc)}
    x, y = x[:n], y[:n]
    correct, num_classes = 0, 0
    model = model.to(device).eval()
    with torch.no_grad():
        for start in range(0, len(x), 100):
            logits = model(x[start:start + 100].to(device))
            num_classes = int(logits.shape[1])
            correct += int((logits.argmax(1).cpu() == y[start:start + 100]).sum())
    return judge(correct / max(len(x), 1), len(x), num_classes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robaudit.evaluation.clean_check",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--metadata", required=True, help="JSON: the checkpoint metadata (validate's answer)")
    parser.add_argument("--data-dir")
    parser.add_argument("--n", type=int, default=DEFAULT_POINTS)
    parser.add_argument("--memory-mb", type=float, help="cap this process's memory before reading the file")
    args = parser.parse_args(argv)
    import torch

    from robaudit.models.checkpoint import CheckpointError, CheckpointMetadata, load_checkpoint
    from robaudit.models.sandbox import limit_memory, out_of_memory, over_cap_message

    torch.set_num_threads(1)
    limit_memory(args.memory_mb)
    try:
        metadata = CheckpointMetadata.from_dict(json.loads(args.metadata))
        if not metadata.dataset:
            raise CheckpointError("the metadata names no dataset to check on")
        model, metadata = load_checkpoint(args.path, metadata=metadata)
        assert metadata.dataset is not None
        result = clean_check(model, metadata.dataset, data_dir=args.data_dir, n=args.n)
    except (CheckpointError, json.JSONDecodeError) as exc:
        result = {"ran": False, "reason": f"the model could not be loaded: {exc}"}
    except Exception as exc:
        if not out_of_memory(exc):
            raise
        result = {"ran": False, "reason": over_cap_message("the clean check", args.memory_mb)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
