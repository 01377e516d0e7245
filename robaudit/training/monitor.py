"""Per-epoch test metrics: clean accuracy and PGD-20 accuracy on a fixed subset.

This is a training monitor, not the audit (robaudit.evaluation does that):
PGD-20 with cross-entropy, alpha = eps / 4, one uniform random start, eval
mode, on the first ``eval_examples`` test points. The random start comes from
a generator seeded the same way every epoch, so epochs are compared on the
same starting points.
"""
from __future__ import annotations

import torch
from torch import nn

from robaudit.training.perturb import model_mode, pgd_linf

EVAL_BATCH_SIZE = 250
PGD_STEPS = 20


def correct_mask(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str) -> torch.Tensor:
    """Bool per example: is the clean prediction right (eval mode)."""
    hits = []
    with model_mode(model, train=False), torch.no_grad():
        for i in range(0, len(x), EVAL_BATCH_SIZE):
            xb, yb = x[i:i + EVAL_BATCH_SIZE].to(device), y[i:i + EVAL_BATCH_SIZE].to(device)
            hits.append((model(xb).argmax(1) == yb).cpu())
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)


def pgd20_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, device: str,
                   seed: int = 0) -> float | None:
    generator = torch.Generator(device=device).manual_seed(seed)
    correct = 0
    with model_mode(model, train=False):
        for i in range(0, len(x), EVAL_BATCH_SIZE):
            xb, yb = x[i:i + EVAL_BATCH_SIZE].to(device), y[i:i + EVAL_BATCH_SIZE].to(device)
            x_adv = pgd_linf(model, xb, yb, eps=eps, alpha=eps / 4, steps=PGD_STEPS,
                             random_start=True, generator=generator)
            with torch.no_grad():
                correct += (model(x_adv).argmax(1) == yb).sum().item()
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
