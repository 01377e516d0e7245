"""Adding an attack is one module and one registry entry: a toy attack defined here, registered through
the public API, runs in evaluate() with nothing else edited (rows, bitsets, worst case, progress)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_eval import first_test_points, standard_model
from torch import nn

from robaudit.attacks.common import PointStreams, eval_mode, predict
from robaudit.errors import RobauditError
from robaudit.evaluation import build_spec, evaluate
from robaudit.evaluation.cost import Cost, fixed
from robaudit.evaluation.presets import EvalSpec
from robaudit.evaluation.registry import ATTACKS, AttackInfo, family_of, is_white_box, register, unregister
from robaudit.evaluation.results import decode_bits
from robaudit.evaluation.run import Run
from robaudit.evaluation.schedule import estimate_units, plan
from robaudit.evaluation.store import Record


# ---------------------------------------------------------------------------- the toy attack's module
def gaussian_sign(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                  streams: PointStreams) -> torch.Tensor:
    """(n,) bool: fooled by one step of size eps along the sign of Gaussian noise (no gradients used)."""
    noise = streams.randn(x.shape, device=x.device, dtype=x.dtype)   # one stream per point: shard-proof
    with eval_mode(model):
        return predict(model, (x + eps * noise.sign()).clamp(0.0, 1.0)) != y


def run_gaussian_sign(run: Run, attack: AttackInfo, eps: float) -> None:
    def one_draw(index: torch.Tensor, start: int, end: int) -> Record:
        fooled = gaussian_sign(run.model, run.x[index], run.y[index], eps=eps,
                               streams=run.streams(f"gaussian-sign/eps={eps:.6g}", index))
        return {"fooled": fooled.int().tolist()}

    records = run.attack(f"gaussian-sign/eps={eps:.6g}", attack.cost.per_point(run.spec), one_draw, {"fooled": []})
    fooled = run.per_point(records, "fooled", 0).astype(bool)
    run.out.add_row(attack.name, eps, run.clean & ~fooled, steps=1, alpha=eps)


# ---------------------------------------------------------------------------- its registry line
TOY = AttackInfo("gaussian-sign", "noise", "Gaussian sign", white_box=False, stepped=False, order=1,
                 run_order=65, cost=Cost(0.4, fixed(1)), runner=run_gaussian_sign)


@pytest.fixture
def toy_registered():
    register(TOY)
    try:
        yield TOY
    finally:
        unregister(TOY.name)


def _spec(attacks: str) -> EvalSpec:
    return build_spec(attacks=attacks, eps="0.3", steps="5", n_examples=60, batch_size=25, noise_draws=5)


def test_a_registered_attack_runs_in_evaluate(toy_registered):
    x, y = first_test_points(60)
    reports = []
    results = evaluate(standard_model(), x, y, _spec("pgd,noise,gaussian-sign"), progress=reports.append)

    # Its row, in its schedule slot: after noise (run_order 60), with its own bitset.
    attacks = [row["attack"] for row in results["summary"]]
    assert attacks == ["pgd", "noise", "gaussian-sign"]
    row = results["summary"][2]
    assert row["key"] == "gaussian-sign@eps=0.3/steps=1/restarts=1" and row["n"] == 60
    bits = decode_bits(results["per_sample"]["bits"][row["key"]], 60)
    clean = decode_bits(results["per_sample"]["clean"], 60)
    assert bits.mean() == row["robust_accuracy"] and not (bits & ~clean).any()

    # It is one of the attacks of the worst case, which is the per-point minimum over all three.
    worst = results["worst_case"][0]
    assert row["key"] in worst["attacks"]
    expected = clean.copy()
    for r in results["summary"]:
        expected &= decode_bits(results["per_sample"]["bits"][r["key"]], 60)
    assert worst["robust_accuracy"] == expected.mean()

    # The progress total counts its cost: the estimate with it exceeds the one without it by exactly that.
    spec = _spec("pgd,noise,gaussian-sign")
    assert reports[0].total == pytest.approx(estimate_units(spec, 0, 60))
    assert estimate_units(spec, 0, 60) - estimate_units(_spec("pgd,noise"), 0, 60) == pytest.approx(0.4 * 60)
    assert reports[-1].done == reports[-1].total and reports[-1].stage == "done"
    assert [stage.name for _, stage in plan(spec)] == ["pgd eps=0.3", "noise eps=0.3", "gaussian-sign eps=0.3"]

    # The charts and the diagnostics see it through the same entry.
    assert family_of("gaussian-sign") == "noise" and not is_white_box("gaussian-sign")


def test_the_toy_attack_fools_a_point_only_when_its_draw_misclassifies(toy_registered):
    # The runner's result matches the attack function called directly on the same random stream.
    model = standard_model()
    x, y = first_test_points(25)
    results = evaluate(model, x, y, build_spec(attacks="gaussian-sign", eps="0.3", n_examples=25, batch_size=25))
    clean = decode_bits(results["per_sample"]["clean"], 25)
    index = np.nonzero(clean)[0]
    streams = PointStreams.seeded(0, "gaussian-sign/eps=0.3", points=index.tolist())   # seed 0, the runner's stream
    fooled = gaussian_sign(model, x[index], y[index], eps=0.3, streams=streams)
    expected = clean.copy()
    expected[index[fooled.numpy()]] = False
    row = results["summary"][0]
    assert decode_bits(results["per_sample"]["bits"][row["key"]], 25).tolist() == expected.tolist()


def test_register_rejects_a_taken_name_and_unregister_removes_it():
    with pytest.raises(ValueError, match="already registered"):
        register(ATTACKS["pgd"])
    register(TOY)
    assert "gaussian-sign" in ATTACKS
    unregister("gaussian-sign")
    assert "gaussian-sign" not in ATTACKS
    with pytest.raises(RobauditError, match="unknown attack"):
        _spec("gaussian-sign")
    with pytest.raises(RobauditError, match="unknown attack"):   # a spec made while it was registered
        plan(EvalSpec(dataset="mnist10k", n_examples=10, eps=(0.3,), attacks=("pgd", "gaussian-sign")))
