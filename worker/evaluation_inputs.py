"""What an evaluation step loads: the spec, the model(s) and the test points, and the SQL store of its batches.

Imports torch and the science: only the task bodies import it, in the pool child.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import torch
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

import robaudit
from robaudit.backend.app import crud
from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.core.db import session_factory
from robaudit.backend.app.models import Checkpoint, Job
from robaudit.evaluation import build_spec, prepare
from robaudit.evaluation.engine import Prepared
from robaudit.evaluation.presets import EvalSpec
from robaudit.models.checkpoint import CheckpointMetadata, load_checkpoint
from robaudit.own_data import load_test_set
from robaudit.worker.transfer import ensure_local, ensure_local_test_set

log = logging.getLogger("robaudit.worker")


# How long a batch read or write waits for an unreachable database (a restart, a failover) before the
# step fails; heartbeats keep failing meanwhile, so past ROBAUDIT_STALE_AFTER the janitor takes over anyway.
DB_OUTAGE_WAIT_S = 60.0
T = TypeVar("T")


class SqlStore:
    """The evaluation engine's store protocol over the eval_batches table (unique per job and key).

    Every shard of a job writes its own keys into it; the merge reads them all back. A database that
    stops answering (restarted mid-job) pauses the evaluation until it is back, instead of failing this
    delivery: both calls are idempotent (the write is an upsert), so retrying them is safe.
    """

    def __init__(self, settings: Settings, job_id: int):
        self.Session, self.job_id = session_factory(settings), job_id

    def _patient(self, call: Callable[[Session], T]) -> T:
        deadline = time.monotonic() + DB_OUTAGE_WAIT_S
        delay = 0.2
        while True:
            try:
                with self.Session() as s:
                    return call(s)
            except (OperationalError, InterfaceError) as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("job %s: database unreachable (%s); retrying in %.1f s", self.job_id,
                            str(exc).splitlines()[0][:200], delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def get(self, key: str) -> dict | None:
        return self._patient(lambda s: crud.batch_get(session=s, job_id=self.job_id, key=key))

    def put(self, key: str, value: dict) -> None:
        self._patient(lambda s: crud.batch_put(session=s, job_id=self.job_id, key=key, value=value))


def device_for(settings: Settings) -> str:
    if settings.device != "auto":
        return settings.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_model(settings: Settings, checkpoint: Checkpoint, device: str):
    path = ensure_local(settings, checkpoint.sha256, checkpoint.ext)
    fallback = None if checkpoint.embedded_metadata else CheckpointMetadata.from_dict(checkpoint.meta)
    model, _ = load_checkpoint(path, metadata=fallback, device=device)
    return model


def load_evaluation(settings: Settings, job_id: int, config: dict[str, Any]) -> Prepared:
    """The job's model, surrogate and test points, and its spec with the batch size resolved: found on this
    device by the planner when it is "auto", then the planned one for every shard and the merge."""
    device = device_for(settings)
    with session_factory(settings)() as s:
        job = s.get_one(Job, job_id)
        target = job.checkpoint
        if target is None:
            raise RuntimeError(f"evaluation job {job_id} names no checkpoint")
        surrogate = s.get(Checkpoint, job.surrogate_id) if job.surrogate_id else None
    model = _load_model(settings, target, device)
    surrogate_model = _load_model(settings, surrogate, device) if surrogate is not None else None
    spec = spec_for(config)
    plan = config.get("plan")
    if plan:   # every shard uses the batch size the planner fixed: batches must be the same everywhere
        spec = replace(spec, batch_size=plan["batch_size"])
    own = config.get("own_dataset")
    if own:
        data = load_test_set(ensure_local_test_set(settings, own["sha256"]), own["name"])
        x, y = data.float_images(spec.n_examples), torch.from_numpy(data.y[:spec.n_examples])
    else:
        x, y = robaudit.load_dataset(config["spec_args"]["dataset"], "test", data_dir=settings.datasets_dir,
                                     limit=spec.n_examples)   # only the evaluated points (imagenet decodes no more)
    return prepare(model, x, y, spec, surrogate_model, resolve_batch_size_here=not plan)


def spec_for(config: dict[str, Any]) -> EvalSpec:
    """The job's spec; on an uploaded test set it is named after it (results and provenance name the data),
    while the registry dataset in spec_args still set its default eps."""
    spec = build_spec(**config["spec_args"])
    own = config.get("own_dataset")
    return replace(spec, dataset=own["name"]) if own else spec


def name_own_dataset(results: dict[str, Any], config: dict[str, Any]) -> None:
    """What the results say about an uploaded test set: its name, sha256 and size (as `--data` writes them)."""
    own = config.get("own_dataset")
    if not own:
        return
    results["test_points"] = f"the first {results['n']} of the {own['n']} points in {own['name']}"
    results["provenance"]["dataset"].update(file_sha256=own["sha256"], file_points=own["n"], dataset_id=own["id"])
