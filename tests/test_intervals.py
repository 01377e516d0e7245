"""Confidence intervals: right on hand-computed cases, honest in coverage, and present on every accuracy
of a results JSON; provenance says what produced the numbers."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_eval import first_test_points, golden_models

from robaudit.evaluation import build_spec, evaluate, results_to_csv
from robaudit.evaluation.intervals import Z95, newcombe_paired, newcombe_unpaired, paired_difference, wilson
from robaudit.evaluation.provenance import merge_provenance
from robaudit.evaluation.results import decode_bits


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (5, 10, 0.236593, 0.763407),    # textbook: Wilson 95% for 5/10
    (0, 10, 0.0, 0.277533),         # 0 %: the upper end is z²/(n+z²), and the lower end exactly 0
    (10, 10, 0.722467, 1.0),
    (48, 100, 0.384646, 0.576834),
])
def test_wilson_interval_matches_hand_computed_values(k, n, low, high):
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(low, abs=1e-6) and hi == pytest.approx(high, abs=1e-6)


def test_paired_interval_matches_newcombe_by_hand():
    # Table: both right 30, only A 10, only B 2, both wrong 8 (n = 50): p_A = .80, p_B = .64, theta = .16.
    # Wilson: A [.669629, .887562], B [.501410, .758613]. phi = (30*8 - 10*2 - 50/2) / sqrt(40*10*32*18)
    # = 195/480 = .40625. Lower: .16 - sqrt(.130371² - 2*.40625*.130371*.118613 + .118613²) = .023980;
    # upper: .16 + sqrt(.087562² - 2*.40625*.087562*.138590 + .138590²) = .290439.
    assert newcombe_paired(30, 10, 2, 8) == pytest.approx((0.023980, 0.290439), abs=1e-6)
    # phi = 0 (4*1 = 2*2): the two Wilson half-widths of 6/9 combine in quadrature, symmetric about 0.
    assert newcombe_paired(4, 2, 2, 1) == pytest.approx((-0.378016, 0.378016), abs=1e-6)


def test_paired_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    for n, p_a, p_b, shared in [(60, 0.5, 0.42, 0.8), (300, 0.45, 0.40, 0.95), (40, 0.9, 0.85, 0.6)]:
        hits = 0
        for _ in range(800):
            u = rng.random(n)
            a = u < p_a
            b = np.where(rng.random(n) < shared, u < p_b, rng.random(n) < p_b)   # correlated, like two attacks
            low, high = paired_difference(a, b)["ci95"]
            hits += low <= p_a - p_b <= high
        assert 0.92 <= hits / 800 <= 0.995, (n, p_a, p_b, hits / 800)


def test_paired_interval_is_the_normal_one_on_many_points_in_range_on_few_and_narrower_than_unpaired():
    rng = np.random.default_rng(3)
    pgd = rng.random(4000) < 0.6
    worst = pgd & (rng.random(4000) < 0.8)           # the worst case only ever removes points
    gap = paired_difference(pgd, worst)
    low, high = gap["ci95"]
    se = (pgd.astype(float) - worst).std(ddof=1) / np.sqrt(pgd.size)
    assert low < gap["difference"] < high and abs((high - low) / 2 - Z95 * se) < 0.1 * Z95 * se
    same = np.array([True] * 10 + [False] * 6)       # few points, no difference: around 0, inside [-1, 1]
    gap = paired_difference(same, same)
    assert gap["difference"] == 0 and -1 <= gap["ci95"][0] < 0 < gap["ci95"][1] <= 1
    low, high = paired_difference(pgd[:200], worst[:200])["ci95"]   # pairing helps
    unpaired_low, unpaired_high = newcombe_unpaired(pgd[:200].mean(), 200, worst[:200].mean(), 200)
    assert high - low < unpaired_high - unpaired_low


def test_paired_needs_outcomes_on_the_same_points():
    with pytest.raises(ValueError, match="one length"):
        paired_difference(np.ones(5, bool), np.ones(6, bool))


@pytest.fixture(scope="module")
def audit():
    torch.set_num_threads(1)
    model, _ = golden_models()
    x, y = first_test_points(48)
    spec = build_spec("quick", dataset="mnist10k", eps=(0.1,), n_examples=48, batch_size=24)
    return evaluate(model, x, y, spec), x, y


def test_every_accuracy_in_the_results_has_its_interval(audit):
    results, _, _ = audit
    n = results["n"]
    assert results["intervals"]["single"].startswith("Wilson")
    low, high = results["clean_accuracy_ci95"]
    assert (low, high) == pytest.approx(wilson(round(results["clean_accuracy"] * n), n))
    rows = [*results["summary"], *results["worst_case"]]
    rows += [p for curve in results["curves"]["eps"] for p in curve["points"]]
    assert rows
    for row in rows:
        low, high = row["ci95"]
        assert low <= row["robust_accuracy"] <= high and high - low > 0
    # The CSV carries them next to each accuracy.
    header, clean_line, *_ = results_to_csv(results).splitlines()
    assert header.startswith("attack,eps,steps,restarts,alpha,robust_accuracy,n,ci95_low,ci95_high,")
    assert clean_line.split(",")[7] == f"{results['clean_accuracy_ci95'][0]:.6g}"


def test_the_pgd_gap_is_the_paired_difference_of_the_stored_bitsets(audit):
    results, _, _ = audit
    (gap,) = [g for g in results["gaps"] if g["second"] == "worst case" and g["n"] == results["n"]]
    bits = results["per_sample"]["bits"]
    pgd = decode_bits(bits[gap["first_key"]], results["n"])
    worst = decode_bits(bits[gap["second_key"]], results["n"])
    assert gap["difference"] == pytest.approx(pgd.mean() - worst.mean())
    assert gap["only_second"] == 0               # the worst case is never robust where PGD-20 is not
    assert gap["ci95"][0] <= gap["difference"] <= gap["ci95"][1]
    assert gap["method"].startswith("Newcombe")


def test_provenance_names_software_machine_seed_points_and_times(audit):
    results, x, y = audit
    prov = json.loads(json.dumps(results["provenance"]))
    assert torch.__version__.startswith(prov["software"]["torch"].split("+")[0])
    assert {"robaudit", "torch", "torchvision", "pyautoattack", "python", "git_commit"} <= set(prov["software"])
    assert prov["machine"]["device"] == "cpu" and prov["machine"]["precision"] == "fp32"
    assert prov["machine"]["threads"] >= 1
    assert prov["seed"] == 0 and prov["dataset"]["name"] == "mnist10k" and prov["dataset"]["n"] == 48
    expected = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()
    assert prov["dataset"]["points_sha256"] == expected
    assert prov["started_at"] <= prov["finished_at"]
    assert "mixed" not in prov


def test_shards_on_different_software_are_flagged_as_mixed():
    one = {"software": {"robaudit": "0.1.0", "pyautoattack": "0.2.0"}, "machine": {"device": "cuda:0"},
           "points_sha256": "ab", "started_at": "2026-01-01T10:00:00+00:00", "finished_at": "2026-01-01T10:05:00+00:00"}
    two = {**one, "software": {"robaudit": "0.1.0", "pyautoattack": "0.3.0"},
           "started_at": "2026-01-01T09:59:00+00:00", "finished_at": "2026-01-01T10:07:00+00:00"}
    prov = merge_provenance(dataset="cifar10", n=100, seed=3, shards=[one, two])
    assert prov["mixed"] == ["software"] and len(prov["software"]) == 2
    assert prov["machine"] == {"device": "cuda:0"}
    assert (prov["started_at"], prov["finished_at"]) == ("2026-01-01T09:59:00+00:00", "2026-01-01T10:07:00+00:00")


def test_a_check_whose_gap_is_within_noise_counts_one_level_milder_and_says_so():
    from robaudit.evaluation import Thresholds, run_diagnostics

    results = json.loads((Path(__file__).parent / "golden" / "audit_tiny.json").read_text())
    # On these 48 points PGD-CE leaves 4.2 pp more correct than PGD-CW at eps 0.1: over a 3 pp fail line,
    # but the paired interval of that gap reaches below 0, so C13 only warns, and says why.
    strict = run_diagnostics(results, Thresholds(c13_warn_gap_pp=1.0, c13_fail_gap_pp=3.0))
    c13 = next(c for c in strict["checks"] if c["id"] == "C13")
    low, high = c13["evidence"]["eps=0.1"]["gap_ci95_pp"]
    assert c13["evidence"]["eps=0.1"]["gap_pp"] > 3.0 and low < 0 < high
    assert c13["status"] == "warn" and "within noise" in c13["message"]
    assert "Newcombe" in c13["evidence"]["noise"]
