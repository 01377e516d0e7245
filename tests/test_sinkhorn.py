"""Log-domain Sinkhorn for Feature Scattering, checked against POT."""
from __future__ import annotations

import ot
import pytest
import torch
from helpers_training import one_torch_thread  # noqa: F401  (fixture)

from robaudit.sinkhorn import CONVERGE, EARLY_STOP, REG, cosine_cost, ot_distance, sinkhorn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pot_transport_cost(cost: torch.Tensor, reg: float = REG) -> float:
    """POT's sinkhorn2 returns <T, C> for the entropic plan T, without the entropy term: the same quantity as ours."""
    m, n = cost.shape
    a = torch.full((m,), 1.0 / m, dtype=torch.float64)
    b = torch.full((n,), 1.0 / n, dtype=torch.float64)
    return float(ot.sinkhorn2(a, b, cost.double(), reg=reg, method="sinkhorn_log",
                              numItermax=20_000, stopThr=1e-9))


@pytest.mark.parametrize("shape", [(32, 32), (60, 60), (128, 128), (20, 35)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_converged_sinkhorn_matches_pot(shape, dtype):
    gen = torch.Generator().manual_seed(shape[0] * 1000 + shape[1])
    cost = torch.rand(shape, generator=gen, dtype=torch.float64).to(dtype)
    ours = (sinkhorn(cost, **CONVERGE).plan * cost).sum().item()
    reference = pot_transport_cost(cost)
    assert ours == pytest.approx(reference, rel=1e-3)


def test_converged_sinkhorn_matches_pot_on_logit_costs():
    # Costs as the attack sees them: cosine costs between class-structured logits.
    gen = torch.Generator().manual_seed(1)
    centers = torch.randn(10, 10, generator=gen, dtype=torch.float64) * 5
    labels = torch.arange(64) % 10
    clean = centers[labels] + torch.randn(64, 10, generator=gen, dtype=torch.float64)
    perturbed = clean + 0.5 * torch.randn(64, 10, generator=gen, dtype=torch.float64)
    cost = cosine_cost(clean, perturbed)
    ours = (sinkhorn(cost, **CONVERGE).plan * cost).sum().item()
    assert ours == pytest.approx(pot_transport_cost(cost), rel=1e-3)


def test_converged_plan_has_uniform_marginals():
    cost = torch.rand(30, 40, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    plan = sinkhorn(cost, **CONVERGE).plan
    torch.testing.assert_close(plan.sum(1), torch.full((30,), 1 / 30, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(plan.sum(0), torch.full((40,), 1 / 40, dtype=torch.float64), atol=1e-9, rtol=0)


def test_early_stop_follows_the_official_rule():
    cost = torch.rand(60, 60, generator=torch.Generator().manual_seed(3))
    result = sinkhorn(cost, **EARLY_STOP)
    assert 1 <= result.iterations < EARLY_STOP["max_iter"]
    assert result.last_change < EARLY_STOP["tol"]
    # One iteration fewer and the rule would not have been met yet.
    if result.iterations > 1:
        assert sinkhorn(cost, max_iter=result.iterations - 1, tol=EARLY_STOP["tol"]).last_change >= EARLY_STOP["tol"]
    # The v update comes last: columns are exact even after an early stop.
    torch.testing.assert_close(result.plan.sum(0), torch.full((60,), 1 / 60), atol=1e-6, rtol=0)
    # At least one iteration always runs, whatever the tolerance.
    assert sinkhorn(cost, tol=float("inf")).iterations == 1


def test_gradient_flows_through_the_plan():
    gen = torch.Generator().manual_seed(4)
    clean = torch.randn(16, 10, generator=gen, dtype=torch.float64)
    # Perturbed logits far enough from the clean ones that the plan is not a saturated permutation
    # (then dT/dC vanishes and both gradients agree to ~1e-10).
    perturbed = (clean + torch.randn(16, 10, generator=gen, dtype=torch.float64)).requires_grad_(True)

    cost = cosine_cost(clean, perturbed)
    plan = sinkhorn(cost).plan
    assert plan.requires_grad
    (through_plan,) = torch.autograd.grad((plan * cost).sum(), perturbed, retain_graph=True)
    (plan_fixed,) = torch.autograd.grad((plan.detach() * cost).sum(), perturbed)

    assert torch.isfinite(through_plan).all()
    assert through_plan.abs().sum() > 0
    assert (through_plan - plan_fixed).norm() > 1e-2 * plan_fixed.norm()
    # ot_distance is the same differentiable quantity.
    (via_api,) = torch.autograd.grad(ot_distance(cosine_cost(clean, perturbed)), perturbed)
    torch.testing.assert_close(via_api, through_plan)


def test_cosine_cost_range_and_zero_vectors():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    b = torch.tensor([[3.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    cost = cosine_cost(a, b)
    expected = torch.tensor([[0.0, 2.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    torch.testing.assert_close(cost, expected)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="early-stop, converge"):
        ot_distance(torch.rand(3, 3), mode="fast")
