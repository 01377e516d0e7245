"""`robaudit worker`: join a deployment (Redis broker + PostgreSQL), possibly on another host.

Runs `celery -A robaudit.worker.celery_app worker -P prefork -c 1 --max-tasks-per-child 1` in
a fresh process (exec), so the worker's parent never inherits this CLI's imports (the
`robaudit` command itself loads torch) and never initialises CUDA. ``celery_argv`` and
``worker_env`` are also how `robaudit serve` starts its embedded worker.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from robaudit.backend.app.core.config import Settings


def celery_argv(settings: Settings, *, concurrency: int = 1, queues: list[str] | None = None,
                hostname: str | None = None, loglevel: str = "INFO") -> list[str]:
    argv = [sys.executable, "-m", "celery", "-A", "robaudit.worker.celery_app", "worker",
            "-P", "prefork", "-c", str(concurrency), "--max-tasks-per-child", "1",
            "-Q", ",".join(queues or [settings.queue]), "-l", loglevel]
    if hostname:
        argv += ["-n", hostname]
    if not settings.broker_is_redis:
        # The SQL transport has no broadcast: gossip, mingle and remote control would only poll.
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return argv


def worker_env(settings: Settings, hostname: str | None = None) -> dict[str, str]:
    env = {**os.environ, **settings.to_env()}
    if hostname:
        env["ROBAUDIT_WORKER_NAME"] = hostname
    return env


def run_worker(args: argparse.Namespace) -> int:
    overrides = {}
    if args.api_url:
        overrides["api_url"] = args.api_url.rstrip("/")
    if args.data_dir:
        overrides["data_dir"] = Path(args.data_dir)
    if args.device:
        overrides["device"] = args.device
    if args.queues:
        overrides["queue"] = args.queues.split(",")[0]
    settings = Settings.from_env(**overrides)
    if not settings.redis_url:
        print("robaudit worker: REDIS_URL is not set; this command joins a Redis + PostgreSQL deployment "
              "(for a single machine, `robaudit serve` runs the API with an embedded worker)", file=sys.stderr)
        return 2
    if settings.is_sqlite and not args.allow_sqlite:
        print("robaudit worker: DATABASE_URL is not set; point it at the deployment's PostgreSQL "
              "(postgresql+psycopg://user:pass@host:5432/db)", file=sys.stderr)
        return 2
    if settings.api_url and not (settings.api_token or settings.token_file.exists()):
        print("robaudit worker: --api-url needs the API token in ROBAUDIT_API_TOKEN", file=sys.stderr)
        return 2
    settings.ensure_dirs()
    # Deliberately here (SQLAlchemy, Alembic): `robaudit` imports this module for every command.
    from robaudit.backend.app.core.db import wait_for_db

    wait_for_db(settings)
    hostname = args.hostname or f"robaudit@{socket.gethostname()}"
    queues = args.queues.split(",") if args.queues else None
    argv = celery_argv(settings, concurrency=args.concurrency, queues=queues, hostname=hostname,
                       loglevel=args.loglevel)
    os.execve(argv[0], argv, worker_env(settings, hostname))
    return 0  # not reached


def register_worker(subparsers) -> None:
    p = subparsers.add_parser("worker", help="run a job worker that joins a Redis + PostgreSQL deployment",
                              description=__doc__.splitlines()[0])
    p.add_argument("--api-url", default=os.environ.get("ROBAUDIT_API_URL"),
                   help="the API's base URL (e.g. http://api-host:8000); checkpoints are fetched and "
                        "trained checkpoints uploaded through it, so no shared filesystem is needed")
    p.add_argument("--concurrency", type=int, default=1, help="jobs at once (default 1: one worker per GPU)")
    p.add_argument("--queues", default=None, help="comma-separated queues to consume (default: robaudit)")
    p.add_argument("--data-dir", default=None, help="local cache for checkpoints and job state (default ./var)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--hostname", default=None, help="worker name (default robaudit@<host>)")
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--allow-sqlite", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run_worker)
