"""API read latency under 50 concurrent clients with 1,000 stored evaluations, and dispatch latency
(submit -> the job row says running) with a real worker.

    .venv/bin/python benchmarks/bench_api.py                        # embedded: SQLite + SQL broker
    .venv/bin/python benchmarks/bench_api.py --backend redis-postgres
    .venv/bin/python benchmarks/bench_api.py --backend both --json bench_api.json

The API runs under uvicorn in its own process (one worker process, as `robaudit serve` runs
it); the load generator is asyncio + httpx in this process. Rows are seeded directly in SQL:
1,000 succeeded evaluations, each with a results JSON shaped like the engine's (quick preset).
Dispatch latency is measured by polling the job row every 5 ms from submit to `running`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robaudit.backend.app import crud  # noqa: E402
from robaudit.backend.app.core.config import Settings  # noqa: E402
from robaudit.backend.app.core.db import run_migrations, session_factory  # noqa: E402
from robaudit.backend.app.models import Checkpoint, EvaluationResult, Job, utcnow  # noqa: E402

TOKEN = "bench-token"
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def fake_results(rng: random.Random, n: int = 500) -> dict:
    import base64

    bits = lambda: base64.b64encode(rng.randbytes((n + 7) // 8)).decode()
    keys = [f"{a}@eps=0.3/steps={s}/restarts=1" for a in ("pgd", "cw") for s in (1, 2, 5, 10, 20)] + \
        ["fgsm@eps=0.3/steps=1/restarts=1"]
    summary = [{"attack": k.split("@")[0], "eps": 0.3, "steps": int(k.split("steps=")[1].split("/")[0]),
                "restarts": 1, "alpha": 0.075, "robust_accuracy": rng.random(), "n": n, "key": k} for k in keys]
    return {"schema_version": 1, "dataset": "mnist10k", "n": n, "clean_accuracy": rng.random(),
            "summary": summary, "worst_case": [{"eps": 0.3, "robust_accuracy": rng.random(), "n": n}],
            "curves": {"steps": {"pgd": [[s, rng.random()] for s in (1, 2, 5, 10, 20)]}},
            "per_sample": {"n": n, "clean": bits(), "bits": {k: bits() for k in keys}},
            "diagnostics": {"verdict": "no sign of gradient masking", "checks": []}}


def seed(settings: Settings, count: int) -> list[int]:
    settings.ensure_dirs()
    run_migrations(settings)
    rng = random.Random(0)
    Session = session_factory(settings)
    with Session() as s:
        ckpt = Checkpoint(sha256=uuid.uuid4().hex * 2, name="bench", filename="bench.safetensors",
                          ext="safetensors", size_bytes=1, arch="smallcnn", dataset="mnist10k",
                          meta={"arch": "smallcnn", "dataset": "mnist10k", "num_classes": 10, "in_channels": 1},
                          embedded_metadata=True)
        s.add(ckpt)
        s.flush()
        jobs = [Job(kind="evaluation", status="succeeded", config={"spec_args": {"preset": "quick"}},
                    checkpoint_id=ckpt.id, task_id=str(uuid.uuid4()), progress_current=100, progress_total=100,
                    summary={"clean_accuracy": rng.random(), "pgd20_accuracy": rng.random()},
                    metrics=[], finished_at=utcnow()) for _ in range(count)]
        s.add_all(jobs)
        s.flush()
        s.add_all([EvaluationResult(job_id=j.id, results=fake_results(rng)) for j in jobs])
        s.commit()
        return [j.id for j in jobs]


def start_api(settings: Settings, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, **settings.to_env(), "ROBAUDIT_API_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "robaudit.backend.app.main:app_from_env",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            env=env, cwd=str(ROOT), stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"API did not start; see {log}")


async def load(base: str, ids: list[int], clients: int, per_client: int) -> dict[str, dict]:
    endpoints = {
        "GET /evaluations?limit=50": lambda r: "/evaluations?limit=50",
        "GET /evaluations/{id}": lambda r: f"/evaluations/{r.choice(ids)}",
        "GET /evaluations/{id}/results": lambda r: f"/evaluations/{r.choice(ids)}/results",
        "GET /jobs?status=succeeded&limit=100": lambda r: "/jobs?status=succeeded&limit=100",
    }
    out = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        for name, make in endpoints.items():
            latencies: list[float] = []
            errors = 0

            # make and latencies bound now: each endpoint's clients finish within its iteration anyway.
            async def one_client(k: int, make=make, latencies=latencies):
                nonlocal errors
                r = random.Random(k)
                for _ in range(per_client):
                    t0 = time.perf_counter()
                    try:
                        resp = await client.get(make(r))
                        errors += resp.status_code != 200
                    except httpx.HTTPError:   # counted, not fatal: a reset under load is a result too
                        errors += 1
                    latencies.append(time.perf_counter() - t0)

            await client.get(make(random.Random(0)))   # warm-up
            t0 = time.perf_counter()
            await asyncio.gather(*(one_client(k) for k in range(clients)))
            wall = time.perf_counter() - t0
            q = statistics.quantiles(latencies, n=100)
            out[name] = {"requests": len(latencies), "errors": errors, "p50_ms": round(q[49] * 1000, 1),
                         "p95_ms": round(q[94] * 1000, 1), "rps": round(len(latencies) / wall, 1)}
            print(f"  {name:<40} p50 {out[name]['p50_ms']:>7.1f} ms  p95 {out[name]['p95_ms']:>7.1f} ms  "
                  f"{out[name]['rps']:>6.1f} req/s  errors {errors}", flush=True)
    return out


def dispatch_latency(settings: Settings, base: str, data: Path, runs: int) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from service.conftest import WorkerProcess, save_smallcnn  # the tests' real worker helper

    worker = WorkerProcess(settings, f"bench-{uuid.uuid4().hex[:6]}@localhost", data / "worker.log").start()
    Session = session_factory(settings)
    samples = []
    try:
        worker.wait_ready()
        path = save_smallcnn(data / "m.safetensors")
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as c:
            with path.open("rb") as fh:
                ckpt = c.post("/checkpoints", files={"file": ("m.safetensors", fh)}).json()
            for _ in range(runs):
                t0 = time.perf_counter()
                job = c.post("/evaluations", json={"checkpoint_id": ckpt["id"], "attacks": ["fgsm"],
                                                   "n_examples": 8}).json()
                while True:
                    with Session() as s:
                        status = s.get(Job, job["id"]).status
                    if status != "queued":
                        break
                    time.sleep(0.005)
                samples.append(time.perf_counter() - t0)
                while c.get(f"/jobs/{job['id']}").json()["status"] not in crud.FINISHED:
                    time.sleep(0.1)
                time.sleep(3.0)   # idle worker: the replacement pool child (max_tasks_per_child=1) is up
    finally:
        worker.stop()
    ms = sorted(x * 1000 for x in samples)
    result = {"runs": runs, "p50_ms": round(statistics.median(ms), 1), "max_ms": round(ms[-1], 1),
              "samples_ms": [round(x, 1) for x in ms]}
    print(f"  dispatch (POST -> running)                p50 {result['p50_ms']:>7.1f} ms  "
          f"max {result['max_ms']:>7.1f} ms  over {runs} jobs", flush=True)
    return result


def run(backend: str, args) -> dict:
    data = Path(tempfile.mkdtemp(prefix=f"bench-api-{backend}-"))
    schema = None
    kwargs = {}
    if backend == "redis-postgres":
        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        kwargs = {"database_url": f"{PG_URL}?options=-csearch_path%3D{schema}", "redis_url": REDIS_URL}
    settings = Settings(data_dir=data / "data", api_token=TOKEN, queue=f"bench-{uuid.uuid4().hex[:6]}",
                        heartbeat_interval_s=1.0, device="cpu", **kwargs)
    print(f"{backend}: seeding {args.evaluations} evaluations ...", flush=True)
    ids = seed(settings, args.evaluations)
    port = 18000 + random.Random().randrange(1000)
    api = start_api(settings, port, data / "api.log")
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        print(f"{backend}: {args.clients} concurrent clients x {args.requests} requests per endpoint", flush=True)
        reads = asyncio.run(load(base, ids, args.clients, args.requests))
        dispatch = dispatch_latency(settings, base, data, args.dispatch_runs)
    finally:
        api.terminate()
        api.wait(15)
        if schema:
            import psycopg

            with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return {"reads": reads, "dispatch": dispatch, "evaluations": args.evaluations, "clients": args.clients}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["embedded", "redis-postgres", "both"], default="embedded")
    p.add_argument("--evaluations", type=int, default=1000)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--requests", type=int, default=20, help="requests per client per endpoint")
    p.add_argument("--dispatch-runs", type=int, default=8)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    backends = ["embedded", "redis-postgres"] if args.backend == "both" else [args.backend]
    report = {b: run(b, args) for b in backends}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
