"""Transfer attack: PGD crafted on a surrogate model, scored once on the target.

The surrogate's trajectory runs the full number of steps for every point (no freezing when the
surrogate is fooled: pushing past its boundary is what makes examples transfer), and the target
is queried once per point, on the final iterate. The target's gradients are never used.
"""
from __future__ import annotations

import torch
from torch import nn

from robaudit.attacks.ascent import l2_ascent, signed_ascent
from robaudit.attacks.common import RandomSource, check_norm, default_alpha, eval_mode, predict
from robaudit.attacks.common import random_start as draw_start
from robaudit.attacks.losses import attack_loss


def transfer(target: nn.Module, surrogate: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
             steps: int = 20, alpha: float | None = None, loss: str = "ce", kappa: float = 50.0,
             random_start: bool = True, generator: RandomSource = None, norm: str = "linf") -> torch.Tensor:
    """(n,) bool: the target misclassifies the example crafted on the surrogate (PGD under ``norm``)."""
    return transfer_examples(target, surrogate, x, y, eps=eps, steps=steps, alpha=alpha, loss=loss, kappa=kappa,
                             random_start=random_start, generator=generator, norm=norm)[1]


def transfer_examples(target: nn.Module, surrogate: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                      steps: int = 20, alpha: float | None = None, loss: str = "ce", kappa: float = 50.0,
                      random_start: bool = True, generator: RandomSource = None,
                      norm: str = "linf") -> tuple[torch.Tensor, torch.Tensor]:
    """(the examples crafted on the surrogate under ``norm``, (n,) bool: the target misclassifies them)."""
    crafted = last_iterate(surrogate, x, y, eps=eps, steps=steps, alpha=alpha, loss=loss, kappa=kappa,
                           random_start=random_start, generator=generator, norm=norm)
    with eval_mode(target):
        return crafted, predict(target, crafted) != y


def last_iterate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
                 alpha: float | None = None, loss: str = "ce", kappa: float = 50.0, random_start: bool = True,
                 generator: RandomSource = None, norm: str = "linf") -> torch.Tensor:
    """PGD's final iterate for every point, whether or not an earlier iterate already fooled ``model``."""
    check_norm(norm)
    alpha = default_alpha(eps, steps) if alpha is None else float(alpha)
    x, y = x.detach(), y.detach()
    start = draw_start(x, eps, norm, generator) if random_start else x.clone()
    ascent = l2_ascent if norm == "l2" else signed_ascent
    with eval_mode(model):
        return ascent(model, x, start, lambda logits: attack_loss(loss, logits, y, kappa).sum(),
                      eps=eps, alpha=alpha, steps=steps)
