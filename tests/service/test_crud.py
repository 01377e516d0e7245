"""The SQL layer on SQLite and on the running PostgreSQL: migrations, job state machine, idempotent
result storage, the evaluation store, reports."""
from __future__ import annotations

import base64
from datetime import timedelta

import numpy as np
from sqlalchemy import func, inspect, select

from robaudit.backend.app import crud, reports
from robaudit.backend.app.core.db import get_engine, run_migrations, session_factory
from robaudit.backend.app.models import EvalBatch, EvaluationResult, Job, utcnow


def _session(settings):
    settings.ensure_dirs()
    run_migrations(settings)
    return session_factory(settings)()


def _ckpt(s, sha="a" * 64):
    row, created = crud.create_checkpoint(session=s, sha256=sha, name="m", filename="m.safetensors",
                                          ext="safetensors", size_bytes=10,
                                          meta={"arch": "smallcnn", "dataset": "mnist10k", "num_classes": 10,
                                                "in_channels": 1, "hyperparameters": {"label_smoothing": 0.5},
                                                "method": "feature-scatter"},
                                          embedded_metadata=True)
    return row, created


def _bits(values) -> str:
    return base64.b64encode(np.packbits(np.asarray(values, bool), bitorder="little").tobytes()).decode()


def test_migrations_create_every_table_and_are_idempotent(any_db_settings):
    with _session(any_db_settings):
        pass
    run_migrations(any_db_settings)   # second start: nothing to do, no error
    tables = set(inspect(get_engine(any_db_settings)).get_table_names())
    assert {"checkpoints", "jobs", "evaluation_results", "sample_bitsets", "eval_batches", "reports",
            "report_evaluations", "workers", "alembic_version"} <= tables


def test_checkpoint_sha256_is_unique(any_db_settings):
    with _session(any_db_settings) as s:
        first, created = _ckpt(s)
        again, created_again = _ckpt(s)
        assert created and not created_again and again.id == first.id


def test_claim_fences_deliveries_and_caps_attempts(any_db_settings):
    with _session(any_db_settings) as s:
        ckpt, _ = _ckpt(s)
        job = crud.create_job(session=s, kind="evaluation", config={}, checkpoint_id=ckpt.id, max_attempts=2)
        current = job.task_id
        _, verdict = crud.claim_job(session=s, job_id=job.id, task_id="stale-copy", hostname="h", pid=1,
                                    stale_after_s=60)
        assert verdict == "superseded delivery"
        _, verdict = crud.claim_job(session=s, job_id=job.id, task_id=current, hostname="h", pid=1,
                                    stale_after_s=60)
        assert verdict == "run"
        # A redelivery while the first run is alive and beating is not run twice.
        _, verdict = crud.claim_job(session=s, job_id=job.id, task_id=current, hostname="other", pid=2,
                                    stale_after_s=60)
        assert verdict == "running elsewhere"
        # Same host, recorded pid dead (pool child killed): the redelivery takes over.
        _, verdict = crud.claim_job(session=s, job_id=job.id, task_id=current, hostname="h", pid=3,
                                    stale_after_s=60, pid_alive=lambda pid: False)
        assert verdict == "run"
        _, verdict = crud.claim_job(session=s, job_id=job.id, task_id=current, hostname="h", pid=4,
                                    stale_after_s=60, pid_alive=lambda pid: False)
        assert verdict == "too many attempts"
        s.expire_all()
        row = s.get(Job, job.id)
        assert row.status == "failed" and "gave up after 2 attempts" in row.error


def test_janitor_requeues_only_stale_running_jobs(any_db_settings):
    with _session(any_db_settings) as s:
        fresh = crud.create_job(session=s, kind="training", config={})
        stale = crud.create_job(session=s, kind="training", config={})
        queued = crud.create_job(session=s, kind="training", config={})
        for job in (fresh, stale):
            crud.claim_job(session=s, job_id=job.id, task_id=job.task_id, hostname="h", pid=1, stale_after_s=60)
        old_task = stale.task_id
        s.get(Job, stale.id).heartbeat_at = utcnow() - timedelta(seconds=120)
        s.commit()
        requeued = crud.requeue_stale(session=s, stale_after_s=60)
        assert [r[0] for r in requeued] == [stale.id]
        s.expire_all()
        row = s.get(Job, stale.id)
        assert row.status == "queued" and row.task_id == requeued[0][1] != old_task
        assert s.get(Job, fresh.id).status == "running" and s.get(Job, queued.id).status == "queued"
        # The old delivery may no longer write progress or finish the job.
        assert not crud.finish_job(session=s, job_id=stale.id, task_id=old_task, status="succeeded")


def test_restarted_worker_requeues_only_its_dead_jobs(any_db_settings):
    with _session(any_db_settings) as s:
        dead, alive, elsewhere = (crud.create_job(session=s, kind="training", config={}) for _ in range(3))
        for job, host, pid in ((dead, "w@a", 101), (alive, "w@a", 102), (elsewhere, "w@b", 103)):
            crud.claim_job(session=s, job_id=job.id, task_id=job.task_id, hostname=host, pid=pid, stale_after_s=60)
        orphans = crud.requeue_orphans(session=s, hostname="w@a", pid_alive=lambda pid: pid == 102)
        assert [o[0] for o in orphans] == [dead.id]
        s.expire_all()
        assert [s.get(Job, j.id).status for j in (dead, alive, elsewhere)] == ["queued", "running", "running"]


