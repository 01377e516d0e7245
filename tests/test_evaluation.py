"""Evaluation engine: specs, curves, worst-case aggregation, resume, results JSON, CLI."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from helpers_eval import CountingModel, first_test_points, standard_model, without_timings

from robaudit import models
from robaudit.errors import Cancelled, RobauditError
from robaudit.evaluation import (
    ATTACKS,
    PRESETS,
    RESULTS_SCHEMA_VERSION,
    DirectoryStore,
    MemoryStore,
    build_spec,
    evaluate,
    results_to_csv,
)
from robaudit.evaluation.results import decode_bits, encode_bits, worst_case


def _bits(results, key):
    return decode_bits(results["per_sample"]["bits"][key], results["n"])


def _row(results, attack, steps=None, restarts=1, eps=None):
    rows = [r for r in results["summary"] if r["attack"] == attack and r["restarts"] == restarts
            and (steps is None or r["steps"] == steps) and (eps is None or abs(r["eps"] - eps) < 1e-9)]
    assert len(rows) == 1, rows
    return rows[0]


# ---------------------------------------------------------------------------- specs
def test_presets_and_defaults():
    assert set(PRESETS) == {"quick", "paper", "audit"}
    quick = build_spec("quick", dataset="mnist10k", n_examples=10)
    assert quick.attacks == ("fgsm", "pgd", "cw") and quick.steps == (20,) and quick.eps == (0.3,)
    cifar = build_spec("quick", dataset="cifar10", n_examples=10)
    assert cifar.eps == (8 / 255,)
    paper = build_spec("paper", n_examples=10)
    assert paper.attacks == ("rs-fgsm", "pgd", "cw") and paper.steps == (20, 100) and paper.kappa == 50.0
    assert paper.restarts == 1
    audit = build_spec("audit", n_examples=10)
    assert {"autoattack", "noise", "pgd", "cw", "fgsm", "rs-fgsm"} <= set(audit.attacks)
    assert "transfer" not in audit.attacks and audit.restarts == 5 and audit.large_eps == (0.5, 1.0)
    assert audit.eps_curve == (0.075, 0.15, 0.225, 0.3, 0.375)
    assert "transfer" in build_spec("audit", n_examples=10, surrogate=True).attacks
    assert build_spec(n_examples=10).preset == "quick"
    assert build_spec(attacks="pgd,noise", eps="8/255, 0.1", steps="5,10", n_examples=10).eps == (8 / 255, 0.1)
    assert set(ATTACKS) >= {"apgd-ce", "apgd-t", "fab-t", "square", "autoattack", "transfer", "noise"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(attacks="pgd,deepfool"), "unknown attack 'deepfool'"),
    (dict(eps="0"), "eps must be in (0, 1]"),
    (dict(eps="2"), "eps must be in (0, 1]"),
    (dict(attacks="transfer"), "needs a surrogate"),
    (dict(preset="fast"), "unknown preset"),
    (dict(steps="0"), "steps must be at least 1"),
    (dict(n_examples=0), "n_examples must be a positive integer"),
    (dict(dataset="tinyimagenet"), "unknown dataset"),
    (dict(thresholds={"c99": 1}), "unknown threshold 'c99'"),
])
def test_build_spec_rejects_bad_requests(kwargs, message):
    kwargs.setdefault("n_examples", 10)
    with pytest.raises(RobauditError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_spec(**kwargs)


def test_thresholds_override_and_spec_round_trip():
    spec = build_spec("audit", n_examples=5, thresholds={"c14_warn_gap_pp": "4.5"})
    assert spec.thresholds.c14_warn_gap_pp == 4.5
    from robaudit.evaluation import EvalSpec
    assert EvalSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


# ---------------------------------------------------------------------------- aggregation
def test_worst_case_is_per_point_minimum_not_average():
    clean = np.array([1, 1, 1, 1, 0], dtype=bool)
    pgd_bits = np.array([1, 1, 0, 0, 0], dtype=bool)   # 40 %
    cw_bits = np.array([0, 0, 1, 1, 0], dtype=bool)    # 40 %
    assert np.mean([pgd_bits.mean(), cw_bits.mean()]) == 0.4
    assert worst_case([(0.3, pgd_bits), (0.3, cw_bits)], clean, 0.3).mean() == 0.0
    # A smaller ball is inside a larger one; a larger one never counts for a smaller eps.
    assert worst_case([(0.1, pgd_bits)], clean, 0.3).tolist() == pgd_bits.tolist()
    assert worst_case([(0.5, pgd_bits)], clean, 0.3).tolist() == clean.tolist()
    assert decode_bits(encode_bits(pgd_bits), 5).tolist() == pgd_bits.tolist()


def test_quick_results_schema_and_worst_case():
    model = standard_model()
    x, y = first_test_points(120)
    spec = build_spec(attacks="fgsm,pgd,cw", eps="0.05", steps="10", n_examples=100, batch_size=64)
    results = evaluate(model, x, y, spec)
    json.dumps(results)  # JSON-safe
    assert results["schema_version"] == RESULTS_SCHEMA_VERSION and results["n"] == 100
    for row in results["summary"]:
        assert {"attack", "eps", "steps", "restarts", "alpha", "robust_accuracy", "n"} <= set(row)
    clean = decode_bits(results["per_sample"]["clean"], 100)
    assert results["clean_accuracy"] == clean.mean()
    with torch.no_grad():
        assert clean.tolist() == (model(x[:100]).argmax(1) == y[:100]).tolist()
    rows = [_row(results, a, steps) for a, steps in (("fgsm", 1), ("pgd", 10), ("cw", 10))]
    expected = clean.copy()
    for row in rows:
        bits = _bits(results, row["key"])
        assert not (bits & ~clean).any()  # clean-misclassified points are never robust
        assert bits.mean() == row["robust_accuracy"]
        expected &= bits
    worst = results["worst_case"][0]
    assert worst["robust_accuracy"] == expected.mean() <= min(r["robust_accuracy"] for r in rows)
    diag = results["diagnostics"]
    assert diag["verdict"] in ("no sign of gradient masking", "gradient masking suspected")
    assert {c["id"] for c in diag["checks"]} == {f"C{i}" for i in range(1, 15)}
    csv_text = results_to_csv(results)
    assert csv_text.splitlines()[0].startswith("attack,eps,steps,restarts,alpha,robust_accuracy,n")
    assert len(csv_text.splitlines()) == 2 + len(results["summary"]) + len(results["worst_case"])


# ---------------------------------------------------------------------------- curves
def test_steps_curve_rows_equal_separate_runs_in_the_engine():
    model = standard_model()
    x, y = first_test_points(100)
    common = dict(attacks="pgd,cw", eps="0.1", alpha=0.025, n_examples=100, batch_size=64)
    one_run = evaluate(model, x, y, build_spec(steps="2,5,20", **common))
    for k in (2, 5):
        separate = evaluate(model, x, y, build_spec(steps=str(k), **common))
        for attack in ("pgd", "cw"):
            a, b = _row(one_run, attack, k), _row(separate, attack, k)
            assert a["alpha"] == b["alpha"] == 0.025
            assert _bits(one_run, a["key"]).tolist() == _bits(separate, b["key"]).tolist()
    curve = next(c for c in one_run["curves"]["steps"] if c["attack"] == "pgd")
    accs = [p["robust_accuracy"] for p in curve["points"]]
    assert [p["steps"] for p in curve["points"]] == [1, 2, 5, 10, 20]
    assert accs == sorted(accs, reverse=True)


def test_eps_curve_is_nested_and_monotone():
    model = standard_model()
    x, y = first_test_points(100)
    spec = build_spec("audit", attacks="pgd", eps="0.1", steps="10", n_examples=100, batch_size=64)
    spec = spec.__class__(**{**spec.__dict__, "restarts": 3, "restart_steps": 10, "large_eps": ()})
    results = evaluate(model, x, y, spec)
    curve = results["curves"]["eps"][0]
    assert [p["eps"] for p in curve["points"]] == [0.025, 0.05, 0.075, 0.1, 0.125]
    accs = [p["robust_accuracy"] for p in curve["points"]]
    assert accs == sorted(accs, reverse=True) and accs[0] > accs[-1]
    bits = [_bits(results, p["key"]) for p in curve["points"]]
    for smaller, larger in zip(bits, bits[1:]):
        assert not (larger & ~smaller).any()  # fooled at a smaller eps => fooled at a larger one
    restarts = results["curves"]["restarts"][0]["points"]
    assert [p["restarts"] for p in restarts] == [1, 2, 3]
    assert [p["robust_accuracy"] for p in restarts] == sorted((p["robust_accuracy"] for p in restarts), reverse=True)
    assert _row(results, "pgd", 10, restarts=3)["robust_accuracy"] == restarts[-1]["robust_accuracy"]
    loss = results["curves"]["loss"][0]
    assert len(loss["mean"]) == 11 and loss["n"] == round(results["clean_accuracy"] * 100)


# ---------------------------------------------------------------------------- resume
def test_resume_after_cancel_recomputes_nothing(tmp_path):
    x, y = first_test_points(120)
    spec = build_spec(attacks="rs-fgsm,pgd,noise", eps="0.1", steps="5", n_examples=120, batch_size=40,
                      noise_draws=10)
    full_model = CountingModel(standard_model())
    reference = evaluate(full_model, x, y, spec, store=DirectoryStore(tmp_path / "ref"))
    full_cost = full_model.images

    model = CountingModel(standard_model())
    polls = {"n": 0}

    def stop_after_five():
        polls["n"] += 1
        return polls["n"] > 5

    store = DirectoryStore(tmp_path / "state")
    with pytest.raises(Cancelled):
        evaluate(model, x, y, spec, store=store, should_stop=stop_after_five)
    first_part = model.images
    assert 0 < first_part < full_cost
    progress = []
    resumed = evaluate(model, x, y, spec, store=DirectoryStore(tmp_path / "state"), progress=progress.append)
    assert model.images == full_cost  # the batches done before the cancel were not recomputed
    assert without_timings(resumed) == without_timings(reference)
    assert resumed["timing"]["reused_batches"] == 5
    assert progress[-1].done == progress[-1].total and progress[-1].stage == "done"
    assert all(a.done <= b.done for a, b in zip(progress, progress[1:]))
    # A finished evaluation rerun on its store does no work at all.
    before = model.images
    again = evaluate(model, x, y, spec, store=DirectoryStore(tmp_path / "state"))
    assert model.images == before and without_timings(again) == without_timings(reference)


@pytest.fixture
def poll_every_forward(monkeypatch):
    import robaudit.evaluation.runners.autoattack as autoattack_runner
    monkeypatch.setattr(autoattack_runner, "AA_POLL_SECONDS", 0.0)


def test_autoattack_resumes_at_the_batch_it_reached(poll_every_forward):
    model = CountingModel(standard_model())
    x, y = first_test_points(16)
    spec = build_spec(attacks="apgd-ce,apgd-t", eps="0.4", n_examples=16, batch_size=8)
    reference = evaluate(model, x, y, spec)
    store = MemoryStore()
    with pytest.raises(Cancelled):   # after the first batch of the APGD-T stage is stored
        evaluate(model, x, y, spec, store=store, should_stop=lambda: any("/apgd-t/" in k for k in store.data))
    model.images = 0
    resumed = evaluate(model, x, y, spec, store=store)
    # Clean, gradient probes and APGD-CE: 2 batches each; the repeated-forward probe and the other model
    # probes; APGD-T's first batch.
    assert resumed["timing"]["reused_batches"] == 9 and resumed["timing"]["computed_batches"] == 1
    assert without_timings(resumed) == without_timings(reference)
    model.images = 0
    with pytest.raises(Cancelled):   # a cancel is polled from inside AutoAttack, not only between batches
        evaluate(model, x, y, build_spec(attacks="apgd-t", eps="0.08", n_examples=16, batch_size=16, seed=1),
                 store=MemoryStore(), should_stop=lambda: model.images > 2000)
    assert model.images < 4000   # one batch of APGD-T (9 targets x 100 steps) would be far more


# ---------------------------------------------------------------------------- CLI
def _cli(argv):
    from robaudit.evaluation.cli import register

    parser = argparse.ArgumentParser(prog="robaudit")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_results_csv_and_table(tmp_path, capsys):
    model = standard_model()
    path = tmp_path / "model.safetensors"
    models.save_checkpoint(path, model, models.CheckpointMetadata(
        arch="smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0], dataset="mnist10k"))
    out, csv_path = tmp_path / "r.json", tmp_path / "r.csv"
    code = _cli(["evaluate", str(path), "--attacks", "pgd,cw", "--steps", "5", "--n-examples", "40",
                 "--eps", "0.2", "--out", str(out), "--csv", str(csv_path), "--no-progress",
                 "--threshold", "c14_warn_gap_pp=7", "--state-dir", str(tmp_path / "state")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "clean accuracy" in printed and "verdict:" in printed and "pgd" in printed
    results = json.loads(out.read_text())
    assert results["n"] == 40 and results["dataset"] == "mnist10k"
    assert results["checkpoint"]["sha256"] and results["checkpoint"]["metadata"]["arch"] == "smallcnn"
    assert results["diagnostics"]["thresholds"]["c14_warn_gap_pp"] == 7.0
    assert csv_path.read_text().startswith("attack,eps")
    _cli(["evaluate", str(path), "--attacks", "pgd", "--steps", "5", "--n-examples", "40", "--eps", "0.2",
          "--out", str(out), "--json", "--no-progress", "--state-dir", str(tmp_path / "state")])
    assert json.loads(capsys.readouterr().out)["summary"][0]["attack"] == "pgd"
    with pytest.raises(RobauditError, match="unknown attack"):
        _cli(["evaluate", str(path), "--attacks", "nope", "--out", str(out), "--no-progress"])
