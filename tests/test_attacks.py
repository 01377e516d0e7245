"""Attacks: strength, exact step/seed semantics, and that they leave the model exactly as they found it."""
from __future__ import annotations

import copy

import torch
from helpers_eval import TrainModeNet, first_test_points, standard_model, surrogate_model
from torch import nn

from robaudit.attacks import fgsm, last_iterate, pgd, random_noise, run_autoattack, transfer
from robaudit.attacks.common import make_generator


def _accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_pgd_breaks_a_standard_model():
    model = standard_model()
    x, y = first_test_points(200)
    assert _accuracy(model, x, y) > 0.9
    result = pgd(model, x, y, eps=0.3, steps=20, generator=make_generator(0))
    robust = (~result.fooled_by()) & (model(x).argmax(1) == y)
    assert robust.float().mean().item() < 0.05
    # What the attack returns really is adversarial and inside the ball.
    assert (result.x_adv - x).abs().max().item() <= 0.3 + 1e-6
    assert result.x_adv.min().item() >= 0.0 and result.x_adv.max().item() <= 1.0
    fooled = result.fooled_by()
    assert not result.final_correct[fooled].any()


def test_steps_curve_from_one_run_equals_separate_runs():
    model = standard_model()
    x, y = first_test_points(150)
    eps, alpha = 0.1, 0.025
    long = pgd(model, x, y, eps=eps, steps=20, alpha=alpha, generator=make_generator(7))
    curve = [long.fooled_by(k).float().mean().item() for k in (1, 2, 5, 10, 20)]
    assert curve == sorted(curve) and curve[0] < curve[-1]  # a non-trivial curve
    for k in (1, 5, 10):
        short = pgd(model, x, y, eps=eps, steps=k, alpha=alpha, generator=make_generator(7))
        assert torch.equal(short.fooled_by(), long.fooled_by(k))
        # Same first adversarial iterate, bit for bit.
        hit = short.fooled_by()
        assert torch.equal(short.first_fooled[0][hit], long.first_fooled[0][hit])
        assert torch.equal(short.x_adv[hit], long.x_adv[hit])


def test_steps_curve_equality_holds_without_freezing_too():
    model = standard_model()
    x, y = first_test_points(80)
    long = pgd(model, x, y, eps=0.1, steps=10, alpha=0.025, generator=make_generator(3), freeze=False)
    short = pgd(model, x, y, eps=0.1, steps=5, alpha=0.025, generator=make_generator(3), freeze=False)
    assert torch.equal(short.fooled_by(), long.fooled_by(5))


def test_restarts_are_worst_case_per_point():
    model = standard_model()
    x, y = first_test_points(100)
    result = pgd(model, x, y, eps=0.08, steps=5, alpha=0.02, restarts=4, generator=make_generator(1))
    by_restart = [result.fooled_by(restarts=r).sum().item() for r in (1, 2, 3, 4)]
    assert by_restart == sorted(by_restart)
    # A point fooled by an earlier restart is never attacked again.
    first = result.first_fooled
    for r in range(1, 4):
        earlier = ((first[:r] >= 0) & (first[:r] <= 5)).any(0)
        assert (first[r][earlier] == -1).all()


def test_pgd_matches_torchattacks_without_random_start():
    import torchattacks

    model = standard_model()
    x, y = first_test_points(200)
    eps, alpha, steps = 0.1, 0.01, 10
    reference = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
    ta_correct = model(reference(x, y)).argmax(1) == y
    ours = pgd(model, x, y, eps=eps, steps=steps, alpha=alpha, random_start=False)
    ours_correct = (~ours.fooled_by()) & (model(x).argmax(1) == y)
    ta_acc, our_acc = ta_correct.float().mean().item(), ours_correct.float().mean().item()
    assert abs(ta_acc - our_acc) <= 0.02
    # Same trajectory until a point is first fooled; we keep the first adversarial iterate, torchattacks
    # the last, so we never find fewer (allow one point of float noise in the gradient signs).
    assert our_acc <= ta_acc + 1 / 200
    assert int((ta_correct.logical_not() & ours_correct).sum()) <= 1


