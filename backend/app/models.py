"""SQLAlchemy 2 tables. The job row is the source of truth for every training and evaluation.

Shared by the API and the worker; the initial Alembic migration mirrors these definitions.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

JOB_KINDS = ("training", "evaluation")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Stored as naive UTC (SQLite keeps no zone), always returned timezone-aware."""
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime()}


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(300))      # as uploaded
    ext: Mapped[str] = mapped_column(String(16))            # safetensors | pt | onnx
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    arch: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str | None] = mapped_column(String(64))
    embedded_metadata: Mapped[bool] = mapped_column(Boolean, default=False)
    # The full CheckpointMetadata dict (arch_kwargs, num_classes, mean/std, hyperparameters, metrics...).
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str] = mapped_column(String(16), default="upload")   # upload | training
    # Plain column, not a foreign key: jobs already reference checkpoints, and a cycle buys nothing.
    training_job_id: Mapped[int | None] = mapped_column(Integer, index=True)
    # The clean accuracy measured at upload ({"ran": true, "accuracy", "n", "chance", "suspect", "message"}
    # or {"ran": false, "reason"}); null for checkpoints stored before the check existed or made by training.
    clean_check: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The catalogue architecture recognition matched the file's keys and shapes to, if it did.
    detected_arch: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    """A user's own test set, checked at upload and stored in one normal form (robaudit.own_data.save_test_set)
    at data_dir/test_sets/<sha256>.npz: the sha256 is the stored form's, so it names the images and labels."""
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(300))       # as uploaded
    source_sha256: Mapped[str] = mapped_column(String(64))   # of the uploaded file's bytes
    n: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    dtype: Mapped[str] = mapped_column(String(16))           # uint8 | float32
    num_classes: Mapped[int] = mapped_column(Integer)
    class_names: Mapped[list[Any] | None] = mapped_column(JSON)
    # The declared resize / centre crop applied at upload ({"resize": 256, "crop": 224}), if any.
    transform: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    size_bytes: Mapped[int] = mapped_column(BigInteger)      # of the stored form
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_kind_created", "kind", "created_at"),
                      Index("ix_jobs_status", "status"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    name: Mapped[str | None] = mapped_column(String(200))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    progress_current: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    stage: Mapped[str | None] = mapped_column(String(200))
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[list[Any]] = mapped_column(JSON, default=list)        # per-epoch training history
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)   # headline numbers for lists
    error: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Fencing: only the delivery whose Celery task id is current may run the job.
    task_id: Mapped[str | None] = mapped_column(String(64))
    queue: Mapped[str | None] = mapped_column(String(100))
    worker_hostname: Mapped[str | None] = mapped_column(String(255))
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))          # evaluated model
    surrogate_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))           # transfer source
    output_checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))   # trained model
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"), index=True)     # own test set
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()

    checkpoint: Mapped[Checkpoint | None] = relationship(foreign_keys=[checkpoint_id])
    output_checkpoint: Mapped[Checkpoint | None] = relationship(foreign_keys=[output_checkpoint_id])
    # A sharded evaluation's shards (none for training jobs and for evaluations not yet planned).
    shards: Mapped[list[EvalShard]] = relationship(order_by="EvalShard.index", lazy="selectin", viewonly=True)


class EvaluationResult(Base):
    """The evaluation engine's results JSON, one row per evaluation job."""
    __tablename__ = "evaluation_results"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    results: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SampleBitset(Base):
    """Which test points stayed correct under one attack setting: bit i = point i (little-endian packbits)."""
    __tablename__ = "sample_bitsets"
    __table_args__ = (UniqueConstraint("job_id", "attack", "eps", "steps", "restarts", name="uq_bitset_setting"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attack: Mapped[str] = mapped_column(String(64))
    eps: Mapped[float] = mapped_column(Float)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    n: Mapped[int] = mapped_column(Integer)
    bits: Mapped[bytes] = mapped_column(LargeBinary)


class EvalShard(Base):
    """One shard of an evaluation: a range of whole batches that one worker computes (docs/service.md).

    Its own delivery fencing (task_id), attempt count and heartbeat, like a job's; the job row sums
    the shards' progress, and the merge step runs once every shard has succeeded.
    """
    __tablename__ = "eval_shards"
    __table_args__ = (UniqueConstraint("job_id", "index", name="uq_eval_shard_index"),
                      Index("ix_eval_shards_status", "status"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    task_id: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker_hostname: Mapped[str | None] = mapped_column(String(255))
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    done: Mapped[float] = mapped_column(Float, default=0.0)       # work units (robaudit.evaluation.progress)
    total: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(200))
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON)   # robaudit.evaluation.ShardOutcome, once done
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()


class EvalBatch(Base):
    """Completed evaluation batches (the engine's store protocol) so a redelivered job resumes."""
    __tablename__ = "eval_batches"
    __table_args__ = (UniqueConstraint("job_id", "key_hash", name="uq_eval_batch_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(Text)
    # Keys are the engine's (long) fingerprints; uniqueness is enforced on their sha256.
    key_hash: Mapped[str] = mapped_column(String(64))
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Report(Base):
    __tablename__ = "reports"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    # None once the share link is revoked; rotating replaces it, so the old link stops working at once.
    share_token: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # "comparison", or "label-smoothing-study" (the payload then carries robaudit.study's analysis).
    kind: Mapped[str] = mapped_column(String(32), default="comparison", server_default="comparison")

    items: Mapped[list[ReportEvaluation]] = relationship(order_by="ReportEvaluation.position",
                                                           cascade="all, delete-orphan", lazy="selectin")


class ReportEvaluation(Base):
    __tablename__ = "report_evaluations"

    report_id: Mapped[str] = mapped_column(ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)


class WorkerSeen(Base):
    """Workers announce themselves here (the embedded broker has no broadcast for `celery inspect`)."""
    __tablename__ = "workers"

    hostname: Mapped[str] = mapped_column(String(255), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[str] = mapped_column(String(500), default="")
    device: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    online: Mapped[bool] = mapped_column(Boolean, default=True)
