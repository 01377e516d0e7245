"""`robaudit serve`: the API on 127.0.0.1:8000 plus one embedded worker, until Ctrl-C.

With no configuration it keeps everything in the data folder: SQLite database,
SQLite broker (kombu's SQL transport), checkpoints, job state and the generated
API token. REDIS_URL and DATABASE_URL switch it to a Redis + PostgreSQL deployment
(more workers can then join with `robaudit worker`).
"""
from __future__ import annotations

import argparse
import signal

from robaudit.launch.service import EmbeddedService, announce, settings_for


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_serve(args: argparse.Namespace) -> int:
    # uvicorn handles SIGINT/SIGTERM while it runs, shuts down, then re-raises the signal with the handler
    # found before it started. These handlers turn both into KeyboardInterrupt, so serve_forever's cleanup
    # (stop the worker, requeue its job) runs; SIGTERM's default would end the process before it.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)

    settings = settings_for(args.data_dir)
    service = EmbeddedService(settings, host=args.host, port=args.port, worker=not args.no_worker)
    service.build_server()   # a bad data folder or database stops here, before anything is announced
    announce(settings, service.url)
    try:
        service.serve_forever()
    except KeyboardInterrupt:   # uvicorn re-raises the signal it handled; everything is stopped by now
        pass
    return 0


def register_serve(subparsers) -> None:
    p = subparsers.add_parser("serve", help="run the API and an embedded worker (Ctrl-C stops both)",
                              description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", default=None, help="database, broker, checkpoints, token (default ./var)")
    p.add_argument("--no-worker", action="store_true",
                   help="API only (workers run elsewhere with `robaudit worker`)")
    p.set_defaults(func=run_serve)
