"""Service settings, read once from the environment (see docs/service.md, "Environment").

A plain frozen dataclass rather than pydantic-settings: one less dependency, and
tests build their own ``Settings(...)`` and hand it to ``create_app(settings)``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

API_V1_STR = "/api/v1"
DEFAULT_QUEUE = "robaudit"


def _env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _normalise_db_url(url: str) -> str:
    # Same convenience as the template: plain postgres URLs get the psycopg 3 driver.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./var")
    database_url: str | None = None        # default: SQLite file in data_dir
    redis_url: str | None = None           # None: embedded broker (kombu SQLAlchemy transport on SQLite)
    api_token: str | None = None           # None: generated once and kept in data_dir/api_token
    reads_require_token: bool = False
    max_upload_mb: float = 1024.0
    # Every request body except a multipart checkpoint upload: job and report requests are small.
    max_json_kb: float = 256.0
    # Results pushed from elsewhere (POST /evaluations/import) carry per-point bitsets: larger.
    max_import_mb: float = 16.0
    # Own test sets (POST /datasets): the upload, what it may decompress to (zip members, npz arrays and
    # decoded pixels each), and its number of images.
    max_dataset_upload_mb: float = 1024.0
    max_dataset_mb: float = 2048.0
    max_dataset_images: int = 100_000
    # What one job may ask for (422 past a cap; validation.py): generous for real CIFAR-10 work
    # (WRN-34-10 has 46 M parameters), far below what would hold a worker for years or exhaust it.
    max_epochs: int = 1000
    max_batch_size: int = 4096             # training and evaluation
    max_train_examples: int = 1_000_000    # a training's n_train
    max_eval_examples: int = 100_000       # an evaluation's n_examples, a training's eval_examples
    max_attack_steps: int = 1000           # training's inner maximisation, evaluation's attack steps
    max_model_depth: int = 200             # arch_kwargs "depth" (checked before the model is built)
    max_model_params: int = 500_000_000
    max_queued_jobs: int = 200             # 429 past it: a flood of requests cannot fill the queue
    validate_timeout_s: float = 120.0
    # The clean-accuracy check after an upload (500 test points through the model, in a subprocess).
    clean_check_timeout_s: float = 300.0
    # Memory cap of the subprocesses that read uploaded files (models/sandbox.py): room for the largest
    # upload loaded twice (file and network) plus torch itself.
    validate_memory_mb: float = 8192.0
    # Celery: the hard limit bounds one job; the visibility timeout must exceed it.
    task_time_limit_s: int = 48 * 3600
    task_soft_time_limit_s: int | None = None   # default: hard limit minus 5 minutes
    max_attempts: int = 3
    queue: str = DEFAULT_QUEUE
    # A running job whose heartbeat is older than this is presumed dead and requeued.
    stale_after_s: float = 120.0
    heartbeat_interval_s: float = 10.0
    janitor_interval_s: float = 30.0
    # A queued job or shard that idle workers of its queue have not taken for this long is reported
    # (/health degraded) and sent again: its message was lost, or the worker that got it is stuck.
    unclaimed_after_s: float = 120.0
    progress_interval_s: float = 1.0
    api_url: str | None = None             # workers on other hosts fetch/upload checkpoints here
    device: str = "auto"                   # worker compute device: auto, cpu, cuda, cuda:1, ...
    torch_threads: int | None = None       # worker CPU threads per job (None: torch's default)
    datasets_dir: Path | None = None       # torchvision datasets (mnist10k is bundled)
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    # Where browsers reach the service (e.g. https://audit.example.org): share URLs are built on it,
    # never on a request's Host header. None: share URLs are paths (/share/<token>).
    public_url: str | None = None

    def __post_init__(self) -> None:
        # Accept str paths from any caller (CLI arguments, tests).
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.public_url:
            object.__setattr__(self, "public_url", self.public_url.rstrip("/"))
        if self.datasets_dir is not None:
            object.__setattr__(self, "datasets_dir", Path(self.datasets_dir))

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        data_dir = Path(os.environ.get("ROBAUDIT_DATA_DIR") or "./var")
        soft = os.environ.get("ROBAUDIT_TASK_SOFT_TIME_LIMIT")
        values: dict[str, Any] = dict(
            data_dir=data_dir,
            database_url=os.environ.get("DATABASE_URL") or None,
            redis_url=os.environ.get("REDIS_URL") or None,
            api_token=os.environ.get("ROBAUDIT_API_TOKEN") or None,
            reads_require_token=_env_bool("ROBAUDIT_READS_REQUIRE_TOKEN"),
            max_upload_mb=_env_float("ROBAUDIT_MAX_UPLOAD_MB", 1024.0),
            max_json_kb=_env_float("ROBAUDIT_MAX_JSON_KB", 256.0),
            max_dataset_upload_mb=_env_float("ROBAUDIT_MAX_DATASET_UPLOAD_MB", 1024.0),
            max_dataset_mb=_env_float("ROBAUDIT_MAX_DATASET_MB", 2048.0),
            max_dataset_images=int(_env_float("ROBAUDIT_MAX_DATASET_IMAGES", 100_000)),
            max_import_mb=_env_float("ROBAUDIT_MAX_IMPORT_MB", 16.0),
            max_epochs=int(_env_float("ROBAUDIT_MAX_EPOCHS", 1_000)),
            max_batch_size=int(_env_float("ROBAUDIT_MAX_BATCH_SIZE", 4_096)),
            max_train_examples=int(_env_float("ROBAUDIT_MAX_TRAIN_EXAMPLES", 1_000_000)),
            max_eval_examples=int(_env_float("ROBAUDIT_MAX_EVAL_EXAMPLES", 100_000)),
            max_attack_steps=int(_env_float("ROBAUDIT_MAX_ATTACK_STEPS", 1_000)),
            max_model_depth=int(_env_float("ROBAUDIT_MAX_MODEL_DEPTH", 200)),
            max_model_params=int(_env_float("ROBAUDIT_MAX_MODEL_PARAMS", 500_000_000)),
            max_queued_jobs=int(_env_float("ROBAUDIT_MAX_QUEUED_JOBS", 200)),
            validate_timeout_s=_env_float("ROBAUDIT_VALIDATE_TIMEOUT", 120.0),
            clean_check_timeout_s=_env_float("ROBAUDIT_CLEAN_CHECK_TIMEOUT", 300.0),
            validate_memory_mb=_env_float("ROBAUDIT_VALIDATE_MEMORY_MB", 8192.0),
            task_time_limit_s=int(_env_float("ROBAUDIT_TASK_TIME_LIMIT", 48 * 3600)),
            task_soft_time_limit_s=int(soft) if soft else None,
            max_attempts=int(_env_float("ROBAUDIT_MAX_ATTEMPTS", 3)),
            queue=os.environ.get("ROBAUDIT_QUEUE") or DEFAULT_QUEUE,
            stale_after_s=_env_float("ROBAUDIT_STALE_AFTER", 120.0),
            heartbeat_interval_s=_env_float("ROBAUDIT_HEARTBEAT_INTERVAL", 10.0),
            janitor_interval_s=_env_float("ROBAUDIT_JANITOR_INTERVAL", 30.0),
            unclaimed_after_s=_env_float("ROBAUDIT_UNCLAIMED_AFTER", 120.0),
            progress_interval_s=_env_float("ROBAUDIT_PROGRESS_INTERVAL", 1.0),
            api_url=(os.environ.get("ROBAUDIT_API_URL") or "").rstrip("/") or None,
            device=os.environ.get("ROBAUDIT_DEVICE") or "auto",
            torch_threads=(int(os.environ["ROBAUDIT_TORCH_THREADS"]) if os.environ.get("ROBAUDIT_TORCH_THREADS")
                           else None),
            datasets_dir=Path(os.environ["ROBAUDIT_DATASETS_DIR"]) if os.environ.get("ROBAUDIT_DATASETS_DIR") else None,
            cors_origins=tuple(o.strip() for o in os.environ.get("ROBAUDIT_CORS_ORIGINS", "").split(",") if o.strip()),
            public_url=(os.environ.get("ROBAUDIT_PUBLIC_URL") or "").rstrip("/") or None,
        )
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes) -> Settings:
        return replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The environment that makes Settings.from_env() in a child process equal to this."""
        env = {
            "ROBAUDIT_DATA_DIR": str(self.data_dir),
            "DATABASE_URL": self.sqlalchemy_url,
            "ROBAUDIT_READS_REQUIRE_TOKEN": "1" if self.reads_require_token else "0",
            "ROBAUDIT_MAX_UPLOAD_MB": str(self.max_upload_mb),
            "ROBAUDIT_MAX_JSON_KB": str(self.max_json_kb),
            "ROBAUDIT_MAX_DATASET_UPLOAD_MB": str(self.max_dataset_upload_mb),
            "ROBAUDIT_MAX_DATASET_MB": str(self.max_dataset_mb),
            "ROBAUDIT_MAX_DATASET_IMAGES": str(self.max_dataset_images),
            "ROBAUDIT_MAX_IMPORT_MB": str(self.max_import_mb),
            "ROBAUDIT_MAX_EPOCHS": str(self.max_epochs),
            "ROBAUDIT_MAX_BATCH_SIZE": str(self.max_batch_size),
            "ROBAUDIT_MAX_TRAIN_EXAMPLES": str(self.max_train_examples),
            "ROBAUDIT_MAX_EVAL_EXAMPLES": str(self.max_eval_examples),
            "ROBAUDIT_MAX_ATTACK_STEPS": str(self.max_attack_steps),
            "ROBAUDIT_MAX_MODEL_DEPTH": str(self.max_model_depth),
            "ROBAUDIT_MAX_MODEL_PARAMS": str(self.max_model_params),
            "ROBAUDIT_MAX_QUEUED_JOBS": str(self.max_queued_jobs),
            "ROBAUDIT_VALIDATE_TIMEOUT": str(self.validate_timeout_s),
            "ROBAUDIT_CLEAN_CHECK_TIMEOUT": str(self.clean_check_timeout_s),
            "ROBAUDIT_VALIDATE_MEMORY_MB": str(self.validate_memory_mb),
            "ROBAUDIT_TASK_TIME_LIMIT": str(self.task_time_limit_s),
            "ROBAUDIT_TASK_SOFT_TIME_LIMIT": str(self.soft_time_limit_s),
            "ROBAUDIT_MAX_ATTEMPTS": str(self.max_attempts),
            "ROBAUDIT_QUEUE": self.queue,
            "ROBAUDIT_STALE_AFTER": str(self.stale_after_s),
            "ROBAUDIT_HEARTBEAT_INTERVAL": str(self.heartbeat_interval_s),
            "ROBAUDIT_JANITOR_INTERVAL": str(self.janitor_interval_s),
            "ROBAUDIT_UNCLAIMED_AFTER": str(self.unclaimed_after_s),
            "ROBAUDIT_PROGRESS_INTERVAL": str(self.progress_interval_s),
            "ROBAUDIT_DEVICE": self.device,
        }
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        if self.api_token:
            env["ROBAUDIT_API_TOKEN"] = self.api_token
        if self.api_url:
            env["ROBAUDIT_API_URL"] = self.api_url
        if self.public_url:
            env["ROBAUDIT_PUBLIC_URL"] = self.public_url
        if self.datasets_dir:
            env["ROBAUDIT_DATASETS_DIR"] = str(self.datasets_dir)
        if self.torch_threads:
            env["ROBAUDIT_TORCH_THREADS"] = str(self.torch_threads)
        return env

    # Derived values -----------------------------------------------------------------
    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return _normalise_db_url(self.database_url)
        return f"sqlite:///{(self.data_dir / 'robaudit.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def broker_url(self) -> str:
        if self.redis_url:
            return self.redis_url
        return f"sqla+sqlite:///{(self.data_dir / 'broker.sqlite').resolve()}"

    @property
    def broker_is_redis(self) -> bool:
        return self.broker_url.startswith(("redis://", "rediss://", "redis+socket://"))

    @property
    def soft_time_limit_s(self) -> int:
        if self.task_soft_time_limit_s:
            return self.task_soft_time_limit_s
        return max(1, self.task_time_limit_s - min(300, self.task_time_limit_s // 10))

    @property
    def visibility_timeout_s(self) -> int:
        # Above the hard limit, so Redis never redelivers a job that is still running.
        return self.task_time_limit_s + 3600

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_kb * 1024)

    @property
    def max_import_bytes(self) -> int:
        return int(self.max_import_mb * 1024 * 1024)

    @property
    def max_dataset_upload_bytes(self) -> int:
        return int(self.max_dataset_upload_mb * 1024 * 1024)

    @property
    def max_dataset_bytes(self) -> int:
        return int(self.max_dataset_mb * 1024 * 1024)

    @property
    def test_sets_dir(self) -> Path:
        """Own test sets, stored by sha256 (not ``datasets_dir``: that is where torchvision datasets live)."""
        return self.data_dir / "test_sets"

    @property
    def checkpoints_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    @property
    def token_file(self) -> Path:
        return self.data_dir / "api_token"

    def ensure_dirs(self) -> None:
        for path in (self.data_dir, self.checkpoints_dir, self.test_sets_dir, self.jobs_dir, self.tmp_dir):
            path.mkdir(parents=True, exist_ok=True)
