"""The robaudit checkpoint: safetensors weights plus JSON metadata.

One file carries both: the metadata JSON is stored in the safetensors header
under ``__metadata__["robaudit"]`` (and mirrored to a ``.json`` sidecar for
people reading a run folder). Loading never unpickles code: ``.safetensors`` is
parsed as data, and a ``.pt``/``.pth`` state_dict goes through
``torch.load(weights_only=True)`` only, with no fallback.
"""
from __future__ import annotations

import json
import pickle
import re
import struct
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from robaudit.models.registry import build_model, resolve_arch

FORMAT = "robaudit-checkpoint"
FORMAT_VERSION = 2   # 2: published key layouts (layer1.., block1.layer.N..); 1 is renamed on load
# A safetensors header larger than this is rejected (the format's own DoS cap).
MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_HEADER_ENTRIES = 100_000   # tensors in one file; the largest published robust models have a few thousand


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a message that says why."""


@dataclass
class CheckpointMetadata:
    arch: str
    num_classes: int
    in_channels: int
    mean: list[float]
    std: list[float]
    dataset: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: int | None = None
    method: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    robaudit_version: str | None = None
    created_at: str | None = None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointMetadata:
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("arch", "num_classes", "in_channels", "mean", "std") if k not in data]
        if missing:
            raise CheckpointError(f"robaudit metadata is missing field(s): {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("robaudit")
    except Exception:  # running from a source tree without installing
        return "unknown"


def save_checkpoint(path: str | Path, model: nn.Module, metadata: CheckpointMetadata) -> Path:
    """Write ``model``'s weights and ``metadata`` to ``path`` (.safetensors) atomically."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoints are written as .safetensors, got {path.name}")
    metadata.robaudit_version = metadata.robaudit_version or _version()
    metadata.created_at = metadata.created_at or datetime.now(UTC).isoformat(timespec="seconds")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"robaudit": metadata.to_json()})
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(asdict(metadata), indent=2, sort_keys=True) + "\n")
    return path


def sniff_format(path: Path) -> str:
    """'safetensors', 'torch-zip', 'pickle', 'onnx', or raise CheckpointError. Looks at bytes, not the name."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path.name} is empty")
    with path.open("rb") as fh:
        head = fh.read(16)
    if zipfile.is_zipfile(path):
        return "torch-zip"
    if head[:4] == b"PK\x03\x04":  # a zip (torch.save) whose central directory at the end is missing
        raise CheckpointError(f"{path.name} is truncated or corrupt: it starts like a torch.save() zip "
                              "archive but its end (the zip directory) is missing or damaged")
    if len(head) >= 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        # A safetensors header length can start with byte 0x80 too (1 file in 256), so a pickle
        # opcode there only wins when the "length" cannot be one.
        if not (_looks_like_pickle(head) and 8 + header_len > size):
            if header_len > MAX_HEADER_BYTES:
                raise CheckpointError(f"{path.name}: safetensors header of {header_len} bytes exceeds the 100 MB cap")
            if 8 + header_len > size:
                raise CheckpointError(f"{path.name} is truncated: its safetensors header claims "
                                      f"{header_len} bytes but the file has {size - 8}")
            _check_safetensors_length(path, header_len, size)
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol >= 2 (legacy torch.save)
        return "pickle"
    # ONNX has no magic number: it is an ONNX file if it parses as a ModelProto with a graph.
    from robaudit.models.onnx_model import sniff_onnx
    if sniff_onnx(path):
        return "onnx"
    raise CheckpointError(f"{path.name} is not a checkpoint: expected a .safetensors file, a "
                          "torch.save()d state_dict (.pt) or an ONNX model (.onnx)")


def _looks_like_pickle(head: bytes) -> bool:
    return head[:1] == b"\x80" and 2 <= head[1] <= 5   # PROTO opcode, protocols 2..5


def _check_safetensors_length(path: Path, header_len: int, size: int) -> None:
    """The header is a JSON object of well-formed entries, and the tensors fit in the file.

    Checked here, before safetensors or anything else reads the file, so that a malformed header
    (an upload is untrusted) is a plain CheckpointError, never an exception from deeper down.
    safetensors itself reports a cut-off data section as a header error ("incomplete metadata");
    this says what happened instead: the tensors need more bytes than the file has.
    """
    with path.open("rb") as fh:
        fh.seek(8)
        raw = fh.read(header_len)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path.name} is corrupt: its safetensors header is not valid JSON ({exc})") from None
    if len(header) > MAX_HEADER_ENTRIES:
        raise CheckpointError(f"{path.name}: its safetensors header lists {len(header)} tensors; at most "
                              f"{MAX_HEADER_ENTRIES} are accepted")
    ends = []
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in offsets)
                and offsets[0] <= offsets[1]):
            raise CheckpointError(f"{path.name} is corrupt: tensor {str(key)[:80]!r} in its safetensors header has "
                                  "no valid data_offsets (two non-negative integers, start <= end)")
        ends.append(offsets[1])
    needed = 8 + header_len + max(ends, default=0)
    if needed > size:
        raise CheckpointError(f"{path.name} is truncated: its tensors need {needed} bytes but the file has {size}")


def read_metadata(path: str | Path) -> CheckpointMetadata | None:
    """The robaudit metadata stored in a .safetensors file, or None if it has none."""
    path = Path(path)
    if sniff_format(path) != "safetensors":
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get("robaudit")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path.name} is corrupt: {exc}") from None
    if raw is None:
        return None
    try:
        return CheckpointMetadata.from_dict(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path.name}: robaudit metadata is not valid JSON ({exc})") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a weights-only .pt state_dict. Never runs pickled code."""
    path = Path(path)
    kind = sniff_format(path)
    if kind == "safetensors":
        try:
            tensors = {}
            with safe_open(str(path), framework="pt") as fh:
                for key in fh.keys():
                    tensors[key] = fh.get_tensor(key)
            return tensors
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise CheckpointError(f"{path.name} is truncated or corrupt: {exc}") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path.name} was refused: it contains pickled objects other than tensors "
                              f"and plain containers, which could run code on load ({first[:200]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path.name} is truncated or corrupt: {str(exc).splitlines()[0][:200]}") from None
    return _unwrap_state_dict(obj, path.name)


