"""Per-epoch test metrics: clean accuracy and PGD-20 accuracy on a fixed subset.

This is a training monitor, not the audit (robaudit.evaluation does that):
PGD-20 with cross-entropy, alpha = eps / 4, one uniform random start, eval
mode, on the first ``eval_examples`` test points. The random start comes from
a generator seeded the same way every epoch, so epochs are compared on the
same starting points.

Where its PGD-20 differs from the audit's: both take the same steps (the same
signed-gradient ascent from robaudit.attacks), but the monitor scores only the
last iterate (``pgd_linf``, robaudit.attacks.ascent), while the audit counts any
iterate (robaudit.attacks.pgd: a point is robust only if none of iterates
0..20 fooled it). A point the attack fooled at step 7 and left again by step 20
is robust here and broken in the audit, so the monitor reads the same or
higher. The random starts differ too (one generator over the batches here,
one stream per batch in the audit), and the monitor ascends the batch's mean
cross-entropy, the audit its sum (the same signs up to rounding).
"""
from __future__ import annotations

import torch
from torch import nn

from robaudit.attacks.common import eval_mode
from robaudit.training.perturb import pgd_linf

EVAL_BATCH_SIZE = 250
PGD_STEPS = 20


def correct_mask(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str) -> torch.Tensor:
    """Bool per example: is the clean prediction right (eval mode)."""
    hits = []
    with eval_mode(model), torch.no_grad():
        for i in range(0, len(x), EVAL_BATCH_SIZE):
            xb, yb = x[i:i + EVAL_BATCH_SIZE].to(device), y[i:i + EVAL_BATCH_SIZE].to(device)
            hits.append((model(xb).argmax(1) == yb).cpu())
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)


def pgd20_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, device: str,
                   seed: int = 0) -> float | None:
    generator = torch.Generator(device=device).manual_seed(seed)
    correct = 0
    with eval_mode(model):
        for i in range(0, len(x), EVAL_BATCH_SIZE):
            xb, yb = x[i:i + EVAL_BATCH_SIZE].to(device), y[i:i + EVAL_BATCH_SIZE].to(device)
            x_adv = pgd_linf(  # the last iterate: see the module docstring
                model, xb, yb, eps=eps, alpha=eps / 4, steps=PGD_STEPS, random_start=True, generator=generator)
            with torch.no_grad():
                correct += int((model(x_adv).argmax(1) == yb).sum().item())
    return correct / len(x) if len(x) else None


def epoch_metrics(model: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor, *, eps: float,
                  eval_examples: int, device: str, seed: int) -> dict[str, float | None]:
    """clean_acc on the whole test split; eval_clean_acc and pgd20_acc on its first eval_examples points."""
    xs, ys = x_test[:eval_examples], y_test[:eval_examples]
    clean = correct_mask(model, x_test, y_test, device).float()
    return {
        "clean_acc": clean.mean().item(),
        "eval_clean_acc": clean[:len(ys)].mean().item() if len(ys) else None,
        "pgd20_acc": pgd20_accuracy(model, xs, ys, eps=eps, device=device, seed=seed),
        "eval_examples": len(ys),
    }
