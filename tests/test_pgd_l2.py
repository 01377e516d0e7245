"""L2 and L1 attacks: PGD-L2's iterates stay in the ball, a short run is the prefix of a long one, and it
is at least as strong as torchattacks' PGDL2; AutoAttack under L2 and L1 through robaudit gives what a
direct pyautoattack call gives."""
from __future__ import annotations

import pytest
import torch
from helpers_eval import Recorder, first_test_points, standard_model

from robaudit.attacks.common import make_generator, uniform_in_l2_ball
from robaudit.attacks.pgd import pgd

EPS = 1.5   # MNIST L2: a budget where a standard model keeps some points, so both attacks have work


def test_every_iterate_stays_in_the_l2_ball_and_the_box():
    x, y = first_test_points(64)
    recorder = Recorder(standard_model())
    pgd(recorder, x, y, eps=EPS, steps=10, norm="l2", generator=make_generator(1), freeze=False)
    assert len(recorder.seen) == 12                # the start, 10 steps, and the final re-scoring
    for seen in recorder.seen:
        assert float((seen - x).flatten(1).norm(dim=1).max()) <= EPS + 1e-6
        assert float(seen.min()) >= 0.0 and float(seen.max()) <= 1.0


def test_random_start_is_inside_the_ball_and_reaches_its_shell():
    x, _ = first_test_points(256)
    start = uniform_in_l2_ball(x, EPS, make_generator(0))
    norms = (start - x).flatten(1).norm(dim=1)
    assert float(norms.max()) <= EPS + 1e-6
    # Uniform in 784 dimensions puts almost all the volume near the shell (before the [0, 1] clamp).
    assert float(norms.median()) > 0.5 * EPS


def test_a_short_run_is_the_prefix_of_a_long_one():
    model = standard_model()
    x, y = first_test_points(120)
    long = pgd(model, x, y, eps=EPS, steps=20, alpha=EPS / 4, norm="l2", generator=make_generator(7))
    curve = [long.fooled_by(k).float().mean().item() for k in (1, 5, 20)]
    assert curve == sorted(curve) and curve[0] < curve[-1]
    for k in (1, 5):
        short = pgd(model, x, y, eps=EPS, steps=k, alpha=EPS / 4, norm="l2", generator=make_generator(7))
        assert torch.equal(short.fooled_by(), long.fooled_by(k))
        hit = short.fooled_by()
        assert torch.equal(short.x_adv[hit], long.x_adv[hit])


def test_pgd_l2_20_is_at_least_as_strong_as_torchattacks_pgdl2():
    import torchattacks

    model = standard_model()
    x, y = first_test_points(200)
    steps, alpha = 20, EPS / 4
    torch.manual_seed(0)
    reference = torchattacks.PGDL2(model, eps=EPS, alpha=alpha, steps=steps, random_start=True)
    ta_acc = (model(reference(x, y)).argmax(1) == y).float().mean().item()
    ours = pgd(model, x, y, eps=EPS, steps=steps, alpha=alpha, norm="l2", generator=make_generator(0))
    our_acc = ((~ours.fooled_by()) & (model(x).argmax(1) == y)).float().mean().item()
    assert 0.0 < ta_acc < 0.9                    # a budget where the comparison means something
    assert our_acc <= ta_acc + 0.02
    # The returned points are inside the ball.
    assert float((ours.x_adv - x).flatten(1).norm(dim=1).max()) <= EPS + 1e-6


def test_unknown_norm_is_refused():
    x, y = first_test_points(4)
    with pytest.raises(ValueError, match="unknown norm 'l3'"):
        pgd(standard_model(), x, y, eps=EPS, steps=1, norm="l3")


@pytest.mark.parametrize(("norm", "eps"), [("l2", 1.5), ("l1", 10.0)])
def test_autoattack_l2_and_l1_through_robaudit_equal_a_direct_pyautoattack_call(norm, eps):
    from pyautoattack import AutoAttack

    from robaudit.attacks.autoattack import AUTOATTACK_NORMS, run_autoattack

    model = standard_model()
    x, y = first_test_points(24)
    correct = model(x).argmax(1) == y
    xs, ys = x[correct], y[correct]
    flags, _ = run_autoattack(model, xs, ys, eps=eps, stages=("apgd-ce",), seed=3, batch_size=64, norm=norm)
    direct = AutoAttack(model, version="standard", norm=AUTOATTACK_NORMS[norm], eps=eps, seed=3)
    direct.attacks_to_run = ["apgd-ce"]
    with torch.random.fork_rng(devices=[]):
        _, y_adv = direct.run_standard_evaluation(xs, ys, batch_size=64)
    assert torch.equal(flags["apgd-ce"], y_adv == ys)
    assert 0 < int(flags["apgd-ce"].sum()) < len(ys)   # a budget where some points hold and some fall
