"""Transfer attack: PGD crafted on a surrogate model, scored once on the target.

The surrogate's trajectory runs the full number of steps for every point (no freezing when the
surrogate is fooled: pushing past its boundary is what makes examples transfer), and the target
is queried once per point, on the final iterate. The target's gradients are never used.
"""
from __future__ import annotations

import torch
from torch import nn

from robaudit.attacks.common import (
    ball_bounds,
    default_alpha,
    eval_mode,
    input_gradient,
    predict,
    project_,
    uniform_in_ball,
)
from robaudit.attacks.losses import attack_loss


def transfer(target: nn.Module, surrogate: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
             steps: int = 20, alpha: float | None = None, loss: str = "ce", kappa: float = 50.0,
             random_start: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) bool: the target misclassifies the example crafted on the surrogate."""
    crafted = last_iterate(surrogate, x, y, eps=eps, steps=steps, alpha=alpha, loss=loss, kappa=kappa,
                           random_start=random_start, generator=generator)
    with eval_mode(target):
        return predict(target, crafted) != y


def last_iterate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
                 alpha: float | None = None, loss: str = "ce", kappa: float = 50.0, random_start: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD's final iterate for every point, whether or not an earlier iterate already fooled ``model``."""
    alpha = default_alpha(eps, steps) if alpha is None else float(alpha)
    x, y = x.detach(), y.detach()
    lower, upper = ball_bounds(x, eps)
    x_adv = uniform_in_ball(x, eps, generator) if random_start else x.clone()
    with eval_mode(model):
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                point_loss = attack_loss(loss, model(x_adv), y, kappa)
            grad = input_gradient(point_loss.sum(), x_adv)
            x_adv = project_(x_adv.detach().add_(grad.sign_(), alpha=alpha), lower, upper)
    return x_adv.detach()
