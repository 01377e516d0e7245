"""A bounded load test of the embedded default: 50 clients for 60 s against `robaudit serve` (SQLite, SQL
broker, one embedded worker) while an evaluation runs on the same machine. Exits 1 on any error.

    .venv/bin/python benchmarks/bench_load.py                          # 50 clients, 60 s
    .venv/bin/python benchmarks/bench_load.py --clients 50 --duration 10   # what CI runs (tests/service/test_faults.py)

Each client is a thread with its own HTTP connection, sending requests back to back (no think time), in
turn: GET /api/v1/health, GET /api/v1/evaluations, the HTML page of a finished evaluation and its results
JSON; all open reads, as a browser or a dashboard polling the service sends them. Before the load, a
small evaluation is run to the end (what the page and the results show), then a large one is submitted;
it must be running from the first request to the last (else the run is void and exits 1). An error is a
failed request or any status but 200. Prints requests, errors and p50/p95/p99 latency per endpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-load-token"
# The large evaluation: far more than a minute of work on any CPU, cancelled after the load.
LONG_EVALUATION = {"preset": "audit", "n_examples": 10000, "batch_size": 8}
SMALL_EVALUATION = {"preset": "quick", "n_examples": 32, "batch_size": 16}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trained_checkpoint(path: Path) -> Path:
    """A SmallCNN trained on 2,048 digits (a few seconds): most test points correct, so attacks do real work."""
    import torch
    import torch.nn.functional as F

    import robaudit
    from robaudit.models import CheckpointMetadata, build_model, save_checkpoint

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0])
    x, y = robaudit.load_dataset("mnist10k", "train")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for i in range(0, 2048, 64):
        opt.zero_grad()
        F.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
        opt.step()
    meta = CheckpointMetadata(arch="smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0],
                              dataset="mnist10k", input_size=28, method="standard",
                              hyperparameters={"label_smoothing": 0.0, "epochs": 1})
    return save_checkpoint(path, model.eval(), meta)


class Serve:
    """`robaudit serve` on a fresh data folder, as a user starts it (plus a token, so the bench can write)."""

    def __init__(self, data_dir: Path, port: int):
        self.log_path = data_dir.parent / "serve.log"
        self.log = self.log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "ROBAUDIT_DATA_DIR")}
        # One thread for the job, so that the API keeps a core of its own on a small machine.
        env.update(ROBAUDIT_API_TOKEN=TOKEN, ROBAUDIT_TORCH_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "robaudit.cli", "serve", "--port", str(port),
                                      "--data-dir", str(data_dir)], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.base + "/api/v1", timeout=120,
                                   headers={"Authorization": f"Bearer {TOKEN}"})
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"serve exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if self.client.get("/health").json().get("workers"):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit("serve did not come up within 180 s")
            time.sleep(0.3)

    def job(self, job_id: int) -> dict:
        return self.client.get(f"/jobs/{job_id}").json()

    def wait(self, job_id: int, until: tuple[str, ...], timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in until:
                return job
            if job["status"] in ("failed", "cancelled") or time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} is {job['status']}, waited for {until}: {job}")
            time.sleep(0.2)

    def stop(self) -> int:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def client_loop(base: str, paths: list[str], offset: int, deadline: float, out: list) -> None:
    """Requests back to back until ``deadline``; appends (path, seconds, error or None)."""
    with httpx.Client(base_url=base, timeout=30) as client:
        i = offset
        while time.monotonic() < deadline:
            path = paths[i % len(paths)]
            i += 1
            started = time.perf_counter()
            try:
                status = client.get(path).status_code
                error = None if status == 200 else f"HTTP {status}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            out.append((path, time.perf_counter() - started, error))


def percentiles(seconds: list[float]) -> tuple[float, float, float]:
    if len(seconds) < 2:
        value = seconds[0] if seconds else float("nan")
        return value, value, value
    q = statistics.quantiles(seconds, n=100, method="inclusive")
    return q[49], q[94], q[98]


def report(samples: list, duration: float) -> dict:
    by_path: dict[str, list] = {}
    for path, seconds, error in samples:
        by_path.setdefault(path, []).append((seconds, error))
    rows = {"all": [(s, e) for _, s, e in samples], **by_path}
    print(f"{'endpoint':<34} {'requests':>9} {'errors':>7} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    table = {}
    for name, values in rows.items():
        seconds = [s for s, _ in values]
        errors = sum(1 for _, e in values if e)
        p50, p95, p99 = percentiles(seconds)
        table[name] = {"requests": len(values), "errors": errors, "p50_ms": p50 * 1000, "p95_ms": p95 * 1000,
                       "p99_ms": p99 * 1000}
        print(f"{name:<34} {len(values):>9} {errors:>7} {len(values) / duration:>7.1f} {p50 * 1000:>8.1f} "
              f"{p95 * 1000:>8.1f} {p99 * 1000:>8.1f}")
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    ap.add_argument("--checkpoint", default=None, help="a robaudit checkpoint to evaluate (default: train one)")
    ap.add_argument("--json", default=None, help="also write the table here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="robaudit-load-") as tmp:
        tmp_path = Path(tmp)
        checkpoint = Path(args.checkpoint) if args.checkpoint else trained_checkpoint(tmp_path / "trained.safetensors")
        serve = Serve(tmp_path / "var", free_port())
        try:
            with checkpoint.open("rb") as fh:
                ckpt = serve.client.post("/checkpoints", files={"file": (checkpoint.name, fh)}).json()
            small = serve.client.post("/evaluations", json={"checkpoint_id": ckpt["id"], **SMALL_EVALUATION}).json()
            serve.wait(small["id"], ("succeeded",), timeout=300)
            long = serve.client.post("/evaluations", json={"checkpoint_id": ckpt["id"], **LONG_EVALUATION}).json()
            serve.wait(long["id"], ("running",), timeout=120)

            paths = ["/api/v1/health", "/api/v1/evaluations", f"/evaluations/{small['id']}",
                     f"/api/v1/evaluations/{small['id']}/results"]
            samples: list = []   # list.append is atomic: the threads share it
            deadline = time.monotonic() + args.duration
            threads = [threading.Thread(target=client_loop, args=(serve.base, paths, i, deadline, samples))
                       for i in range(args.clients)]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.monotonic() - started
            still = serve.job(long["id"])
            serve.client.post(f"/jobs/{long['id']}/cancel")
        finally:
            code = serve.stop()

    print(f"{args.clients} clients for {took:.0f} s against robaudit serve (SQLite, embedded worker), "
          f"while evaluation {long['id']} ran ({still['progress']['current']}/{still['progress']['total']} "
          f"work units done by the end)")
    table = report(samples, took)
    errors = [(p, e) for p, _, e in samples if e]
    for path, error in errors[:10]:
        print(f"error: GET {path}: {error}")
    if args.json:
        Path(args.json).write_text(json.dumps({"clients": args.clients, "duration_s": took, "endpoints": table},
                                              indent=2))
    failed = False
    if errors:
        print(f"FAIL: {len(errors)} errors")
        failed = True
    if still["status"] != "running":
        print(f"FAIL: the evaluation was {still['status']} by the end of the load, not running: the run is void")
        failed = True
    if code != 0:
        print(f"FAIL: serve exited with {code} on SIGTERM")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
