"""The training loop: epochs, resume state, per-epoch metrics and the final checkpoint.

Files in ``out_dir``:
- ``state.pt``: everything needed to continue after the last finished epoch
  (weights, optimizer incl. momentum, history, RNG states, data-order
  generator), replaced atomically after every epoch and read back with
  ``torch.load(weights_only=True)``;
- ``history.json``: the per-epoch metrics so far;
- ``model.safetensors`` (+ ``model.json``): the final checkpoint, written when
  the last epoch is done.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import numpy as np
import torch
from torch import nn

from robaudit.data import DATASETS, load_arrays, train_loader
from robaudit.errors import Cancelled, RobauditError
from robaudit.models import CheckpointMetadata, build_model, save_checkpoint
from robaudit.models.registry import resolve_arch
from robaudit.training.config import RESUMABLE_CHANGES, TrainConfig
from robaudit.training.methods import METHODS
from robaudit.training.monitor import epoch_metrics
from robaudit.training.schedule import lr_at

STATE_FILE = "state.pt"
HISTORY_FILE = "history.json"
CHECKPOINT_FILE = "model.safetensors"


@dataclass
class TrainProgress:
    epoch: int                 # 1-based epoch being trained
    epochs: int
    batch: int                 # batches done in this epoch
    batches: int
    loss: float                # mean training loss of this epoch so far
    eta_seconds: float | None  # for the whole run, evaluation included
    history: list[dict[str, Any]]


@dataclass
class TrainResult:
    checkpoint: Path
    history: list[dict[str, Any]]
    config: TrainConfig        # resolved: every default filled in
    resumed_from_epoch: int    # epochs already done when this call started
    seconds: float
    out_dir: Path = field(default_factory=Path)


class NumpyRngState(TypedDict):
    keys: torch.Tensor      # the MT19937 key, stored as int64 (weights_only loads no numpy arrays)
    pos: int
    has_gauss: int
    cached_gaussian: float


class RngState(TypedDict):
    python: tuple[Any, ...]   # random.getstate(), passed back to random.setstate() unchanged
    numpy: NumpyRngState
    torch: torch.Tensor
    cuda: NotRequired[list[torch.Tensor]]


class TrainState(TypedDict):
    """What state.pt holds after each finished epoch."""
    config: dict[str, Any]
    epoch: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    history: list[dict[str, Any]]
    rng: RngState
    data_rng: torch.Tensor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _rng_state() -> RngState:
    # Only types torch.load(weights_only=True) accepts: tensors, ints, floats, tuples, dicts.
    np_state = np.random.get_state(legacy=True)   # the default, spelled out: numpy's stubs assume legacy=False
    assert isinstance(np_state, tuple)   # a dict only for a non-MT19937 generator, which np.random never has
    _, keys, pos, has_gauss, cached = np_state
    state: RngState = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]  # unannotated in torch
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: RngState) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _save_state(path: Path, state: TrainState) -> None:
    _atomic_write(path, lambda tmp: torch.save(state, tmp))


def _write_history(out_dir: Path, config: TrainConfig, history: list[dict[str, Any]]) -> None:
    text = json.dumps({"config": config.to_dict(), "epochs": history}, indent=2) + "\n"
    _atomic_write(out_dir / HISTORY_FILE, lambda tmp: tmp.write_text(text))


def load_state(path: Path) -> dict[str, Any]:
    """state.pt as plain data; never unpickles code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise RobauditError(f"cannot resume from {path}: {reason}; delete it to start over") from None
    if not isinstance(state, dict):
        raise RobauditError(f"cannot resume from {path}: it holds a {type(state).__name__}, not a training "
                            "state; delete it to start over")
    return state


def _check_resumable(stored: dict[str, Any], config: TrainConfig, path: Path) -> None:
    for key, value in config.to_dict().items():
        if key in RESUMABLE_CHANGES or stored.get(key) == value:
            continue
        raise RobauditError(f"{path.parent} holds a run with {key}={stored.get(key)!r}, not {value!r}; "
                            "resume with the same settings or choose another output folder")


def build_network(config: TrainConfig) -> nn.Module:
    info = DATASETS[config.dataset]
    try:
        key, kwargs = resolve_arch(config.arch, config.arch_kwargs)
        return build_model(key, num_classes=info.num_classes, in_channels=info.in_channels,
                           mean=info.mean, std=info.std, **kwargs)
    except ValueError as exc:
        raise RobauditError(str(exc)) from None


