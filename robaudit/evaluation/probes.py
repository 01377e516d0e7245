"""Cheap measurements of the model itself that the masking checks need (C10, C11, C12).

* gradients at the clean point and at a random start, for cross-entropy and for the DLR margin
  (AutoAttack checks the DLR gradient, which does not vanish when confident logits saturate CE);
* the same batch forwarded several times (randomised defenses);
* whether the outputs are probabilities, and whether ``forward`` itself computes gradients
  (a test-time optimisation, "dynamic" defense).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from robaudit.attacks.common import RandomSource, eval_mode, input_gradient, random_start
from robaudit.attacks.losses import cross_entropy, dlr, margin
from robaudit.evaluation.accel import unwrap


def _point_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_name: str) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        if loss_name == "ce":
            loss = cross_entropy(logits, y)
        elif logits.shape[1] >= 3:
            loss = dlr(logits, y)
        else:
            loss = margin(logits, y, 0.0)
    return input_gradient(loss.sum(), x).flatten(1)


def gradient_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                   generator: RandomSource, norm: str = "linf") -> dict[str, int]:
    """Counts over the given points of all-zero and non-finite input gradients (AA, ART, Pintor), at the
    clean points and at a random start in the ``norm`` eps-ball."""
    stats: dict[str, int] = {"n": len(x)}
    if len(x) == 0:
        return {**stats, "start_n": 0, **{f"{at}_{loss}_{k}": 0 for at in ("clean", "start")
                                          for loss in ("ce", "dlr") for k in ("zero", "nonfinite")}}
    start = random_start(x, eps, norm, generator)
    with eval_mode(model):
        # A random start that is already misclassified needs no gradient, and there DLR is flat by
        # construction whenever the true class ranks third (-(z_3 - z_1) / (z_1 - z_3) = 1): count
        # only the starts the model still gets right.
        with torch.no_grad():
            still_correct = model(start).argmax(1) == y
        stats["start_n"] = int(still_correct.sum())
        for where, points, labels in (("clean", x, y), ("start", start[still_correct], y[still_correct])):
            for loss_name in ("ce", "dlr"):
                if len(points) == 0:
                    stats[f"{where}_{loss_name}_nonfinite"] = stats[f"{where}_{loss_name}_zero"] = 0
                    continue
                grad = _point_gradients(model, points, labels, loss_name)
                finite = torch.isfinite(grad).all(1)
                stats[f"{where}_{loss_name}_nonfinite"] = int((~finite).sum())
                stats[f"{where}_{loss_name}_zero"] = int(((grad.abs().sum(1) == 0) & finite).sum())
    return stats


@torch.no_grad()
def repeated_forward(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int = 5) -> dict[str, Any]:
    """AutoAttack's randomness check: correct counts and L2-normalised logits over repeated forwards."""
    with eval_mode(model):
        outputs = [model(x) for _ in range(repeats)]
    correct = [int((o.argmax(1) == y).sum()) for o in outputs]
    normed = [o / (o.flatten(1).norm(dim=1, keepdim=True) + 1e-10) for o in outputs]
    max_diff = max((float((normed[a] - normed[b]).flatten(1).norm(dim=1).max())
                    for a in range(repeats) for b in range(a + 1, repeats)), default=0.0)
    flips = int(sum((o.argmax(1) != outputs[0].argmax(1)).sum() for o in outputs[1:]))
    return {"n": len(x), "repeats": repeats, "correct_counts": correct, "max_logit_difference": max_diff,
            "prediction_changes": flips}


@torch.no_grad()
def output_range(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """AutoAttack's softmax check: all outputs in [0, 1] and every row summing to 1."""
    with eval_mode(model):
        out = model(x)
    return {"n": len(x), "min": float(out.min()), "max": float(out.max()),
            "max_row_sum_error": float((out.sum(1) - 1).abs().max())}


# The gradient entry points a forward pass could call, as (owner, attribute, the name counted).
_GRADIENT_CALLS = ((torch.autograd, "grad", "torch.autograd.grad"),
                   (torch.autograd, "backward", "torch.autograd.backward"),
                   (torch.Tensor, "backward", "Tensor.backward"))


@contextmanager
def _count_gradient_calls(counter: dict[str, int]) -> Iterator[dict[str, int]]:
    originals = [getattr(owner, attribute) for owner, attribute, _ in _GRADIENT_CALLS]

    def counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counter[name] = counter.get(name, 0) + 1
            return fn(*args, **kwargs)
        return wrapper

    for (owner, attribute, name), original in zip(_GRADIENT_CALLS, originals):
        setattr(owner, attribute, counting(name, original))
    try:
        yield counter
    finally:
        for (owner, attribute, _), original in zip(_GRADIENT_CALLS, originals):
            setattr(owner, attribute, original)


def dynamic_forward(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Gradient computations made inside one plain forward pass (AutoAttack's check_dynamic).

    Of the user's model, unwrapped from the speed levers: torch.compile calls torch.autograd.grad
    itself whenever it traces a new graph, which is not the model optimising anything.
    """
    model = unwrap(model)
    counter: dict[str, int] = {}
    with eval_mode(model), _count_gradient_calls(counter):
        model(x)
    return {"n": len(x), "gradient_calls": counter}
