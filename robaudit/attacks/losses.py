"""Per-sample attack losses (higher = closer to a misclassification)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor, kappa: float) -> torch.Tensor:
    """Carlini-Wagner L-inf loss as the Feature Scattering repo uses it: -max(z_y - max_{j!=y} z_j + kappa, 0).

    With kappa = 50 the clamp almost never binds, so this is the plain logit margin; unlike
    cross-entropy it does not saturate when the logits are scaled up.
    """
    correct = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return -(correct - others.amax(1) + kappa).clamp(min=0.0)


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Croce & Hein's difference-of-logits ratio (needs >= 3 classes); scale-invariant."""
    ordered, _ = logits.sort(dim=1)
    correct = logits.gather(1, y[:, None]).squeeze(1)
    top_is_correct = ordered[:, -1] == correct
    runner_up = torch.where(top_is_correct, ordered[:, -2], ordered[:, -1])
    return -(correct - runner_up) / (ordered[:, -1] - ordered[:, -3] + 1e-12)


LOSSES = ("ce", "cw")


def attack_loss(name: str, logits: torch.Tensor, y: torch.Tensor, kappa: float = 50.0) -> torch.Tensor:
    if name == "ce":
        return cross_entropy(logits, y)
    if name == "cw":
        return margin(logits, y, kappa)
    raise ValueError(f"unknown attack loss {name!r}; choose one of: {', '.join(LOSSES)}")