def checkpoint_metadata(config: TrainConfig, history: list[dict[str, Any]]) -> CheckpointMetadata:
    from robaudit import __version__

    info = DATASETS[config.dataset]
    arch, arch_kwargs = resolve_arch(config.arch, config.arch_kwargs)
    return CheckpointMetadata(
        arch=arch, arch_kwargs=arch_kwargs, dataset=config.dataset, num_classes=info.num_classes,
        in_channels=info.in_channels, input_size=info.size, mean=list(info.mean), std=list(info.std),
        method=config.method, hyperparameters=config.hyperparameters(),
        epoch=history[-1]["epoch"] if history else 0,
        metrics={"history": history, "final": history[-1] if history else {}},
        robaudit_version=__version__,
    )


def train(config: TrainConfig, out_dir: str | Path, *,
          progress: Callable[[TrainProgress], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train ``config.method`` and write the run folder; resumes from ``out_dir/state.pt`` if present.

    ``progress`` is called after every batch, and once more after each epoch's
    evaluation (batch == batches, history including that epoch). ``should_stop``
    is polled before every batch; when it returns true, ``Cancelled`` is raised
    and nothing new is saved (state.pt keeps the last finished epoch).
    """
    started = time.perf_counter()
    config = config.resolved()
    # resolved() fills every default; tell the type checker which ones the loop relies on.
    assert config.lr is not None and config.lr_milestones is not None
    assert config.eps is not None and config.device is not None
    out_dir = Path(out_dir)
    device = config.device

    # Data first: a missing dataset should fail before anything is written.
    x_test, y_test = load_arrays(config.dataset, "test", config.data_dir, config.download)
    loader = train_loader(config.dataset, config.batch_size, data_dir=config.data_dir,
                          download=config.download, seed=config.seed, limit=config.n_train)

    seed_everything(config.seed)
    model = build_network(config).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    history: list[dict[str, Any]] = []
    start_epoch = 0

    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / STATE_FILE
    if state_path.exists():
        state = load_state(state_path)
        _check_resumable(state["config"], config, state_path)
        start_epoch = int(state["epoch"])
        if start_epoch > config.epochs:
            raise RobauditError(f"{out_dir} already holds {start_epoch} trained epochs; ask for at least "
                                f"{start_epoch} epochs or choose another output folder")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = list(state["history"])
        _set_rng_state(state["rng"])
        loader.generator.set_state(state["data_rng"])
        del state  # a second copy of the weights and optimizer; not needed past this point

    step, arg_names = METHODS[config.method]
    step_kwargs = {name: getattr(config, name) for name in arg_names}
    batches = len(loader)
    batch_seconds: list[float] = []
    eval_seconds = 0.0

    def eta(epoch: int, batch: int) -> float | None:
        if not batch_seconds:
            return None
        left_batches = (config.epochs - epoch - 1) * batches + (batches - batch)
        left_evals = config.epochs - epoch  # this epoch's evaluation included
        return left_batches * sum(batch_seconds) / len(batch_seconds) + left_evals * eval_seconds

    for epoch in range(start_epoch, config.epochs):
        lr = lr_at(epoch, config.lr, config.lr_milestones)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        epoch_start = time.perf_counter()
        for batch, (x, y) in enumerate(loader, start=1):
            if should_stop is not None and should_stop():
                raise Cancelled(f"training stopped during epoch {epoch + 1}; {epoch} epoch(s) saved")
            tick = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            result = step(model, optimizer, x, y, **step_kwargs)
            total_loss += result.loss * result.count
            correct += result.correct
            seen += result.count
            batch_seconds.append(time.perf_counter() - tick)
            if progress is not None:
                progress(TrainProgress(epoch + 1, config.epochs, batch, batches, total_loss / seen,
                                       eta(epoch, batch), list(history)))
        train_seconds = time.perf_counter() - epoch_start

        tick = time.perf_counter()
        metrics = epoch_metrics(model, x_test, y_test, eps=config.eps, eval_examples=config.eval_examples,
                                device=device, seed=config.seed)
        eval_seconds = time.perf_counter() - tick
        history.append({"epoch": epoch + 1, "lr": lr, "loss": total_loss / seen, "train_acc": correct / seen,
                        **metrics, "train_seconds": round(train_seconds, 3),
                        "eval_seconds": round(eval_seconds, 3)})
        _save_state(state_path, {
            "config": config.to_dict(), "epoch": epoch + 1, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "history": history, "rng": _rng_state(),
            "data_rng": loader.generator.get_state(),
        })
        _write_history(out_dir, config, history)
        if progress is not None:
            progress(TrainProgress(epoch + 1, config.epochs, batches, batches, total_loss / seen,
                                   eta(epoch + 1, 0) if epoch + 1 < config.epochs else 0.0, list(history)))

    checkpoint = save_checkpoint(out_dir / CHECKPOINT_FILE, model, checkpoint_metadata(config, history))
    return TrainResult(checkpoint=checkpoint, history=history, config=config, resumed_from_epoch=start_epoch,
                       seconds=time.perf_counter() - started, out_dir=out_dir)
