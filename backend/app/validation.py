"""Checking job requests with the science package's own validators before anything is stored.

Each function returns the config to store on the job row, or raises JobRequestError
(turned into a 422 that carries the validator's message).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from robaudit.backend.app import crud
from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.schemas import EvaluationCreate, TrainingCreate

# Chosen by the worker that runs the job, not by the client.
WORKER_FIELDS = ("device", "data_dir", "download")
TOP_LEVEL_FIELDS = ("method", "dataset", "arch", "arch_kwargs")


class JobRequestError(ValueError):
    pass


# A training's hyperparameters and the Settings attribute that caps each one.
TRAINING_CAPS = {"epochs": "max_epochs", "batch_size": "max_batch_size", "steps": "max_attack_steps",
                 "n_train": "max_train_examples", "eval_examples": "max_eval_examples"}


def _check_cap(settings: Settings, cap_name: str, where: str, value: Any) -> None:
    """Raise when a number is over its cap; the message names the field, its value, the cap and its variable.

    Runs on the request's raw values, before any conversion, so it reports what the client sent
    (1e+30, not a 31-digit integer) and nothing huge is ever built or converted."""
    cap = getattr(settings, cap_name)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > cap:
        raise JobRequestError(f"{where} = {value} is over the cap of {cap} (ROBAUDIT_{cap_name.upper()})")


def _reject_non_finite(value: Any, where: str) -> None:
    """NaN/Infinity parse from JSON in Python but are not JSON (PostgreSQL refuses to store them)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise JobRequestError(f"{where} must be a finite number, got {value}")
    if isinstance(value, dict):
        for key, item in value.items():
            _reject_non_finite(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for item in value:
            _reject_non_finite(item, where)


def _science_errors():
    from robaudit.errors import RobauditError
    from robaudit.models.checkpoint import CheckpointError

    return RobauditError, CheckpointError


def validate_training(body: TrainingCreate, settings: Settings) -> dict[str, Any]:
    import torch
    from pydantic import TypeAdapter, ValidationError

    from robaudit.data import dataset_info
    from robaudit.models.registry import build_model
    from robaudit.training import TrainConfig

    hp = dict(body.hyperparameters)
    _reject_non_finite(hp, "hyperparameters")
    _reject_non_finite(body.arch_kwargs, "arch_kwargs")
    misplaced = [k for k in hp if k in TOP_LEVEL_FIELDS]
    if misplaced:
        raise JobRequestError(f"give {', '.join(misplaced)} at the top level of the request, not in hyperparameters")
    reserved = [k for k in hp if k in WORKER_FIELDS]
    if reserved:
        raise JobRequestError(f"{', '.join(reserved)} cannot be set through the API: the worker chooses them")
    for key, cap_name in TRAINING_CAPS.items():
        _check_cap(settings, cap_name, key, hp.get(key))
    _check_cap(settings, "max_model_depth", "arch_kwargs.depth", body.arch_kwargs.get("depth"))
    raw = {**hp, "method": body.method, "dataset": body.dataset, "arch": body.arch,
           "arch_kwargs": dict(body.arch_kwargs)}
    science = _science_errors()
    try:
        TrainConfig.from_dict(raw)                       # unknown options, with the science's message
        typed = TypeAdapter(TrainConfig).validate_python(raw, strict=False)
        resolved = replace(typed, device="cpu").resolved()
        info = dataset_info(resolved.dataset)
        with torch.device("meta"):                       # checks arch and arch_kwargs without allocating
            model = build_model(resolved.arch, num_classes=info.num_classes, in_channels=info.in_channels,
                                mean=info.mean, std=info.std, **resolved.arch_kwargs)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "hyperparameters"
        raise JobRequestError(f"hyperparameter {where}: {first.get('msg')}") from None
    except science as exc:
        raise JobRequestError(str(exc)) from None
    except (ValueError, TypeError) as exc:
        raise JobRequestError(f"invalid training configuration: {exc}") from None
    _check_cap(settings, "max_model_params", f"the parameter count of {resolved.arch} with {resolved.arch_kwargs}",
               sum(p.numel() for p in model.parameters()))
    config = {k: v for k, v in resolved.to_dict().items() if k not in WORKER_FIELDS}
    return {"train_config": config, "name": body.name}


def _shape_of(checkpoint) -> tuple[int | None, int | None, int | None]:
    meta = checkpoint.meta or {}
    return meta.get("num_classes"), meta.get("in_channels"), meta.get("input_size")


def _check_compatible(checkpoint, dataset: str, role: str) -> None:
    from robaudit.data import dataset_info

    info = dataset_info(dataset)
    classes, channels, size = _shape_of(checkpoint)
    if (classes, channels) != (info.num_classes, info.in_channels) or (size is not None and size != info.size):
        raise JobRequestError(
            f"dataset/architecture mismatch: {role} checkpoint {checkpoint.id} ({checkpoint.arch}, "
            f"{channels} channel(s), {classes} classes, trained on {checkpoint.dataset or 'unknown'}) cannot be "
            f"evaluated on {dataset} ({info.in_channels} channel(s), {info.num_classes} classes, "
            f"{info.size}x{info.size})")


def _check_own_fits(checkpoint, dataset_row, role: str) -> None:
    """The uploaded test set's images and classes must fit the model (checked at upload only when a
    checkpoint was named then; always here)."""
    from robaudit.backend.app.dataset_store import model_shape

    shape = model_shape({**(checkpoint.meta or {}), "dataset": checkpoint.dataset})
    if shape is None:
        raise JobRequestError(f"{role} checkpoint {checkpoint.id}'s metadata does not say its input channels, image "
                              "size and classes, so no uploaded test set can be checked against it")
    images = (dataset_row.channels, dataset_row.height, dataset_row.width)
    if images != (shape["channels"], shape["size"], shape["size"]):
        raise JobRequestError(
            f"dataset {dataset_row.id} ({dataset_row.name}) holds {dataset_row.channels}-channel "
            f"{dataset_row.width}x{dataset_row.height} images; {role} checkpoint {checkpoint.id} ({checkpoint.arch}) "
            f"takes {shape['channels']}-channel {shape['size']}x{shape['size']} images")
    if dataset_row.num_classes > shape["num_classes"]:
        raise JobRequestError(
            f"dataset {dataset_row.id} ({dataset_row.name}) has {dataset_row.num_classes} classes; {role} checkpoint "
            f"{checkpoint.id} ({checkpoint.arch}) has {shape['num_classes']}: its labels would fall outside the "
            "model's classes")


def validate_evaluation(body: EvaluationCreate, session: Session, settings: Settings) -> dict[str, Any]:
    from robaudit.evaluation import build_spec

    _reject_non_finite(body.eps, "eps")
    _check_cap(settings, "max_eval_examples", "n_examples", body.n_examples)
    _check_cap(settings, "max_batch_size", "batch_size", body.batch_size if isinstance(body.batch_size, int) else None)
    _check_cap(settings, "max_attack_steps", "steps", max(body.steps or [0]))
    checkpoint = crud.get_checkpoint(session=session, checkpoint_id=body.checkpoint_id)
    if checkpoint is None:
        raise JobRequestError(f"no checkpoint {body.checkpoint_id}: upload one first (POST /api/v1/checkpoints)")
    dataset = body.dataset or checkpoint.dataset
    if not dataset:
        raise JobRequestError(f"checkpoint {checkpoint.id} does not say which dataset it was trained on: "
                              "give 'dataset'")
    science = _science_errors()
    spec_args: dict[str, Any] = {"dataset": dataset}
    for key in ("preset", "attacks", "norm", "eps", "steps", "n_examples", "batch_size", "precision",
                "channels_last", "compile", "eot_draws", "auto_eot"):
        value = getattr(body, key)
        if value is not None:
            spec_args[key] = value
    if body.aa_examples is not None:
        spec_args["autoattack_examples"] = body.aa_examples
    if body.gallery is not None:
        spec_args["gallery_examples"] = body.gallery
    if body.preset is None and body.attacks is None:
        spec_args["preset"] = "quick"
    own = None
    if body.dataset_id is not None:
        own = crud.get_dataset(session=session, dataset_id=body.dataset_id)
        if own is None:
            raise JobRequestError(f"no dataset {body.dataset_id}: upload one first (POST /api/v1/datasets)")
    try:
        _check_compatible(checkpoint, dataset, "the")
        if own is not None:
            _check_own_fits(checkpoint, own, "the")
        if body.surrogate_id is not None:
            surrogate = crud.get_checkpoint(session=session, checkpoint_id=body.surrogate_id)
            if surrogate is None:
                raise JobRequestError(f"no surrogate checkpoint {body.surrogate_id}")
            _check_compatible(surrogate, dataset, "the surrogate")
            if own is not None:
                _check_own_fits(surrogate, own, "the surrogate")
            spec_args["surrogate"] = True
        spec = build_spec(**spec_args)
    except science as exc:
        raise JobRequestError(str(exc)) from None
    config: dict[str, Any] = {"spec_args": spec_args, "name": body.name}
    if own is not None:
        # What the worker loads and the results name; the registry dataset above still sets the default eps.
        config["own_dataset"] = {"id": own.id, "name": own.name, "sha256": own.sha256, "n": own.n}
    if body.shard_size is not None:
        config["shard_size"] = body.shard_size
    if body.gate is not None:  # only when asked, so a gate-less job's config is what it always was
        config["gate"] = body.gate.model_dump()
    to_dict = getattr(spec, "to_dict", None)
    if callable(to_dict):
        config["spec"] = to_dict()
    return config