def test_cw_margin_loss_and_fgsm_variants():
    model = standard_model()
    x, y = first_test_points(200)
    cw = pgd(model, x, y, eps=0.3, steps=20, loss="cw", kappa=50.0, generator=make_generator(0))
    assert cw.fooled_by().float().mean().item() > 0.9
    plain_a = fgsm(model, x, y, eps=0.2)
    plain_b = fgsm(model, x, y, eps=0.2)
    assert torch.equal(plain_a.first_fooled, plain_b.first_fooled)  # textbook FGSM has no randomness
    clean_correct = model(x).argmax(1) == y
    assert (plain_a.first_fooled[0][clean_correct] == 1).logical_or(plain_a.first_fooled[0][clean_correct] == 2).all()
    rs = fgsm(model, x, y, eps=0.2, random_start=True, generator=make_generator(0))
    assert rs.fooled_by().any() and plain_a.fooled_by().any()


def test_noise_and_transfer():
    model, surrogate = standard_model(), surrogate_model()
    x, y = first_test_points(150)
    tiny = random_noise(model, x, y, eps=1e-4, draws=5, generator=make_generator(0))
    assert (tiny[model(x).argmax(1) == y] == 5).all()
    big = random_noise(model, x, y, eps=0.5, draws=20, generator=make_generator(0))
    assert (big < 20).float().mean().item() > 0.1
    fooled = transfer(model, surrogate, x, y, eps=0.3, steps=20, generator=make_generator(0))
    assert fooled.float().mean().item() > 0.3
    crafted = last_iterate(surrogate, x, y, eps=0.3, steps=3, generator=make_generator(0))
    assert (crafted - x).abs().max().item() <= 0.3 + 1e-6


def _snapshot(model: nn.Module):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [m.training for m in model.modules()],
            [(p.requires_grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()])


def _assert_unchanged(model: nn.Module, snap) -> None:
    state, modes, params = snap
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert [m.training for m in model.modules()] == modes
    for p, (requires_grad, grad) in zip(model.parameters(), params):
        assert p.requires_grad == requires_grad
        assert (p.grad is None) if grad is None else torch.equal(p.grad, grad)


def test_attacks_leave_mode_weights_and_grads_alone():
    x, y = first_test_points(24)
    net = TrainModeNet()
    net.train()
    net.body[1].eval()  # a mixed-mode model: BatchNorm frozen inside a training model
    surrogate = TrainModeNet().train()
    snap, surrogate_snap = _snapshot(net), _snapshot(surrogate)
    gen = make_generator(0)
    pgd(net, x, y, eps=0.3, steps=3, restarts=2, generator=gen, trace=True)
    pgd(net, x, y, eps=0.3, steps=3, loss="cw", generator=gen)
    fgsm(net, x, y, eps=0.3)
    random_noise(net, x, y, eps=0.3, draws=3, generator=gen)
    transfer(net, surrogate, x, y, eps=0.3, steps=2, generator=gen)
    _assert_unchanged(net, snap)
    _assert_unchanged(surrogate, surrogate_snap)


def test_autoattack_adapter_leaves_model_alone_and_matches_pyautoattack():
    from pyautoattack import AutoAttack

    model = copy.deepcopy(standard_model())
    x, y = first_test_points(20)
    correct = model(x).argmax(1) == y
    xs, ys = x[correct], y[correct]
    model.train()  # the adapter must evaluate in eval mode and hand the mode back
    snap = _snapshot(model)
    flags, _ = run_autoattack(model, xs, ys, eps=0.05, stages=("apgd-ce", "apgd-t"), seed=5, batch_size=64)
    _assert_unchanged(model, snap)
    model.eval()
    direct = AutoAttack(model, version="standard", eps=0.05, seed=5)
    direct.attacks_to_run = ["apgd-ce", "apgd-t"]
    with torch.random.fork_rng(devices=[]):
        _, y_adv = direct.run_standard_evaluation(xs, ys, batch_size=64)
    assert torch.equal(flags["apgd-t"], y_adv == ys)
    assert flags["apgd-ce"].sum() >= flags["apgd-t"].sum() > 0


def test_fab_through_the_adapter_writes_no_parameter_grads():
    model = standard_model()
    x, y = first_test_points(12)
    snap = _snapshot(model)
    run_autoattack(model, x, y, eps=0.3, stages=("fab-t",), seed=0, batch_size=64)
    _assert_unchanged(model, snap)
