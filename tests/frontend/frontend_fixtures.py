"""Report payloads shaped like the service's GET /api/v1/reports/{id} answer, for the frontend tests.

The numbers are made up for rendering tests (they are never shown to users); their shape follows
robaudit.evaluation's results JSON and robaudit.backend.app.reports.get_report_payload. (A helper
module rather than a conftest.py: tests/frontend is not a package, so its name cannot shadow the frontend package.)
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

EPS = [0.1, 0.2, 0.3]


STEPS_GRID = (1, 2, 5, 10, 20, 50, 100)


def _row(attack: str, eps: float, acc: float, *, steps=None, restarts=1, alpha=None, n=200, **extra) -> dict:
    return {"attack": attack, "eps": eps, "steps": steps, "restarts": restarts, "alpha": alpha,
            "robust_accuracy": acc, "n": n, "key": f"{attack}@eps={eps:.6g}/steps={steps}/restarts={restarts}",
            **extra}


def _results(clean: float, pgd: dict[int, list[float]], aa: float | None, worst: list[float], *,
             fgsm: list[float], cw100: list[float] | None, verdict: str, checks: list[dict],
             pgd_steps_curve: list[float] | None = None) -> dict:
    """A results JSON shaped like robaudit.evaluation.engine's output (rows, curves, worst case)."""
    summary = []
    curves = {"eps": [], "steps": [], "restarts": [], "loss": []}
    for i, e in enumerate(EPS):
        summary.append(_row("rs-fgsm", e, fgsm[i], steps=1, alpha=e, loss="ce", random_start=True))
        for steps, accs in pgd.items():
            summary.append(_row("pgd", e, accs[i], steps=steps, alpha=e / 4, loss="ce", random_start=True,
                                **({"note": "read off the 100-step run"} if steps < 100 else {})))
        if cw100:
            summary.append(_row("cw", e, cw100[i], steps=100, alpha=e / 4, loss="cw", kappa=50.0))
    if pgd_steps_curve:
        curves["steps"].append({"attack": "pgd", "loss": "ce", "eps": 0.3, "alpha": 0.075, "max_steps": 100,
                                "points": [{"steps": k, "robust_accuracy": a, "key": f"pgd-steps-curve@{k}"}
                                           for k, a in zip(STEPS_GRID, pgd_steps_curve)]})
    if aa is not None:
        summary.append(_row("autoattack:apgd-ce", 0.3, aa + 0.08, cumulative=True,
                            note="AutoAttack after apgd-ce (cumulative over its earlier stages)"))
        summary.append(_row("autoattack", 0.3, aa, version="standard",
                            note="AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square"))
    return {
        "schema_version": 1,
        "dataset": "mnist10k",
        "n": 200,
        "num_classes": 10,
        "clean_accuracy": clean,
        "summary": summary,
        "worst_case": [{"eps": e, "robust_accuracy": w, "n": 200, "attacks": [], "key": f"worst-case@eps={e:.6g}"}
                       for e, w in zip(EPS, worst)],
        "curves": curves,
        "per_sample": {"n": 200, "clean": "//8=", "bits": {"pgd@eps=0.3": "AAA="}},
        "probes": {},
        "notes": [],
        "diagnostics": {"checks": checks, "verdict": verdict,
                        "reasons": [c["message"] for c in checks if c["status"] in ("warn", "fail")]},
        "config": {"preset": "paper", "dataset": "mnist10k", "n_examples": 200, "eps": [0.3, 0.1, 0.2],
                   "attacks": ["rs-fgsm", "pgd", "cw"], "steps": [20, 100]},
        "timing": {"total_seconds": 412.5, "stages": {"pgd": 300.0}},
    }


HEALTHY_CHECKS = [
    {"id": "C1", "name": "accuracy falls with ε", "status": "pass", "evidence": {"violations": 0},
     "message": "Robust accuracy never rises as ε grows."},
    {"id": "C4", "name": "more steps do not help", "status": "pass", "evidence": {"delta_pp": 0.5},
     "message": "PGD-100 is within 0.5 pp of PGD-20, so the attack has converged."},
    {"id": "C6", "name": "white-box beats black-box", "status": "skipped", "evidence": None,
     "message": "Square was not run in this preset."},
]
MASKED_CHECKS = [
    {"id": "C1", "name": "accuracy falls with ε", "status": "pass", "evidence": {"violations": 0},
     "message": "Robust accuracy never rises as ε grows."},
    {"id": "C4", "name": "more steps do not help", "status": "warn",
     "evidence": {"pgd20": 0.71, "pgd100": 0.52, "delta_pp": 19.0},
     "message": "PGD-100 finds 19 pp more adversarial points than PGD-20: the 20-step attack had not converged."},
    {"id": "C14", "name": "PGD vs strongest-ensemble gap", "status": "fail",
     "evidence": "PGD-20 71.0 % vs worst case 38.5 % at ε = 0.3 (gap 32.5 pp)",
     "message": "The gap to the worst case is far outside the range of models without gradient masking."},
]


def _checkpoint(cid: int, name: str, method: str, delta: float | None, history: list[dict]) -> dict:
    hp = {"method": method, "epochs": len(history), "eps": 0.3}
    if delta is not None:
        hp["label_smoothing"] = delta
    return {"id": cid, "name": name, "sha256": "ab" * 32, "arch": "smallcnn", "dataset": "mnist10k",
            "method": method, "label_smoothing": delta, "eps": 0.3, "epochs": len(history),
            "hyperparameters": hp, "metrics": {}, "history": history, "source": "training",
            "training_job_id": cid + 100, "created_at": "2026-09-01T10:00:00+00:00"}


