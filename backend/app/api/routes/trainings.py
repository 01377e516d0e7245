from __future__ import annotations

from robaudit.backend.app.api.job_routes import JobKindRoutes, job_routes
from robaudit.backend.app.schemas import TrainingCreate
from robaudit.backend.app.validation import validate_training

router = job_routes(JobKindRoutes(
    kind="training", schema=TrainingCreate,
    validate=lambda body, session, settings: validate_training(body, settings),
    create_doc="Queue a training job; the trained model is registered as a checkpoint when it finishes.",
    list_doc="List training jobs, newest first.",
    read_doc="Get a training job: status, progress, ETA, per-epoch metrics, produced checkpoint."))
