"""Inner maximisations used during training, all L-inf, all in [0, 1] pixel units.

Each is robaudit.attacks' signed-gradient ascent (``robaudit.attacks.ascent.signed_ascent``: input
gradients only, through ``torch.autograd.grad``, so an attack never writes into the parameters'
``.grad`` and never pays for weight gradients) on the method's own objective and start. Each
function leaves the model in the mode it found it.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.attacks.ascent import signed_ascent
from robaudit.attacks.common import eval_mode, uniform_in_ball
from robaudit.sinkhorn import cosine_cost, ot_distance
from robaudit.training.losses import trades_kl


@contextmanager
def model_mode(model: nn.Module, train: bool) -> Iterator[None]:
    """Run a block with the model in train or eval mode, then restore the previous mode."""
    was_training = model.training
    model.train(train)
    try:
        yield
    finally:
        model.train(was_training)


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
             random_start: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Madry et al.: ``steps`` signed-gradient ascent steps of size alpha on the mean cross-entropy.

    The random start is uniform in the eps-ball and clamped to [0, 1] (Madry;
    Wong et al.'s FGSM-RS is the one-step case with alpha = 1.25 eps). Runs in
    whatever mode the caller put the model in. Returns the last iterate.
    """
    x = x.detach()
    start = uniform_in_ball(x, eps, generator) if random_start else x.clone()
    return signed_ascent(model, x, start, lambda logits: F.cross_entropy(logits, y), eps=eps, alpha=alpha,
                         steps=steps)


def trades_perturb(model: nn.Module, x: torch.Tensor, *, eps: float, alpha: float, steps: int) -> torch.Tensor:
    """TRADES inner max: start at x + 0.001 N(0, 1), ascend KL(clean || adv) with signed steps.

    Eval mode, as in the TRADES code. No labels are used.
    """
    x = x.detach()
    with eval_mode(model):
        with torch.no_grad():
            logits_clean = model(x)
        start = x + 0.001 * torch.randn_like(x)
        return signed_ascent(model, x, start, lambda logits: trades_kl(logits, logits_clean), eps=eps, alpha=alpha,
                             steps=steps)


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
    with eval_mode(model):
        with torch.no_grad():
            logits_clean = model(x)  # a constant for the input gradient, as in the official code
        start = x + torch.empty_like(x).uniform_(-eps, eps)
        return signed_ascent(model, x, start,
                             lambda logits: ot_distance(cosine_cost(logits_clean, logits), mode=sinkhorn),
                             eps=eps, alpha=alpha, steps=steps)
