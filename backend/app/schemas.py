"""Pydantic request/response models. Constraints here are the first line of validation
(and what schemathesis generates from); the science package's validators are the second."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["training", "evaluation"]

DbId = Annotated[int, Field(ge=1, le=2**31 - 1)]
Name = Field(default=None, min_length=1, max_length=200, description="A label for lists and reports.")


class Message(BaseModel):
    detail: str


# Checkpoints --------------------------------------------------------------------------
class CheckpointPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    sha256: str
    name: str
    filename: str
    ext: str = Field(description="safetensors, pt or onnx")
    size_bytes: int
    arch: str
    dataset: str | None
    method: str | None
    embedded_metadata: bool = Field(description="True when the file carries robaudit metadata itself.")
    metadata: dict[str, Any] = Field(validation_alias="meta")
    source: str = Field(description="upload, or training when a training job produced it.")
    training_job_id: int | None
    detected_arch: str | None = Field(
        default=None, description="The catalogue architecture the file's keys and shapes matched at upload, if any.")
    clean_check: dict[str, Any] | None = Field(
        default=None, description="Clean accuracy measured at upload: {ran: true, accuracy, n, chance, suspect, "
                                  "message} or {ran: false, reason}; suspect when below twice chance. Null for "
                                  "checkpoints made by training or stored before the check existed.")
    created_at: datetime

    @computed_field(description="The input normalisation: a preset name, custom, or null when the metadata "
                                "does not name one (robaudit's own checkpoints carry mean and std).")
    def preprocessing(self) -> str | None:
        value = self.metadata.get("preprocessing")
        return value if isinstance(value, str) else None


class InspectPublic(BaseModel):
    """What a checkpoint is, from its tensor names and shapes (POST /checkpoints/inspect)."""
    detected_arch: str | None = Field(description="The catalogue architecture the names and shapes match; null when "
                                                  "the file says it itself (embedded) or is an ONNX graph.")
    embedded: bool = Field(default=False, description="True when the file carries robaudit metadata (then arch "
                                                      "and the rest come from it).")
    arch: str | None = Field(default=None, description="The architecture: detected_arch, or the metadata's.")
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    num_classes: int | None
    in_channels: int | None
    input_size: int | None = Field(description="The image size the network is defined for, when it fixes one.")
    datasets: list[str] = Field(description="Known datasets with these classes, channels and image size.")
    metadata: dict[str, Any] | None = Field(default=None, description="The file's robaudit metadata, when embedded.")

    @model_validator(mode="after")
    def _arch_from_detection(self) -> InspectPublic:
        if self.arch is None:
            self.arch = self.detected_arch
        return self


class CheckpointsPublic(BaseModel):
    data: list[CheckpointPublic]
    count: int


# Own test sets ------------------------------------------------------------------------
class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    sha256: str = Field(description="sha256 of the stored normal form (x, y, classes): it names the images and "
                                    "labels, whichever file they came in.")
    filename: str
    source_sha256: str = Field(description="sha256 of the uploaded file.")
    n: int = Field(description="Number of images.")
    channels: int
    height: int
    width: int
    dtype: str = Field(description="uint8, or float32 for an .npz of floats in [0, 1].")
    num_classes: int = Field(description="Classes named (classes.txt or folders), else the highest label + 1.")
    class_names: list[str] | None
    transform: dict[str, int] | None = Field(description="The resize and centre crop applied at upload, if any.")
    size_bytes: int
    created_at: datetime


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


# Jobs ---------------------------------------------------------------------------------
class Progress(BaseModel):
    current: int
    total: int
    fraction: float | None = Field(description="current / total, or null while the total is unknown.")
    stage: str | None
    eta_seconds: float | None


class GatePublic(BaseModel):
    passed: bool
    reasons: list[str] = Field(description="Why the gate failed, one per failed condition; empty when it passed.")
    fail_under: float | None
    fail_on: Literal["suspected", "warn"] | None
    conditions: list[dict[str, Any]] = Field(description="Each condition: name, passed, message.")


class ShardPublic(BaseModel):
    index: int
    start: int = Field(description="First test point of the shard.")
    end: int = Field(description="One past its last test point.")
    status: JobStatus
    worker: str | None = Field(description="The worker running it, or that ran it last.")
    attempt: int
    max_attempts: int
    done: float = Field(description="Work units done (about one forward+backward of one image each).")
    total: float = Field(description="Work units planned for the shard.")
    stage: str | None
    eta_seconds: float | None
    error: str | None


class JobPublic(BaseModel):
    id: int
    kind: JobKind
    status: JobStatus
    name: str | None
    config: dict[str, Any]
    progress: Progress
    eta_seconds: float | None
    metrics: list[Any] = Field(description="Per-epoch training history (trainings).")
    summary: dict[str, Any] = Field(description="Headline numbers, e.g. clean and robust accuracy.")
    error: str | None
    attempt: int
    max_attempts: int
    cancel_requested: bool
    worker_hostname: str | None
    checkpoint_id: int | None = Field(description="The evaluated model (evaluations).")
    surrogate_id: int | None = Field(description="Transfer-attack source model (evaluations).")
    output_checkpoint_id: int | None = Field(description="The trained model, registered as a checkpoint (trainings).")
    dataset_id: int | None = Field(default=None, description="The own test set evaluated on (evaluations).")
    has_results: bool
    gate: GatePublic | None = Field(
        default=None, description="Evaluations: the CI gate's outcome on the results; null when no gate was "
                                  "asked for or the results are not ready.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    shards: list[ShardPublic] = Field(
        default_factory=list, description="Evaluations: the shards it is split into over the workers (empty until "
                                          "it is planned, and for trainings).")
    imported: bool = Field(default=False, description="Evaluations: results made elsewhere (robaudit.audit, "
                                                      "robaudit evaluate) and pushed here, not run by a worker.")


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class TrainingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = Field(min_length=1, max_length=64, examples=["feature-scatter"],
                        description="standard, pgd-at, fast-at, trades or feature-scatter.")
    dataset: str = Field(default="mnist10k", min_length=1, max_length=64)
    arch: str = Field(default="smallcnn", min_length=1, max_length=64)
    arch_kwargs: dict[str, Any] = Field(default_factory=dict, max_length=16)
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, max_length=64,
        description="TrainConfig fields: epochs, batch_size, lr, eps, alpha, steps, label_smoothing, "
                    "trades_beta, sinkhorn, seed, n_train, eval_examples, ...",
        examples=[{"epochs": 1, "n_train": 256, "eval_examples": 32}])
    name: str | None = Name


class GateCreate(BaseModel):
    """The CI gate (robaudit.evaluation.gate): the same conditions as `robaudit evaluate`'s options."""
    model_config = ConfigDict(extra="forbid")

    fail_under: float | None = Field(
        default=None, ge=0.0, le=1.0, examples=[0.4],
        description="Fail when the worst case over all points at the primary (first) eps is below this "
                    "accuracy, a fraction in [0, 1].")
    fail_on: Literal["suspected", "warn"] | None = Field(
        default=None, description="suspected: fail when gradient masking is suspected (a check failed); "
                                  "warn: also when any check warns.")

    @model_validator(mode="after")
    def _some_condition(self) -> GateCreate:
        if self.fail_under is None and self.fail_on is None:
            raise ValueError("a gate needs fail_under, fail_on or both")
        return self


