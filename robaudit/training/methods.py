"""One function per training method: one optimisation step on one batch.

Each step gets the model in train mode, runs its inner maximisation, updates
the weights and returns the batch loss and how many of the examples the update
saw (adversarial ones for the AT methods, clean ones for TRADES' CE term) were
classified correctly. Hyperparameters are explicit keyword arguments.

Model mode during the attack follows each method's reference code: PGD-AT and
Fast-AT attack in train mode (Madry-style PyTorch ports, Wong et al.'s
train_fgsm.py), TRADES and Feature Scattering in eval mode (their official code).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from robaudit.training.losses import smoothed_cross_entropy, trades_kl
from robaudit.training.perturb import feature_scatter_perturb, pgd_linf, trades_perturb


@dataclass
class StepResult:
    loss: float
    correct: int
    count: int


def _update(optimizer: torch.optim.Optimizer, loss: torch.Tensor, logits: torch.Tensor,
            y: torch.Tensor) -> StepResult:
    optimizer.zero_grad(set_to_none=True)
    torch.autograd.backward(loss)   # what loss.backward() calls; Tensor.backward is unannotated in torch
    optimizer.step()
    correct = (logits.detach().argmax(1) == y).sum().item()
    return StepResult(loss.item(), int(correct), len(y))


def standard_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                  label_smoothing: float) -> StepResult:
    logits = model(x)
    return _update(optimizer, smoothed_cross_entropy(logits, y, label_smoothing), logits, y)


def pgd_at_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                eps: float, alpha: float, steps: int, label_smoothing: float) -> StepResult:
    """Madry et al.: train on PGD-k examples (random start) only."""
    x_adv = pgd_linf(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=True)
    logits = model(x_adv)
    return _update(optimizer, smoothed_cross_entropy(logits, y, label_smoothing), logits, y)


def fast_at_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                 eps: float, alpha: float, steps: int, label_smoothing: float) -> StepResult:
    """Wong et al. ("Fast is better than free"): FGSM from a uniform random start, alpha = 1.25 eps.

    ``steps`` is 1 by default; more steps make it a short PGD with the same start.
    """
    return pgd_at_step(model, optimizer, x, y, eps=eps, alpha=alpha, steps=steps, label_smoothing=label_smoothing)


def trades_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                eps: float, alpha: float, steps: int, trades_beta: float, label_smoothing: float) -> StepResult:
    """Zhang et al. 2019: CE(clean) + beta * KL(clean || adv) / batch, adversary maximising the KL.

    The TRADES code runs a second clean forward for the KL target; one clean
    forward serves both terms here (identical without dropout).
    """
    x_adv = trades_perturb(model, x, eps=eps, alpha=alpha, steps=steps)
    logits = model(x)
    loss = smoothed_cross_entropy(logits, y, label_smoothing) + trades_beta * trades_kl(model(x_adv), logits) / len(x)
    return _update(optimizer, loss, logits, y)


def feature_scatter_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                         eps: float, alpha: float, steps: int, label_smoothing: float, sinkhorn: str) -> StepResult:
    """Zhang & Wang 2019: OT attack in eval mode, then label-smoothed soft CE on the perturbed batch only.

    The update's forward runs in train mode (the caller's mode), so BatchNorm
    uses and updates statistics of the perturbed batch, as in the official code.
    Not reproduced: the official logging forward on the clean batch every 10th
    iteration (train mode, no step), whose only effect is on BatchNorm's running
    statistics.
    """
    x_adv = feature_scatter_perturb(model, x, eps=eps, alpha=alpha, steps=steps, sinkhorn=sinkhorn)
    logits = model(x_adv)
    return _update(optimizer, smoothed_cross_entropy(logits, y, label_smoothing), logits, y)


class Method(NamedTuple):
    # Each step takes (model, optimizer, x, y) plus its own keyword-only hyperparameters,
    # so the signatures differ beyond the first four arguments.
    step: Callable[..., StepResult]
    options: tuple[str, ...]   # the TrainConfig fields passed to ``step`` as keyword arguments


METHODS: dict[str, Method] = {
    "standard": Method(standard_step, ("label_smoothing",)),
    "pgd-at": Method(pgd_at_step, ("eps", "alpha", "steps", "label_smoothing")),
    "fast-at": Method(fast_at_step, ("eps", "alpha", "steps", "label_smoothing")),
    "trades": Method(trades_step, ("eps", "alpha", "steps", "trades_beta", "label_smoothing")),
    "feature-scatter": Method(feature_scatter_step, ("eps", "alpha", "steps", "label_smoothing", "sinkhorn")),
}