def _unwrap_state_dict(obj: Any, name: str) -> dict[str, torch.Tensor]:
    # Common wrappers: {"state_dict": ...}, {"model": ...}, {"net": ...}.
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{name} does not hold a state_dict (a mapping of parameter names to tensors)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{name}: entry {bad[0]!r} is not a tensor; expected a plain state_dict")
    return dict(obj)


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DataParallel adds "module."; the official Feature Scattering checkpoint adds "module.basic_net.".
    for prefix in ("module.", "basic_net."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_into(model: nn.Module, state: dict[str, torch.Tensor], *, arch: str = "model") -> None:
    """Strict load with an error naming the first bad key and both shapes."""
    state = _strip_prefixes(state)
    expected = model.state_dict()
    # A bare network (no Normalize layer) is accepted: its keys live under "1.".
    if not any(k.startswith(("0.", "1.")) for k in state):
        state = {**{k: v for k, v in expected.items() if k.startswith("0.")},
                 **{f"1.{k}": v for k, v in state.items()}}
    for key, want in expected.items():
        if key not in state:
            raise CheckpointError(f"checkpoint does not match {arch}: missing key {key!r} "
                                  f"(expected shape {tuple(want.shape)})")
        got = state[key]
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(f"checkpoint does not match {arch}: key {key!r} has shape "
                                  f"{tuple(got.shape)} in the file but {tuple(want.shape)} in the architecture")
    extra = [k for k in state if k not in expected]
    if extra:
        raise CheckpointError(f"checkpoint does not match {arch}: unexpected key {extra[0]!r} "
                              f"(shape {tuple(state[extra[0]].shape)})")
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | Path, *, metadata: CheckpointMetadata | None = None,
                    device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointMetadata]:
    """Build the architecture and load the weights strictly; returns (model in eval mode, metadata).

    ``metadata`` is required for files that carry none (a bare .pt or .safetensors
    state_dict); it overrides nothing when the file has robaudit metadata.
    """
    path = Path(path)
    if sniff_format(path) == "onnx":
        return _load_onnx_checkpoint(path, metadata, device)
    stored = read_metadata(path)
    meta = stored or metadata
    if meta is None:
        raise CheckpointError(f"{path.name} carries no robaudit metadata: give the architecture, "
                              "dataset and number of classes")
    meta = upgrade_format_1_metadata(meta)
    try:
        key, kwargs = resolve_arch(meta.arch, meta.arch_kwargs)
        model = build_model(key, num_classes=meta.num_classes, in_channels=meta.in_channels,
                            mean=meta.mean, std=meta.std, **kwargs)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    state = rename_format_1_keys(read_state_dict(path), meta)
    load_into(model, state, arch=meta.arch)
    return model.to(device).eval(), meta


