"""Losses for the weight update: label-smoothed soft cross-entropy and the TRADES KL term."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth_labels(y: torch.Tensor, num_classes: int, delta: float) -> torch.Tensor:
    """Soft targets: 1 - delta on the true class and delta / (K - 1) on every other class.

    This is Feature Scattering's ``ls_factor`` (paper: delta = 0.5). Note that
    torch's own ``cross_entropy(label_smoothing=)`` spreads delta / K over all K
    classes instead, so its true-class weight is 1 - delta + delta / K.
    """
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {delta}")
    off = delta / (num_classes - 1)
    targets = torch.full((len(y), num_classes), off, dtype=torch.float32, device=y.device)
    targets.scatter_(1, y.view(-1, 1), 1.0 - delta)
    return targets


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-sum_k targets_k log softmax(logits)_k, averaged over the batch."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def smoothed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, delta: float) -> torch.Tensor:
    """Cross-entropy against ``smooth_labels`` (plain cross-entropy when delta = 0)."""
    if delta == 0.0:
        return F.cross_entropy(logits, y)
    return soft_cross_entropy(logits, smooth_labels(y, logits.shape[1], delta))


def trades_kl(logits_adv: torch.Tensor, logits_clean: torch.Tensor) -> torch.Tensor:
    """KL(softmax(clean) || softmax(adv)) summed over the batch, as in the TRADES code.

    The inner maximisation ascends this sum; the weight update divides it by
    the batch size (KLDivLoss(size_average=False) / batch_size in TRADES).
    """
    return F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="sum")