class EvaluationImport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    results: dict[str, Any] = Field(description="A results JSON (docs/results-schema.md), as robaudit.audit() "
                                                "returns it or `robaudit evaluate --out` writes it.")
    name: str | None = Field(default=None, min_length=1, max_length=200,
                             description="What to call the model in lists and reports.")


class EvaluationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint_id: int = Field(ge=1, le=2**31 - 1)
    preset: str | None = Field(default=None, min_length=1, max_length=32, description="quick, paper or audit.")
    attacks: list[str] | None = Field(default=None, min_length=1, max_length=32,
                                      description="Attack names (instead of, or on top of, a preset).")
    norm: Literal["linf", "l2", "l1"] | None = Field(
        default=None, description="Threat model: linf (default), l2 or l1. Under l1 only AutoAttack's attacks "
                                  "and random noise exist; an attack without a version for the norm is refused.")
    eps: list[float] | None = Field(default=None, min_length=1, max_length=64,
                                    description="Perturbation budgets: L-inf in [0, 1] pixel units, L2 and L1 as "
                                                "distances between [0, 1] images. Default: the dataset's for the "
                                                "norm.")
    steps: list[int] | None = Field(default=None, min_length=1, max_length=32, description="Attack step counts.")
    n_examples: int | None = Field(default=None, ge=1, le=1_000_000, description="Test points to evaluate.")
    dataset: str | None = Field(default=None, min_length=1, max_length=64,
                                description="Defaults to the checkpoint's dataset.")
    dataset_id: int | None = Field(default=None, ge=1, le=2**31 - 1,
                                   description="An uploaded test set (POST /datasets) to evaluate on instead of the "
                                               "dataset's test split; `dataset` still sets the default eps.")
    batch_size: int | Literal["auto"] | None = Field(
        default=None, description="Test points per batch (GPU memory; resume granularity), 1 to 100000, or "
                                  "\"auto\": the largest that fits the planning worker's device, found once per "
                                  "model and device and cached.")
    precision: Literal["fp32", "bf16"] | None = Field(
        default=None, description="bf16: autocast for the attacks' forward and backward passes (faster on GPUs; "
                                  "check C10 compares its gradients with fp32's). Default fp32.")
    channels_last: bool | None = Field(default=None, description="Run the model in channels_last memory format.")
    compile: bool | None = Field(default=None, description="torch.compile the model (opt-in; compile time counts).")
    surrogate_id: int | None = Field(default=None, ge=1, le=2**31 - 1,
                                     description="Checkpoint used as the source of transfer attacks.")
    aa_examples: int | None = Field(default=None, ge=0, le=1_000_000,
                                    description="AutoAttack on the first N test points; 0 = all points. "
                                                "Default: the preset's (200 for audit).")
    eot_draws: int | None = Field(default=None, ge=1, le=1000,
                                  description="Forward passes averaged per EOT step and per accuracy of a randomized "
                                              "model. Default 20.")
    auto_eot: bool | None = Field(default=None, description="Add EOT-PGD and AutoAttack rand when check C11 finds "
                                                            "the forward pass random. Default true.")
    gallery: int | None = Field(default=None, ge=0, le=1_000_000,
                                description="Keep the adversarial examples of the first N test points for the "
                                            "gallery (GET .../gallery, .../adversarial.npz); 0 = none. Default 100.")
    shard_size: int | None = Field(default=None, ge=1, le=1_000_000,
                                   description="Test points per shard (rounded up to whole batches). Default: one "
                                               "shard per live worker, balanced by estimated work.")
    gate: GateCreate | None = Field(default=None, description="Pass/fail the results for CI; see `gate` "
                                                              "in the evaluation once it has results.")
    name: str | None = Name

    @field_validator("eps", mode="before")
    @classmethod
    def _eps_scalar(cls, value):
        return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @field_validator("batch_size")
    @classmethod
    def _batch_size_range(cls, value):
        if isinstance(value, int) and not 1 <= value <= 100_000:
            raise ValueError("batch_size must be 1 to 100000, or \"auto\"")
        return value

    @field_validator("steps", mode="before")
    @classmethod
    def _steps_scalar(cls, value):
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value


