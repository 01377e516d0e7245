"""Inner maximisations used during training, all L-inf, all in [0, 1] pixel units.

Gradients are taken with ``torch.autograd.grad`` with respect to the input
only, so an attack never writes into the parameters' ``.grad`` and never pays
for weight gradients. Each function leaves the model in the mode it found it.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.sinkhorn import cosine_cost, ot_distance
from robaudit.training.losses import trades_kl


@contextmanager
def model_mode(model: nn.Module, train: bool):
    """Run a block with the model in train or eval mode, then restore the previous mode."""
    was_training = model.training
    model.train(train)
    try:
        yield
    finally:
        model.train(was_training)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Into the eps-ball around x, then into the image range [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def input_gradient(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
             random_start: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Madry et al.: ``steps`` signed-gradient ascent steps of size alpha on the mean cross-entropy.

    The random start is uniform in the eps-ball and clamped to [0, 1] (Madry;
    Wong et al.'s FGSM-RS is the one-step case with alpha = 1.25 eps). Runs in
    whatever mode the caller put the model in.
    """
    x = x.detach()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = (x + (2 * noise - 1) * eps).clamp(0.0, 1.0)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        grad = input_gradient(loss, x_adv)
        x_adv = project(x_adv.detach() + alpha * grad.sign(), x, eps)
    return x_adv.detach()


def trades_perturb(model: nn.Module, x: torch.Tensor, *, eps: float, alpha: float, steps: int) -> torch.Tensor:
    """TRADES inner max: start at x + 0.001 N(0, 1), ascend KL(clean || adv) with signed steps.

    Eval mode, as in the TRADES code. No labels are used.
    """
    x = x.detach()
    with model_mode(model, train=False):
        with torch.no_grad():
            logits_clean = model(x)
        x_adv = x + 0.001 * torch.randn_like(x)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            grad = input_gradient(trades_kl(model(x_adv), logits_clean), x_adv)
            x_adv = project(x_adv.detach() + alpha * grad.sign(), x, eps)
    return x_adv.detach()


def feature_scatter_perturb(model: nn.Module, x: torch.Tensor, *, eps: float, alpha: float, steps: int = 1,
                            sinkhorn: str = "early-stop") -> torch.Tensor:
    """Feature Scattering's attack: ascend the OT distance between clean and perturbed logits.

    As in the official code: eval mode on the current weights (the official
    code pickles a copy every iteration; the weights are not changed here, so
    a copy is not needed), a uniform random start that is *not* clamped to the
    image range before the first forward, then per step
    x' <- clamp(proj_eps(x' + alpha sign(grad)), 0, 1). The batch is coupled
    through the transport plan, so no labels are used. One step with
    alpha = eps is the paper's setting.
    """
    x = x.detach()
    with model_mode(model, train=False):
        with torch.no_grad():
            logits_clean = model(x)  # a constant for the input gradient, as in the official code
        x_adv = x + torch.empty_like(x).uniform_(-eps, eps)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            distance = ot_distance(cosine_cost(logits_clean, model(x_adv)), mode=sinkhorn)
            grad = input_gradient(distance, x_adv)
            x_adv = project(x_adv.detach() + alpha * grad.sign(), x, eps)
    return x_adv.detach()