def test_cancel_and_retry_transitions(any_db_settings):
    with _session(any_db_settings) as s:
        job = crud.create_job(session=s, kind="training", config={})
        assert crud.request_cancel(session=s, job_id=job.id) == ("cancelled", job.task_id)
        assert crud.request_cancel(session=s, job_id=job.id)[0] == "finished"
        new_task = crud.prepare_retry(session=s, job_id=job.id)
        s.expire_all()
        row = s.get(Job, job.id)
        assert new_task and row.status == "queued" and row.task_id == new_task and not row.cancel_requested
        crud.claim_job(session=s, job_id=job.id, task_id=new_task, hostname="h", pid=1, stale_after_s=60)
        assert crud.request_cancel(session=s, job_id=job.id) == ("requested", None)
        assert crud.update_progress(session=s, job_id=job.id, task_id=new_task, current=1, total=2) is True
        assert crud.prepare_retry(session=s, job_id=job.id) is None   # running: not retryable


def test_results_and_bitsets_are_upserted_without_duplicates(any_db_settings):
    n = 13
    clean = [1] * 10 + [0] * 3
    pgd = [1, 0] * 5 + [0] * 3
    results = {"schema_version": 1, "n": n, "clean_accuracy": 10 / 13,
               "per_sample": {"n": n, "clean": _bits(clean),
                              "bits": {"pgd@eps=0.3/steps=20/restarts=1": _bits(pgd),
                                       "fgsm@eps=0.3/steps=-/restarts=1": _bits(clean),
                                       "worst-case@eps=0.3": _bits(pgd)}}}
    with _session(any_db_settings) as s:
        job = crud.create_job(session=s, kind="evaluation", config={})
        for _ in range(2):   # a redelivered job stores the same results again
            crud.store_results(session=s, job_id=job.id, results=results)
            s.commit()
        assert s.scalar(select(func.count()).select_from(EvaluationResult)) == 1
        rows = crud.list_bitsets(session=s, job_id=job.id)
        assert len(rows) == 4
        by_attack = {r.attack: r for r in rows}
        assert by_attack["worst-case"].eps == 0.3 and by_attack["clean"].eps == 0.0
        assert by_attack["pgd"].steps == 20 and by_attack["pgd"].eps == 0.3 and by_attack["pgd"].n == n
        assert by_attack["fgsm"].steps == 0
        decoded = np.unpackbits(np.frombuffer(by_attack["pgd"].bits, np.uint8), bitorder="little")[:n]
        assert decoded.tolist() == pgd


def test_bit_keys_map_to_stored_rows_as_before():
    """results.parse_bit_key's fields -> the NOT NULL key columns of sample_bitsets: steps 0 for
    "-" or none, restarts 0 when absent; subset worst-case keys (/first=m) and non-keys are skipped."""
    bits = _bits([1, 0, 1])
    keys = {"pgd@eps=0.3/steps=20/restarts=2": (0.3, 20, 2),
            "fgsm@eps=0.1/steps=-/restarts=1": (0.1, 0, 1),
            "square@eps=0.3/restarts=1": (0.3, 0, 1),
            "worst-case@eps=0.3": (0.3, 0, 0),
            "pgd@eps=1e-05/steps=7": (1e-05, 7, 0)}
    skipped = ["worst-case@eps=0.3/first=200", "pgd@eps=abc/steps=20/restarts=1", "pgd@eps=0.3/steps=x",
               "no-at-sign", "pgd@eps=0.3/steps=20/restarts=1/extra=1"]
    long_name = "a" * 80 + "@eps=0.3/steps=1/restarts=1"
    results = {"per_sample": {"n": 3, "clean": bits,
                              "bits": {**dict.fromkeys([*keys, *skipped, long_name], bits), "pgd@eps=0.2": 123}}}
    rows = list(crud.iter_bitsets(results))
    assert rows[0] == {"attack": "clean", "eps": 0.0, "steps": 0, "restarts": 0, "n": 3,
                       "bits": base64.b64decode(bits)}
    got = {(r["attack"], r["eps"], r["steps"], r["restarts"]) for r in rows[1:]}
    want = {(key.split("@")[0], *parts) for key, parts in keys.items()} | {("a" * 64, 0.3, 1, 1)}
    assert got == want and len(rows) == 1 + len(want)
    assert all(r["n"] == 3 and r["bits"] == base64.b64decode(bits) for r in rows)
    # Older results JSON kept the bitsets directly in per_sample, next to n and clean.
    flat = {"n": 3, "per_sample": {"clean": bits, "pgd@eps=0.3/steps=20/restarts=1": bits}}
    assert [(r["attack"], r["steps"], r["restarts"]) for r in crud.iter_bitsets(flat)] == [
        ("clean", 0, 0), ("pgd", 20, 1)]