def _history(clean: list[float], pgd: list[float], lrs: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "clean_acc": c, "pgd20_acc": p, "lr": lr, "train_loss": 1.0 / (i + 1)}
            for i, (c, p, lr) in enumerate(zip(clean, pgd, lrs))]


def make_payload() -> dict:
    fs = _results(0.982, {20: [0.93, 0.84, 0.71], 100: [0.90, 0.72, 0.52]}, 0.385, [0.88, 0.66, 0.385],
                  fgsm=[0.95, 0.90, 0.83], cw100=[0.89, 0.69, 0.45], verdict="unreliable", checks=MASKED_CHECKS,
                  pgd_steps_curve=[0.90, 0.86, 0.80, 0.75, 0.71, 0.58, 0.52])
    pgd_at = _results(0.975, {20: [0.92, 0.83, 0.62], 100: [0.92, 0.82, 0.615]}, None, [0.91, 0.80, 0.60],
                      fgsm=[0.94, 0.88, 0.74], cw100=None, verdict="reliable", checks=HEALTHY_CHECKS)
    return {
        "report": {"id": "Ab3dE5gH", "title": "FS vs PGD-AT on MNIST", "created_at": "2026-09-02T12:00:00+00:00",
                   "url": "/reports/Ab3dE5gH"},
        "evaluations": [
            {"id": 7, "name": "fs audit", "status": "succeeded", "config": {}, "summary": {}, "error": None,
             "checkpoint": _checkpoint(3, "fs-mnist-d0.5", "feature-scatter", 0.5,
                                       _history([0.9, 0.95, 0.97, 0.98], [0.5, 0.62, 0.7, 0.71],
                                                [0.01, 0.01, 0.001, 0.001])),
             "results": fs},
            {"id": 8, "name": "pgd-at audit", "status": "succeeded", "config": {}, "summary": {}, "error": None,
             "checkpoint": _checkpoint(4, "pgd-at-mnist", "pgd-at", 0.0, []),
             "results": pgd_at},
        ],
    }


@pytest.fixture
def payload() -> dict:
    return copy.deepcopy(make_payload())


def make_study_payload() -> dict:
    """The two-model payload as a label-smoothing study report: payload["study"] is computed by the
    study's own analysis (robaudit.study.analyze), so its shape is the real one."""
    from robaudit.study import StudyModel, analyze

    payload = make_payload()
    models = []
    for ev in payload["evaluations"]:
        ck = ev["checkpoint"]
        models.append(StudyModel(name=ck["name"], method=ck["method"], delta=ck["label_smoothing"],
                                 history=ck["history"], results=[ev["results"]], lr_milestones=[3]))
    payload["report"]["kind"] = "label-smoothing-study"
    payload["study"] = analyze(models, 0.3)
    return payload


# --------------------------------------------------------------------------- the demo's report

STUDY_REPORT = Path(__file__).resolve().parents[2] / "docs" / "study-mnist10k" / "report.json"
# What `make demo` compares: a standard model, PGD-AT and Feature Scattering, each audited (audit preset).
DEMO_EVALUATIONS = ((18, "standard"), (16, "PGD-AT"), (8, "Feature Scattering"))


def demo_payload() -> dict:
    """The demo's three-model comparison from real results: the audit-preset evaluations of the
    MNIST study (docs/study-mnist10k/report.json, an export: no per-point records), renamed as the
    demo names its models. A plain comparison report: no study section."""
    study = json.loads(STUDY_REPORT.read_text(encoding="utf-8"))
    by_id = {ev["id"]: ev for ev in study["evaluations"]}
    evaluations = []
    for eid, name in DEMO_EVALUATIONS:
        ev = copy.deepcopy(by_id[eid])
        ev["checkpoint"]["name"] = name
        evaluations.append(ev)
    return {"report": {"id": "DemoRep1", "title": "standard vs PGD-AT vs Feature Scattering on MNIST",
                       "created_at": "2026-11-28T09:00:00+00:00", "url": "/reports/DemoRep1", "kind": "comparison"},
            "evaluations": evaluations}


def seed_report(app, payload: dict, title: str | None = None) -> dict:
    """The payload's checkpoints, finished evaluations and one report, written with the service's own
    crud functions into the app's database. Returns {"evaluations": [ids], "report", "share"}."""
    from robaudit.backend.app import crud

    ids: dict = {"evaluations": []}
    with app.state.Session() as s:
        for i, ev in enumerate(payload["evaluations"]):
            ck = ev["checkpoint"]
            meta = {"arch": ck.get("arch") or "smallcnn", "num_classes": 10, "in_channels": 1, "mean": [0.0],
                    "std": [1.0], "dataset": ck.get("dataset") or "mnist10k", "method": ck.get("method"),
                    "hyperparameters": ck.get("hyperparameters") or {},
                    "metrics": {"history": ck.get("history") or []}}
            row, _ = crud.create_checkpoint(session=s, sha256=f"{i + 1:064x}", name=ck["name"],
                                            filename="m.safetensors", ext="safetensors", size_bytes=1000, meta=meta,
                                            embedded_metadata=True)
            job = crud.create_job(session=s, kind="evaluation", name=ev.get("name") or ck["name"],
                                  checkpoint_id=row.id, config={"spec_args": {"preset": "audit"}})
            crud.store_results(session=s, job_id=job.id, results=ev["results"])
            assert crud.finish_job(session=s, job_id=job.id, task_id=job.task_id, status="succeeded")
            ids["evaluations"].append(job.id)
        report = crud.create_report(session=s, title=title or payload["report"]["title"],
                                    evaluation_ids=ids["evaluations"])
        ids.update(report=report.id, share=report.share_token)
    return ids
