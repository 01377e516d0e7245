"""One evaluation on 1 worker against the same evaluation sharded over 2 workers (Redis + PostgreSQL).

    .venv/bin/python benchmarks/bench_shards.py                       # audit, 1,000 digits, AA on all
    .venv/bin/python benchmarks/bench_shards.py --n 200 --json out.json

The workload is the `audit` preset on the first N mnist10k test digits with AutoAttack on all of
them, evaluated through the API by real `celery worker` processes with one torch thread each: first
by one worker (one shard), then by two (one shard each). Wall time is submit -> succeeded. The
merged results of both runs must be identical (everything but `timing`); the merge step's own cost
is `timing.merge_seconds`. The model is a SmallCNN trained here for a few seconds (standard
training, ~90 % clean): enough correct points for every attack to have work, cheap to make.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import robaudit  # noqa: E402
from robaudit.backend.app import crud  # noqa: E402
from robaudit.backend.app.core.config import Settings  # noqa: E402
from robaudit.backend.app.core.db import session_factory  # noqa: E402
from robaudit.launch.service import EmbeddedService  # noqa: E402
from robaudit.launch.worker import celery_argv, worker_env  # noqa: E402
from robaudit.models import CheckpointMetadata, build_model, save_checkpoint  # noqa: E402

TOKEN = "bench-token"
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def train_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0])
    x, y = robaudit.load_dataset("mnist10k", "train")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for i in range(0, 4096, 64):
        opt.zero_grad()
        F.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
        opt.step()
    meta = CheckpointMetadata(arch="smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0],
                              dataset="mnist10k", input_size=28, method="standard",
                              hyperparameters={"label_smoothing": 0.0})
    return save_checkpoint(path, model.eval(), meta)


def start_worker(settings: Settings, name: str, log: Path):
    import subprocess

    return subprocess.Popen(celery_argv(settings, hostname=name), env=worker_env(settings, name),
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_workers(settings: Settings, names: set[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_factory(settings)() as s:
            if names <= {w.hostname for w in crud.list_workers_seen(session=s, within_s=settings.stale_after_s)}:
                return
        time.sleep(0.3)
    raise SystemExit(f"workers {names} did not come up")


def stop(procs) -> None:
    import signal

    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.wait(60)
        except Exception:
            os.killpg(proc.pid, signal.SIGKILL)


def run(settings: Settings, workers: int, checkpoint: Path, body: dict, logs: Path) -> tuple[float, dict, dict]:
    names = {f"bench{i}-{uuid.uuid4().hex[:4]}@bench" for i in range(workers)}
    procs = [start_worker(settings, name, logs / f"{name}.log") for name in sorted(names)]
    service = EmbeddedService(settings, port=_free_port(), worker=False, log_level="warning")
    service.start_background()
    try:
        wait_workers(settings, names)
        with httpx.Client(base_url=service.url + "/api/v1", timeout=120,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            with checkpoint.open("rb") as fh:
                ckpt = client.post("/checkpoints", files={"file": (checkpoint.name, fh, "application/octet-stream")})
            ckpt_id = ckpt.json()["id"]   # 201, or 200 when the second run uploads the same file again
            started = time.monotonic()
            job = client.post("/evaluations", json={"checkpoint_id": ckpt_id, **body}).json()
            while True:
                state = client.get(f"/jobs/{job['id']}").json()
                if state["status"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.5)
            wall = time.monotonic() - started
            if state["status"] != "succeeded":
                raise SystemExit(f"evaluation ended {state['status']}: {state['error']}")
            results = client.get(f"/evaluations/{job['id']}/results").json()
    finally:
        service.stop()
        stop(procs)
    return wall, state, results


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="test points (default 1000)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args()

    schema = f"robaudit_bench_{uuid.uuid4().hex[:8]}"
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        with tempfile.TemporaryDirectory(prefix="robaudit-bench-shards-") as tmp:
            tmp_path = Path(tmp)
            sep = "&" if "?" in PG_URL else "?"
            settings = Settings(data_dir=tmp_path / "data", api_token=TOKEN, redis_url=REDIS_URL,
                                database_url=f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}",
                                queue=f"robaudit-bench-{uuid.uuid4().hex[:6]}", torch_threads=1, device="cpu",
                                heartbeat_interval_s=2.0, progress_interval_s=1.0)
            settings.ensure_dirs()
            checkpoint = train_checkpoint(tmp_path / "standard.safetensors")
            body = {"preset": "audit", "n_examples": args.n, "batch_size": args.batch_size, "aa_examples": 0}
            one_wall, one_job, one = run(settings, 1, checkpoint, body, tmp_path)
            print(f"1 worker : {one_wall:7.1f} s  ({len(one_job['shards'])} shard)", flush=True)
            two_wall, two_job, two = run(settings, 2, checkpoint, body, tmp_path)
            print(f"2 workers: {two_wall:7.1f} s  ({len(two_job['shards'])} shards: "
                  f"{[(s['start'], s['end'], s['worker']) for s in two_job['shards']]})", flush=True)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    identical = {k: v for k, v in one.items() if k != "timing"} == {k: v for k, v in two.items() if k != "timing"}
    report = {
        "n": args.n, "batch_size": args.batch_size, "clean_accuracy": one["clean_accuracy"],
        "one_worker_seconds": round(one_wall, 1), "two_workers_seconds": round(two_wall, 1),
        "ratio": round(two_wall / one_wall, 3), "identical_results": identical,
        "merge_seconds": {"one": one["timing"]["merge_seconds"], "two": two["timing"]["merge_seconds"]},
        "shard_seconds": {"one": [s["seconds"] for s in one["timing"]["shards"]],
                          "two": [s["seconds"] for s in two["timing"]["shards"]]},
    }
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if not identical:
        raise SystemExit("the sharded results differ from the one-worker results")


if __name__ == "__main__":
    main()
