"""EOT-PGD for randomized defenses: gradients and decisions averaged over forward passes find what plain
PGD, misled by one noisy pass, misses; with one pass it is plain PGD, bit for bit."""
from __future__ import annotations

import pytest
import torch
from helpers_eval import NoisyInput, first_test_points, standard_model

from robaudit.attacks.common import make_generator, mean_logits
from robaudit.attacks.pgd import pgd


def test_eot_1_is_plain_pgd():
    model = standard_model()
    x, y = first_test_points(60)
    plain = pgd(model, x, y, eps=0.1, steps=10, generator=make_generator(2))
    one = pgd(model, x, y, eps=0.1, steps=10, generator=make_generator(2), eot=1)
    assert torch.equal(plain.first_fooled, one.first_fooled) and torch.equal(plain.x_adv, one.x_adv)


def test_eot_pgd_breaks_a_noisy_defense_that_plain_pgd_overstates():
    model = NoisyInput(standard_model(), sigma=0.5)   # Gaussian noise on every forward pass
    x, y = first_test_points(200)

    def accuracy(points: torch.Tensor) -> float:
        # As a randomized model must be reported: the average over 16 forward passes.
        return (mean_logits(model, points, 16).argmax(1) == y).float().mean().item()

    torch.manual_seed(1)
    plain = accuracy(pgd(model, x, y, eps=0.15, steps=20, generator=make_generator(0)).x_adv)
    torch.manual_seed(1)
    eot = accuracy(pgd(model, x, y, eps=0.15, steps=20, generator=make_generator(0), eot=10).x_adv)
    # Measured here: plain 74.5 %, EOT 48.5 %; the margin leaves room for other CPUs' float kernels.
    assert eot < plain - 0.10, (plain, eot)


def test_eot_must_be_positive():
    x, y = first_test_points(4)
    with pytest.raises(ValueError, match="eot must be at least 1"):
        pgd(standard_model(), x, y, eps=0.1, steps=1, eot=0)