# Reports ------------------------------------------------------------------------------
class ReportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    evaluation_ids: list[DbId] = Field(min_length=1, max_length=50)
    kind: Literal["comparison", "label-smoothing-study"] = Field(
        default="comparison", description="label-smoothing-study adds the study's tables and conclusions.")


class ReportPublic(BaseModel):
    id: str
    title: str
    url: str
    share_url: str | None = Field(
        description="The read-only share link; null without the API token (the link is a secret) and "
                    "after the link was revoked.")
    evaluation_ids: list[int]
    kind: str = "comparison"
    created_at: datetime


class ShareLink(BaseModel):
    share_url: str = Field(description="Whoever holds this URL can read the report, without the API token.")


class ReportsPublic(BaseModel):
    data: list[ReportPublic]
    count: int


# The share link's view of a report -----------------------------------------------------
class SharedReportInfo(BaseModel):
    title: str
    created_at: str = Field(description="ISO 8601.")
    kind: str


class SharedEvaluation(BaseModel):
    id: int
    name: str | None
    status: JobStatus
    config: dict[str, Any]
    summary: dict[str, Any] = Field(description="Headline numbers, e.g. clean and robust accuracy.")
    error: str | None
    checkpoint: dict[str, Any] | None = Field(
        description="The evaluated checkpoint: arch, dataset, method, hyperparameters, training history.")
    results: dict[str, Any] | None = Field(
        description="The results JSON (docs/results-schema.md) without per-sample data; null until the "
                    "evaluation has succeeded.")


class SharedReport(BaseModel):
    """A report's aggregated numbers, as its exports carry them; no report id, URLs or per-sample data."""
    report: SharedReportInfo
    evaluations: list[SharedEvaluation]
    study: dict[str, Any] | None = Field(
        default=None, description="label-smoothing-study reports only: the study's tables and conclusions "
                                  "(null when no evaluation has results yet).")


# Health -------------------------------------------------------------------------------
class ComponentHealth(BaseModel):
    ok: bool
    detail: str


class WorkerPublic(BaseModel):
    hostname: str
    pid: int
    queues: list[str]
    device: str | None
    started_at: datetime
    last_seen: datetime


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: ComponentHealth
    broker: ComponentHealth
    workers: list[WorkerPublic]
    problems: list[str] = Field(default_factory=list, description="Why the status is degraded besides the components: "
                                "queued jobs or shards that idle workers did not take (the janitor sent them again).")
