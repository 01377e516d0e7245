"""L2 and L1 next to L-inf through the engine (issue 11): the spec's norm and its defaults, the attacks each
norm has, an L2 and an L1 audit end to end with every result tagged by its norm, iterates inside the L2
ball, noise on the L2/L1 sphere, the CLI's --norm, and results stored before norms existed."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers_eval import Recorder, first_test_points, golden_models, standard_model
from helpers_training import one_torch_thread  # noqa: F401  (a fixture)

from robaudit.attacks.common import make_generator, on_sphere, uniform_in_l1_ball
from robaudit.attacks.noise import random_noise
from robaudit.cli import main
from robaudit.errors import RobauditError
from robaudit.evaluation import build_spec, evaluate, results_to_csv
from robaudit.evaluation.diagnostics import run_diagnostics
from robaudit.evaluation.presets import EvalSpec, attacks_for
from robaudit.models import CheckpointMetadata, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------- the spec
@pytest.mark.parametrize(("dataset", "norm", "eps"), [
    ("mnist10k", "linf", 0.3), ("mnist10k", "l2", 2.0), ("mnist10k", "l1", 10.0),
    ("cifar10", "linf", 8 / 255), ("cifar10", "l2", 0.5), ("cifar10", "l1", 12.0),
    ("imagenet", "linf", 4 / 255), ("imagenet", "l2", 3.0),
])
def test_default_eps_per_dataset_and_norm(dataset, norm, eps):
    spec = build_spec("quick", dataset=dataset, norm=norm)
    assert spec.norm == norm and spec.eps == (pytest.approx(eps),)


def test_a_norm_without_a_published_default_asks_for_eps():
    with pytest.raises(RobauditError, match="no default L1 eps for imagenet: pass --eps"):
        build_spec("audit", dataset="imagenet", norm="l1")
    assert build_spec("audit", dataset="imagenet", norm="l1", eps="60").eps == (60.0,)


def test_audit_preset_per_norm():
    linf = build_spec("audit", dataset="mnist10k")
    assert linf.norm == "linf" and linf.large_eps == (0.5, 1.0)
    l2 = build_spec("audit", dataset="mnist10k", norm="l2")
    # Half and all of the L2 diameter of the 28x28 box: every image is within 14 of mid-grey, 28 reaches any.
    assert l2.large_eps == (14.0, 28.0) and l2.input_dims == 784
    assert l2.eps_curve == (0.5, 1.0, 1.5, 2.0, 2.5) and l2.restarts == 5
    assert set(l2.attacks) == set(linf.attacks)
    l1 = build_spec("audit", dataset="mnist10k", norm="l1")
    # Under L1 only AutoAttack (APGD-L1 version) and noise exist: no PGD, so no PGD curves.
    assert l1.attacks == ("autoattack", "noise") and l1.eps_curve == () and l1.large_eps == () and l1.restarts == 1
    assert build_spec("quick", dataset="mnist10k", norm="l1").attacks == ("apgd-ce",)


def test_attacks_without_a_version_for_the_norm_are_refused_naming_those_that_exist():
    with pytest.raises(RobauditError) as err:
        build_spec(attacks="pgd,cw", norm="l1")
    assert str(err.value) == ("pgd, cw have no L1 version; under l1 choose from: apgd-ce, apgd-t, fab-t, square, "
                              "autoattack, noise")
    with pytest.raises(RobauditError, match="the paper preset has no attack with an L1 version"):
        build_spec("paper", norm="l1")
    with pytest.raises(RobauditError, match="unknown norm 'l3'"):
        build_spec("quick", norm="l3")
    assert "transfer" in attacks_for("l2") and "transfer" not in attacks_for("l1")


def test_eps_must_fit_the_norms_diameter():
    with pytest.raises(RobauditError, match=r"L2 eps must be in \(0, 28\] for 784 pixels"):
        build_spec("quick", norm="l2", eps="30")
    with pytest.raises(RobauditError, match=r"L1 eps must be in \(0, 784\]"):
        build_spec("audit", norm="l1", eps="800")
    assert build_spec("quick", norm="l2", eps="3", alpha=1.5).alpha == 1.5   # above 1 is fine under L2
    with pytest.raises(RobauditError, match=r"eps must be in \(0, 1\] in pixel units"):
        build_spec("quick", eps="2")


def test_results_stored_before_norms_existed_read_as_linf():
    data = build_spec("quick").to_dict()
    del data["norm"], data["input_dims"]
    spec = EvalSpec.from_dict(data)
    assert spec.norm == "linf" and spec.input_dims is None


# ---------------------------------------------------------------------------- noise on the sphere
def test_noise_draws_lie_on_the_l2_and_l1_spheres():
    x = torch.full((64, 1, 28, 28), 0.5)   # mid-grey: no clamping, so the draws stay on the shell
    l2 = on_sphere(x, 2.0, "l2", make_generator(0)) - x
    assert torch.allclose(l2.flatten(1).norm(dim=1), torch.full((64,), 2.0), atol=1e-5)
    l1 = on_sphere(x, 10.0, "l1", make_generator(0)) - x
    assert torch.allclose(l1.flatten(1).abs().sum(1), torch.full((64,), 10.0), atol=1e-4)
    # The L1 draws are spread over the sphere (every pixel moves a little), not piled on a few coordinates.
    assert float((l1.abs().flatten(1) > 0).float().mean()) > 0.99
    inside = uniform_in_l1_ball(x, 10.0, make_generator(1)) - x
    assert float(inside.flatten(1).abs().sum(1).max()) <= 10.0 + 1e-4


def _nearest_distance(seen: torch.Tensor, x: torch.Tensor, p: float) -> torch.Tensor:
    """For each input the model saw, its Lp distance to the closest evaluated test point."""
    return torch.cdist(seen.flatten(1).double(), x.flatten(1).double(), p=p).min(1).values


def test_random_noise_under_l1_stays_in_the_ball():
    model, _ = golden_models()
    recorder = Recorder(model)
    x, y = first_test_points(16)
    random_noise(recorder, x, y, eps=10.0, draws=3, norm="l1", generator=make_generator(0))
    seen = torch.cat(recorder.seen)
    assert float(_nearest_distance(seen, x, 1.0).max()) <= 10.0 + 1e-3
    assert float(seen.min()) >= 0.0 and float(seen.max()) <= 1.0


# ---------------------------------------------------------------------------- end to end
def _tagged(results, norm):
    """Every row, curve entry, worst case and check evidence of ``results`` names ``norm``."""
    assert results["norm"] == norm and results["config"]["norm"] == norm
    assert all(r["norm"] == norm for r in results["summary"])
    assert all(w["norm"] == norm for w in results["worst_case"])
    assert all(c["norm"] == norm for entries in results["curves"].values() for c in entries)
    assert all(c["evidence"]["norm"] == norm for c in results["diagnostics"]["checks"])


@pytest.fixture(scope="module")
def l2_audit():
    model, surrogate = golden_models()
    x, y = first_test_points(24)
    spec = build_spec("audit", dataset="mnist10k", norm="l2", n_examples=24, surrogate=True, batch_size=12,
                      autoattack_examples=8, noise_draws=10)
    return evaluate(model, x, y, spec, surrogate=surrogate)


def test_l2_audit_end_to_end_is_tagged_l2_everywhere(l2_audit):
    results = l2_audit
    _tagged(results, "l2")
    attacks = {r["attack"] for r in results["summary"]}
    assert {"fgsm", "rs-fgsm", "pgd", "cw", "noise", "transfer", "autoattack"} <= attacks
    # The curves and the worst case are kept at the L2 eps: the eps curve, the steps curve, the restarts.
    (eps_curve,) = results["curves"]["eps"]
    assert [p["eps"] for p in eps_curve["points"]] == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert {c["eps"] for c in results["curves"]["steps"]} == {2.0}
    assert results["curves"]["restarts"][0]["eps"] == 2.0
    assert {w["eps"] for w in results["worst_case"]} == {2.0}
    # Check C2 at half and all of the L2 diameter: a working attack reaches every image.
    large = [r for r in results["summary"] if r["key"].startswith("pgd-large-eps")]
    assert [r["eps"] for r in large] == [14.0, 28.0] and all(r["robust_accuracy"] == 0.0 for r in large)
    c2 = next(c for c in results["diagnostics"]["checks"] if c["id"] == "C2")
    assert c2["status"] == "pass" and c2["evidence"]["unbounded_eps"] == 28.0
    assert c2["message"].startswith("Under L2:")
    noise = next(r for r in results["summary"] if r["attack"] == "noise")
    assert "L2 sphere" in noise["note"]
    # The CSV names the norm on every line after the clean one.
    header, clean, *lines = results_to_csv(results).splitlines()
    assert header.endswith(",norm") and all(line.endswith(",l2") for line in lines)


def test_c2_fails_when_the_unbounded_l2_budget_leaves_points_correct(l2_audit):
    results = json.loads(json.dumps(l2_audit))
    for row in results["summary"]:
        if row["key"].startswith("pgd-large-eps") and row["eps"] == 28.0:
            row["robust_accuracy"] = 0.05   # below chance, above the 1 % allowed with an unbounded budget
    c2 = next(c for c in run_diagnostics(results)["checks"] if c["id"] == "C2")
    assert c2["status"] == "warn" and "unbounded budget" in c2["message"]


def test_every_l2_attack_iterate_stays_in_the_l2_ball():
    model, surrogate = golden_models()
    recorder = Recorder(model)
    x, y = first_test_points(16)
    eps = 1.0
    spec = build_spec(attacks="fgsm,rs-fgsm,pgd,cw,noise,transfer,apgd-ce", dataset="mnist10k", norm="l2",
                      eps=str(eps), steps="10", n_examples=16, batch_size=16, noise_draws=5, surrogate=True)
    results = evaluate(recorder, x, y, spec, surrogate=surrogate)
    _tagged(results, "l2")
    seen = torch.cat([s.reshape(-1, 1, 28, 28) for s in recorder.seen])
    assert len(seen) > 16 * 10                             # the attacks did query the model
    assert float(_nearest_distance(seen, x, 2.0).max()) <= eps + 1e-4
    assert float(seen.min()) >= 0.0 and float(seen.max()) <= 1.0


def test_l1_audit_runs_autoattack_l1_and_noise():
    model, _ = golden_models()
    x, y = first_test_points(16)
    spec = build_spec("audit", dataset="mnist10k", norm="l1", n_examples=16, batch_size=16, autoattack_examples=8,
                      noise_draws=5)
    results = evaluate(model, x, y, spec)
    _tagged(results, "l1")
    attacks = [r["attack"] for r in results["summary"]]
    assert attacks[-4:] == ["autoattack:apgd-ce", "autoattack:apgd-t", "autoattack:fab-t", "autoattack"]
    assert "noise" in attacks and "pgd" not in attacks
    aa = next(r for r in results["summary"] if r["attack"] == "autoattack")
    assert aa["eps"] == 10.0 and aa["n"] == 8 and "L1 versions" in aa["note"]
    # AutoAttack-L1 at eps 10 breaks this small standard model on most points; noise barely does.
    noise = next(r for r in results["summary"] if r["attack"] == "noise")
    assert aa["robust_accuracy"] < noise["robust_accuracy"]
    checks = {c["id"]: c["status"] for c in results["diagnostics"]["checks"]}
    assert checks["C2"] == "skipped" and checks["C1"] == "skipped"   # no PGD under L1


def test_an_l2_batch_is_never_reused_for_linf():
    from robaudit.evaluation.store import MemoryStore

    model = standard_model()
    x, y = first_test_points(16)
    store = MemoryStore()
    common = dict(attacks="pgd", eps="0.3", steps="5", n_examples=16, batch_size=16)
    l2 = evaluate(model, x, y, build_spec(norm="l2", **common), store=store)
    linf = evaluate(model, x, y, build_spec(**common), store=store)
    # The same eps number means a much larger budget under L-inf: had the L2 batch been reused, they would agree.
    pgd_l2 = next(r for r in l2["summary"] if r["attack"] == "pgd")["robust_accuracy"]
    pgd_linf = next(r for r in linf["summary"] if r["attack"] == "pgd")["robust_accuracy"]
    assert pgd_linf < pgd_l2
    assert any("/norm=l2" in key for key in store.data) and any("/norm=" not in key for key in store.data)


# ---------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, one_torch_thread):
    meta = CheckpointMetadata(arch="smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0],
                              dataset="mnist10k", input_size=28, method="standard")
    return save_checkpoint(tmp_path_factory.mktemp("norm") / "standard.safetensors", standard_model(n_train=2000),
                           meta)


def test_cli_norm_l2_uses_the_l2_default_and_names_the_norm(checkpoint, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["evaluate", str(checkpoint), "--norm", "l2", "--attacks", "pgd", "--steps", "5", "--n-examples",
                 "16", "--no-progress", "--out", str(out), "--csv", str(tmp_path / "r.csv")]) == 0
    results = json.loads(out.read_text())
    assert results["norm"] == "l2" and results["config"]["eps"] == [2.0]
    assert "norm L2" in capsys.readouterr().out
    assert (tmp_path / "r.csv").read_text().splitlines()[1].startswith("clean")


@pytest.mark.parametrize(("args", "message"), [
    (["--norm", "l1", "--attacks", "pgd"], "pgd has no L1 version; under l1 choose from: apgd-ce"),
    (["--norm", "l2", "--eps", "30"], "L2 eps must be in (0, 28]"),
])
def test_cli_refuses_an_attack_or_budget_the_norm_does_not_have_in_one_line(checkpoint, tmp_path, capsys, args,
                                                                             message):
    assert main(["evaluate", str(checkpoint), *args, "--n-examples", "8", "--no-progress",
                 "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


def test_cli_rejects_an_unknown_norm(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", str(checkpoint), "--norm", "l3", "--out", str(tmp_path / "r.json")])
    assert exit_.value.code == 2 and "invalid choice: 'l3'" in capsys.readouterr().err


def test_l2_diameter_rule_matches_the_box():
    # Two opposite corners of the box are sqrt(d) apart in L2 and d apart in L1.
    d = 3 * 32 * 32
    spec = build_spec("audit", dataset="cifar10", norm="l2")
    assert spec.large_eps == (round(math.sqrt(d) / 2, 6), round(math.sqrt(d), 6))
    corner = np.zeros(d), np.ones(d)
    assert np.linalg.norm(corner[1] - corner[0]) == pytest.approx(spec.large_eps[1])