def test_eval_store_is_unique_per_job_and_long_keys_work(any_db_settings):
    key = "batch/" + "x" * 900   # engine keys are fingerprints; longer than any VARCHAR we would pick
    with _session(any_db_settings) as s:
        job = crud.create_job(session=s, kind="evaluation", config={})
        assert crud.batch_get(session=s, job_id=job.id, key=key) is None
        crud.batch_put(session=s, job_id=job.id, key=key, value={"v": 1})
        crud.batch_put(session=s, job_id=job.id, key=key, value={"v": 2})
        assert crud.batch_get(session=s, job_id=job.id, key=key) == {"v": 2}
        assert s.scalar(select(func.count()).select_from(EvalBatch)) == 1


def test_report_payload_and_share_token_lookup(any_db_settings):
    with _session(any_db_settings) as s:
        ckpt, _ = _ckpt(s)
        a = crud.create_job(session=s, kind="evaluation", config={"spec_args": {}}, checkpoint_id=ckpt.id)
        b = crud.create_job(session=s, kind="evaluation", config={}, checkpoint_id=ckpt.id)
        crud.claim_job(session=s, job_id=a.id, task_id=a.task_id, hostname="h", pid=1, stale_after_s=60)
        crud.store_results(session=s, job_id=a.id, results={"clean_accuracy": 0.5})
        crud.finish_job(session=s, job_id=a.id, task_id=a.task_id, status="succeeded")
        report = crud.create_report(session=s, title="cmp", evaluation_ids=[b.id, a.id])
        other = crud.create_report(session=s, title="other", evaluation_ids=[a.id])
        assert len(report.id) == 8 and report.id.isalnum()
        public = crud.report_public(report, with_share=True)
        assert public["url"] == f"/reports/{report.id}" and public["share_url"].startswith("/share/")
        payload = reports.get_report_payload_by_token(s, report.share_token)
        assert payload["report"]["id"] == report.id and payload["report"]["title"] == "cmp"
        assert [e["id"] for e in payload["evaluations"]] == [b.id, a.id]
        first, second = payload["evaluations"]
        assert first["results"] is None and second["results"] == {"clean_accuracy": 0.5}
        assert second["checkpoint"]["method"] == "feature-scatter"
        assert second["checkpoint"]["label_smoothing"] == 0.5
        assert reports.get_report_payload_by_token(s, other.share_token)["report"]["id"] == other.id
        assert reports.get_report_payload_by_token(s, "nope") is None
        assert reports.get_report_payload_by_token(s, "") is None


def _finished_eval(s, ckpt_id: int, pgd20: float, aa: float) -> int:
    rows = [{"attack": "pgd", "eps": 0.3, "steps": 20, "restarts": 1, "robust_accuracy": pgd20, "n": 400},
            {"attack": "autoattack", "eps": 0.3, "steps": None, "restarts": 1, "robust_accuracy": aa, "n": 400}]
    results = {"clean_accuracy": 0.97, "n": 400, "config": {"eps": [0.3]}, "summary": rows,
               "worst_case": [{"eps": 0.3, "robust_accuracy": min(pgd20, aa), "n": 400}]}
    job = crud.create_job(session=s, kind="evaluation", config={}, checkpoint_id=ckpt_id)
    crud.claim_job(session=s, job_id=job.id, task_id=job.task_id, hostname="h", pid=1, stale_after_s=60)
    crud.store_results(session=s, job_id=job.id, results=results)
    crud.finish_job(session=s, job_id=job.id, task_id=job.task_id, status="succeeded")
    return job.id


def test_study_report_payload_carries_analysis_computed_from_stored_results(any_db_settings):
    with _session(any_db_settings) as s:
        ids = []
        for i, (delta, pgd20, aa) in enumerate([(0.0, 0.30, 0.28), (0.5, 0.70, 0.29)]):
            ckpt, _ = crud.create_checkpoint(
                session=s, sha256=str(i) * 64, name=f"fs {delta}", filename="m.safetensors", ext="safetensors",
                size_bytes=10, embedded_metadata=True,
                meta={"arch": "smallcnn", "dataset": "mnist10k", "num_classes": 10, "in_channels": 1,
                      "method": "feature-scatter", "hyperparameters": {"label_smoothing": delta}})
            ids.append(_finished_eval(s, ckpt.id, pgd20, aa))
        study = crud.create_report(session=s, title="study", evaluation_ids=ids, kind="label-smoothing-study")
        plain = crud.create_report(session=s, title="plain", evaluation_ids=ids)
        payload = reports.get_report_payload(session=s, report=study)
        assert payload["report"]["kind"] == "label-smoothing-study"
        answers = {c["question"]: c["answer"] for c in payload["study"]["conclusions"]}
        assert answers["Does PGD robustness rise with label smoothing?"] == "Yes"
        assert answers["Does the worst-case robustness (AutoAttack) rise with it too?"] == "No"
        assert [r["delta"] for r in payload["study"]["ours"]] == [0.0, 0.5]
        assert "study" not in reports.get_report_payload(session=s, report=plain)