# robaudit checkpoints of format 1 (before the published key layouts): their PreActResNet-18 kept its
# blocks in one ``layers`` Sequential and its projection shortcut was a bare conv seen by the
# pre-activated input; its WideResNet kept ``blocks.N``, ``shortcut`` and a final ``bn``.
_LEGACY_PREACT = re.compile(r"^(1\.)?layers\.(\d+)\.(.*)$")
_LEGACY_WRN = re.compile(r"^(1\.)?blocks\.(\d+)\.(.*)$")


def upgrade_format_1_metadata(meta: CheckpointMetadata) -> CheckpointMetadata:
    """A format-1 PreActResNet-18 fed its projection shortcuts the pre-activated input: say so explicitly,
    since the published layout's default is the raw input (fast_adversarial, RobustBench)."""
    if meta.format_version != 1:
        return meta
    try:
        key, _ = resolve_arch(meta.arch, meta.arch_kwargs)
    except ValueError:
        return meta   # load_checkpoint reports the unknown architecture
    if key == "preactresnet18" and "shortcut_from" not in meta.arch_kwargs:
        return replace(meta, arch_kwargs={**meta.arch_kwargs, "shortcut_from": "preact"})
    return meta


def rename_format_1_keys(state: dict[str, torch.Tensor], meta: CheckpointMetadata) -> dict[str, torch.Tensor]:
    """The keys of a format-1 robaudit checkpoint in today's (published) layout; other files unchanged."""
    if meta.format_version != 1:
        return state
    try:
        key, kwargs = resolve_arch(meta.arch, meta.arch_kwargs)
    except ValueError:
        return state
    if key == "preactresnet18":
        def preact(name: str) -> str:
            m = _LEGACY_PREACT.match(name)
            if m is None:
                return name
            prefix, index, rest = m.group(1) or "", int(m.group(2)), m.group(3)
            rest = re.sub(r"^shortcut\.", "shortcut.0.", rest)
            return f"{prefix}layer{index // 2 + 1}.{index % 2}.{rest}"
        return {preact(k): v for k, v in state.items()}
    if key == "wideresnet":
        per_group = (int(kwargs.get("depth", 28)) - 4) // 6
        if per_group < 1:
            return state

        def wrn(name: str) -> str:
            m = _LEGACY_WRN.match(name)
            if m is None:
                return re.sub(r"^(1\.)?bn\.", r"\1bn1.", name)
            prefix, index, rest = m.group(1) or "", int(m.group(2)), m.group(3)
            rest = re.sub(r"^shortcut\.", "convShortcut.", rest)
            return f"{prefix}block{index // per_group + 1}.layer.{index % per_group}.{rest}"
        return {wrn(k): v for k, v in state.items()}
    return state


def _load_onnx_checkpoint(path: Path, metadata: CheckpointMetadata | None,
                          device: str | torch.device) -> tuple[nn.Module, CheckpointMetadata]:
    """An ONNX graph converted to torch, behind the Normalize layer the given metadata states.

    ONNX files carry no robaudit metadata; ``metadata.arch`` is not used (the graph is the architecture).
    """
    if metadata is None:
        raise CheckpointError(f"{path.name} is an ONNX model, which carries no robaudit metadata: give the "
                              "dataset, number of classes and preprocessing (mean, std)")
    from robaudit.models.normalize import Normalize
    from robaudit.models.onnx_model import load_onnx_classifier
    from robaudit.models.registry import NormalizedModel
    net = load_onnx_classifier(path, in_channels=metadata.in_channels, num_classes=metadata.num_classes,
                               input_size=metadata.input_size)
    model = NormalizedModel(Normalize(metadata.mean, metadata.std), net)
    return model.to(device).eval(), metadata
