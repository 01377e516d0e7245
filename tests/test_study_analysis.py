"""The study's conclusions are computed from its numbers: change the numbers, the words change."""
from robaudit.study import StudyModel, analyze

EPS = 0.3


def results(pgd20, pgd100, cw100, aa, n=500, clean=0.98):
    rows = [{"attack": "pgd", "eps": EPS, "steps": 20, "restarts": 1, "robust_accuracy": pgd20, "n": n},
            {"attack": "pgd", "eps": EPS, "steps": 100, "restarts": 1, "robust_accuracy": pgd100, "n": n},
            {"attack": "cw", "eps": EPS, "steps": 100, "restarts": 1, "robust_accuracy": cw100, "n": n},
            {"attack": "autoattack", "eps": EPS, "steps": None, "restarts": 1, "robust_accuracy": aa, "n": n}]
    return {"clean_accuracy": clean, "n": n, "summary": rows,
            "worst_case": [{"eps": EPS, "robust_accuracy": min(pgd20, pgd100, cw100, aa), "n": n}],
            "diagnostics": {"verdict": "gradient masking suspected" if pgd20 - aa > 0.1
                            else "no sign of gradient masking"}}


def fs(delta, *args):
    return StudyModel(name=f"fs-{delta}", method="feature-scatter", delta=delta, results=[results(*args)])


def answers(study):
    return {c["question"].split("(")[0].strip(): c["answer"] for c in study["conclusions"]}


def test_pgd_rises_but_autoattack_does_not_means_pgd_overfitting():
    models = [fs(0.0, .40, .38, .36, .30), fs(0.1, .55, .53, .45, .31), fs(0.5, .75, .72, .60, .31),
              StudyModel("pgd-at", "pgd-at", None, results=[results(.70, .69, .69, .67)])]
    study = analyze(models, EPS)
    got = answers(study)
    assert got["Does PGD robustness rise with label smoothing?"] == "Yes"
    assert got["Does the worst-case robustness"] == "No"
    assert got["Does the method overfit PGD?"] == "Yes"
    text = " ".join(c["text"] for c in study["conclusions"])
    assert "75.0 % at delta = 0.5" in text and "44.0 pp" in text  # numbers, not canned words
    assert "across deltas the gap is 10.0 pp at 0, 24.0 pp at 0.1, 44.0 pp at 0.5" in text


def test_real_gains_read_as_real_robustness():
    models = [fs(0.0, .40, .39, .39, .38), fs(0.5, .70, .69, .69, .67),
              StudyModel("pgd-at", "pgd-at", None, results=[results(.70, .69, .69, .67)])]
    got = answers(analyze(models, EPS))
    assert got["Does PGD robustness rise with label smoothing?"] == "Yes"
    assert got["Does the worst-case robustness"] == "Yes"
    assert got["Does the method overfit PGD?"] == "No"


def test_differences_inside_sampling_noise_are_not_called_a_rise():
    models = [fs(0.0, .50, .50, .50, .49, 50), fs(0.5, .54, .54, .53, .52, 50)]
    got = answers(analyze(models, EPS))
    assert got["Does PGD robustness rise with label smoothing?"] == "No"


def test_robust_overfitting_after_lr_drop_is_detected_from_history():
    history = [{"epoch": e, "pgd20_acc": a, "eval_examples": 500}
               for e, a in [(1, .3), (2, .5), (3, .7), (4, .5), (5, .4)]]
    m = StudyModel("fs", "feature-scatter", 0.5, history=history, results=[results(.4, .4, .4, .3)],
                   lr_milestones=[2, 4])
    concl = analyze([m], EPS)["conclusions"]
    after = [c for c in concl if c["question"].startswith("Does robust accuracy fall")]
    assert after and after[0]["answer"] == "Yes" and "70.0 %" in after[0]["text"]
    table = analyze([m], EPS)["ours"][0]
    assert table["epoch"] == 5 and abs(table["gap_pgd20_strongest_pp"] - 10.0) < 1e-9


def test_lr_decay_question_judges_every_feature_scattering_model():
    def model(delta, accs):
        history = [{"epoch": e, "pgd20_acc": a, "eval_examples": 500} for e, a in enumerate(accs, start=1)]
        return StudyModel(f"fs-{delta}", "feature-scatter", delta, history=history,
                          results=[results(accs[-1], accs[-1], accs[-1], accs[-1] - .05)], lr_milestones=[2, 3])

    steady = [model(0.0, [.3, .4, .42, .41, .41]), model(0.5, [.2, .3, .33, .33, .34])]
    concl = {c["question"]: c for c in analyze(steady, EPS)["conclusions"]}
    lr = concl["Does robust accuracy fall after the lr decays?"]
    assert lr["answer"] == "No" and "from epoch 3" in lr["text"]
    assert lr["text"].index("delta = 0.5") < lr["text"].index("delta = 0:")   # the paper's delta first
    falling = [model(0.0, [.3, .4, .42, .41, .41]), model(0.5, [.2, .3, .60, .45, .30])]
    conclusions = {c["question"]: c for c in analyze(falling, EPS)["conclusions"]}
    lr = conclusions["Does robust accuracy fall after the lr decays?"]
    assert lr["answer"] == "Yes" and "1 of 2" in lr["text"] and "30.0 pp lower" in lr["text"]


def _b64(bits):
    import base64

    import numpy as np
    return base64.b64encode(np.packbits(np.asarray(bits, np.uint8), bitorder="little").tobytes()).decode()


def test_gap_reads_pgd20_on_the_points_autoattack_ran_on():
    # PGD-20 keeps 60 % of 500 points but only 40 % of the first 200, where AutoAttack (30 %) ran:
    # the gap is 10 pp on the same points, not the 30 pp the two headline numbers suggest.
    pgd_bits = [1] * 80 + [0] * 120 + [1] * 220 + [0] * 80
    aa_bits = [1] * 60 + [0] * 140
    res = {"clean_accuracy": .98, "n": 500,
           "summary": [{"attack": "pgd", "eps": EPS, "steps": 20, "restarts": 1, "robust_accuracy": .6, "n": 500,
                        "key": "pgd@eps=0.3/steps=20/restarts=1"},
                       {"attack": "autoattack", "eps": EPS, "steps": None, "restarts": 1, "robust_accuracy": .3,
                        "n": 200, "subset": "first 200 test points", "key": "autoattack@eps=0.3/steps=-/restarts=1"}],
           "worst_case": [{"eps": EPS, "robust_accuracy": .3, "n": 500}],
           "per_sample": {"n": 500, "bits": {"pgd@eps=0.3/steps=20/restarts=1": _b64(pgd_bits)},
                          "subset_bits": {"autoattack@eps=0.3/steps=-/restarts=1": {"n": 200, "bits": _b64(aa_bits)}}}}
    study = analyze([StudyModel("fs", "feature-scatter", 0.5, results=[res])], EPS)
    row = study["ours"][0]
    assert row["pgd20"] == .6 and row["autoattack"] == .3
    assert row["gap_points"] == "same" and row["gap_n"] == 200 and abs(row["pgd20_on_gap_points"] - .4) < 1e-9
    assert abs(row["gap_pgd20_strongest_pp"] - 10.0) < 1e-9
    # A paired difference: 20 of the 200 points separate the two attacks.
    assert abs(row["gap_se_pp"] - 100 * (0.1 * 0.9 * 200 / 199) ** 0.5 / 200 ** 0.5) < 1e-9
    overfit = [c for c in study["conclusions"] if c["question"] == "Does the method overfit PGD?"][0]
    assert overfit["answer"] == "Yes" and "40.0 % on the 200 points AutoAttack ran on" in overfit["text"]

    # Without bitsets (results from before they were kept) the headline numbers are compared, and say so.
    del res["per_sample"]
    row = analyze([StudyModel("fs", "feature-scatter", 0.5, results=[res])], EPS)["ours"][0]
    assert row["gap_points"] == "headline" and abs(row["gap_pgd20_strongest_pp"] - 30.0) < 1e-9


def _audit(pgd_bits, aa_bits, n=200):
    return {"clean_accuracy": 1.0, "n": n,
            "summary": [{"attack": "pgd", "eps": EPS, "steps": 20, "restarts": 1, "n": n,
                         "robust_accuracy": sum(pgd_bits) / n, "key": "pgd"},
                        {"attack": "autoattack", "eps": EPS, "steps": None, "restarts": 1, "n": n,
                         "robust_accuracy": sum(aa_bits) / n, "key": "aa"}],
            "worst_case": [{"eps": EPS, "robust_accuracy": sum(aa_bits) / n, "n": n}],
            "per_sample": {"n": n, "bits": {"pgd": _b64(pgd_bits), "aa": _b64(aa_bits)}}}


def test_gaps_are_compared_with_the_noise_of_the_gap_not_of_the_accuracies():
    # FS: PGD-20 keeps 44 of 200, AutoAttack 10 (gap 17 pp). PGD-AT: 117 and 101 (gap 8 pp). As two
    # accuracies, PGD-20's noise alone is about +/- 9 pp; the gaps themselves are much less noisy.
    fs_model = StudyModel("fs", "feature-scatter", 0.5,
                          results=[_audit([1] * 44 + [0] * 156, [1] * 10 + [0] * 190)])
    pgd_model = StudyModel("pgd-at", "pgd-at", None,
                           results=[_audit([1] * 117 + [0] * 83, [1] * 101 + [0] * 99)])
    study = analyze([fs_model, pgd_model], EPS)
    overfit = [c for c in study["conclusions"] if c["question"] == "Does the method overfit PGD?"][0]
    assert "9.0 pp wider than PGD-AT's (beyond the noise of +/- 6.6 pp)" in overfit["text"], overfit["text"]
