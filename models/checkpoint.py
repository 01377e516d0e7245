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
# A safetensors header larger than this is rejected: the largest published models (a few thousand
# tensors) have headers well under 1 MB; a crafted 59 MB header once took the API 95 s to parse.
MAX_HEADER_BYTES = 16 * 1024 * 1024
# torch.save stores its zip entries uncompressed, so a .pt whose entries claim much more than the file
# holds is a zip bomb (a 1 MB deflated entry can claim gigabytes).
MAX_ZIP_EXPANSION = 2.0
ZIP_SLACK_BYTES = 1 << 20
MAX_HEADER_ENTRIES = 100_000   # tensors in one file; the largest published robust models have a few thousand


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a message that says why."""


class Unrecognised(CheckpointError):
    """A file without metadata or architecture whose keys match no catalogue network."""

    def __init__(self, message: str, closest: str | None) -> None:
        super().__init__(message)
        self.closest = closest


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
    # How mean and std were chosen: a preset name (models/preprocessing.py) or "custom"; None in files
    # written before this field existed, whose mean and std are still exactly what they state.
    preprocessing: str | None = None
    input_range: list[float] = field(default_factory=lambda: [0.0, 1.0])   # or [0, 255]; see input_scale
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
        values = {k: v for k, v in data.items() if k in known}
        if "input_range" in values:
            from robaudit.models.preprocessing import check_input_range  # imports this module

            values["input_range"] = check_input_range(values["input_range"])
        return cls(**values)


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


def sniff_format(path: Path, *, parse: bool = True) -> str:
    """'safetensors', 'torch-zip', 'pickle', 'onnx', or raise CheckpointError. Looks at bytes, not the name.

    ``parse=False`` reads only the first bytes and the sizes they claim (what the API does before
    handing the file to the validator subprocess, which parses headers and graphs under its memory
    cap); an ONNX file is then only recognised by its first byte.
    """
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path.name} is empty")
    with path.open("rb") as fh:
        head = fh.read(16)
    if zipfile.is_zipfile(path):
        if parse:
            _check_zip_sizes(path, size)
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
                raise CheckpointError(f"{path.name}: safetensors header of {header_len} bytes exceeds the "
                                      f"{MAX_HEADER_BYTES // 2**20} MB cap")
            if 8 + header_len > size:
                raise CheckpointError(f"{path.name} is truncated: its safetensors header claims "
                                      f"{header_len} bytes but the file has {size - 8}")
            if parse:
                _check_safetensors_length(path, header_len, size)
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol >= 2 (legacy torch.save)
        return "pickle"
    if not parse and head[:1] == b"\x08":   # the field every ONNX exporter writes first; parsed later
        return "onnx"
    # ONNX has no magic number: it is an ONNX file if it parses as a ModelProto with a graph.
    from robaudit.models.onnx_model import sniff_onnx
    if sniff_onnx(path):
        return "onnx"
    raise CheckpointError(f"{path.name} is not a checkpoint: expected a .safetensors file, a "
                          "torch.save()d state_dict (.pt) or an ONNX model (.onnx)")


def _check_zip_sizes(path: Path, size: int) -> None:
    """Refuse a zip whose entries claim far more bytes than the file holds, before anything inflates them."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path.name} is truncated or corrupt: {str(exc)[:200]}") from None
    claimed = sum(entry.file_size for entry in entries)
    if claimed > MAX_ZIP_EXPANSION * size + ZIP_SLACK_BYTES:
        raise CheckpointError(f"{path.name} was refused: its zip entries claim {claimed} bytes uncompressed from a "
                              f"{size}-byte file. torch.save() never compresses, so this is a zip bomb or not a "
                              "checkpoint")


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
    return unwrap_state_dict(obj, path.name)


# Containers a training script saves the weights in, looked up in this order.
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "ema")
# Prefixes wrappers add to every key: DataParallel ("module."), torch.compile ("_orig_mod."), a model held as
# an attribute ("model.", "net."), the official Feature Scattering code ("module.basic_net.").
PREFIXES = ("module.", "_orig_mod.", "model.", "basic_net.", "net.")


def unwrap_state_dict(obj: Any, name: str) -> dict[str, torch.Tensor]:
    """The state_dict inside the usual containers ({"state_dict": ...}, {"model": {"ema": ...}}, ...)."""
    for _ in range(4):   # containers nest at most a few levels deep in practice
        if not (isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values())):
            break
        inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{name} does not hold a state_dict (a mapping of parameter names to tensors)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{name}: entry {str(bad[0])[:80]!r} is not a tensor; expected a plain state_dict")
    return {str(k): v for k, v in obj.items()}


def strip_prefixes(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Remove the wrapper prefixes every key shares, repeatedly; returns (state, normalised key -> file key)."""
    original = {k: k for k in state}
    # torch.optim.swa_utils.AveragedModel keeps its step count beside the "module." keys.
    if "n_averaged" in state and len(state) > 1 and all(k.startswith("module.") for k in state if k != "n_averaged"):
        state = {k: v for k, v in state.items() if k != "n_averaged"}
        original.pop("n_averaged")
    stripped = True
    while stripped and state:
        stripped = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                original = {k[len(prefix):]: v for k, v in original.items()}
                stripped = True
    return state, original


def _fmt(shape: Any) -> str:
    dims = [int(d) for d in shape]
    return "(" + ", ".join(map(str, dims)) + ("," if len(dims) == 1 else "") + ")"


def _aligned(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], original_keys: dict[str, str],
             arch: str) -> tuple[dict[str, torch.Tensor], bool]:
    """``state`` under the model's keys (a bare network's keys go under "1."), and whether the file held
    robaudit's wrapper; a missing, extra or wrong-shaped key is an error naming the file's own key."""
    wrapped = any(k.startswith(("0.", "1.")) for k in state)
    own: dict[str, str] = dict(original_keys)
    # A bare network (no Normalize layer) is accepted: its keys live under "1.". Messages name the
    # network's keys as the file has them, never robaudit's wrapper keys.
    if not wrapped:
        own = {f"1.{k}": v for k, v in original_keys.items()}
        state = {**{k: v for k, v in expected.items() if k.startswith("0.")},
                 **{f"1.{k}": v for k, v in state.items()}}
    else:
        state = dict(state)
    # The prefix the file's keys carry, for keys the file lacks.
    prefix = next((o[: len(o) - len(k)] for k, o in original_keys.items() if o.endswith(k)), "")

    def name(key: str) -> str:
        return own.get(key) or prefix + (key[2:] if not wrapped and key.startswith("1.") else key)

    for key, want in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):   # not saved by old PyTorch; BatchNorm fills it in
                state[key] = want
                continue
            raise CheckpointError(f"checkpoint does not match {arch}: the file has no {name(key)!r} "
                                  f"({arch} has it, shape {_fmt(want.shape)})")
        got = state[key]
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(f"checkpoint does not match {arch}: the file's {name(key)!r} is "
                                  f"{_fmt(got.shape)} where {arch} has {_fmt(want.shape)}")
    extra = [k for k in state if k not in expected]
    if extra:
        raise CheckpointError(f"checkpoint does not match {arch}: the file's {name(extra[0])!r} "
                              f"{_fmt(state[extra[0]].shape)} is not part of {arch}")
    return state, wrapped


def load_into(model: nn.Module, state: dict[str, torch.Tensor], *, arch: str = "model",
              original_keys: dict[str, str] | None = None) -> None:
    """Strict load; a mismatch names the first bad key as the file spells it, with both shapes.

    ``original_keys`` maps the keys of ``state`` to the file's own (strip_prefixes' map); without it
    the prefixes are stripped here.
    """
    if original_keys is None:
        state, original_keys = strip_prefixes(state)
    expected = model.state_dict()
    state, wrapped = _aligned(expected, state, original_keys, arch)
    # A robaudit-wrapped file saved without metadata carries its own Normalize buffers: they must agree
    # with the preprocessing given, or one of the two is wrong and the model would be audited on the wrong inputs.
    for key in ("0.mean", "0.std"):
        if wrapped and key in expected and state[key].shape == expected[key].shape \
                and not torch.allclose(state[key].float(), expected[key].float(), rtol=1e-5, atol=1e-7):
            raise CheckpointError(f"the file's own normalisation {key!r} is {state[key].flatten().tolist()} but "
                                  f"{expected[key].flatten().tolist()} was given; give the preprocessing the "
                                  "network was trained with")
    model.load_state_dict(state, strict=True)


@dataclass(frozen=True)
class ForeignFile:
    """What the caller knows of a file without robaudit metadata.

    ``arch`` may be left out when recognition can tell (models/recognize.py); the preprocessing may
    not (models/preprocessing.py). The dataset's shape (classes, channels, image size) comes from the
    caller, since this package does not know the datasets.
    """

    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    num_classes: int | None = None      # the dataset's, when a dataset is named
    in_channels: int | None = None
    input_size: int | None = None
    preprocessing: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    input_range: list[float] | None = None


@dataclass(frozen=True)
class Described:
    """A foreign file's metadata as worked out by describe_foreign, and what recognition said."""

    metadata: CheckpointMetadata
    detected_arch: str | None      # set when the architecture was recognised rather than given
    message: str


def read_shapes(path: str | Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Normalised key -> shape, and normalised key -> the file's key; a safetensors file's tensors are not read."""
    path = Path(path)
    if sniff_format(path) == "safetensors":
        try:
            with safe_open(str(path), framework="pt") as fh:
                raw = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise CheckpointError(f"{path.name} is truncated or corrupt: {exc}") from None
        if not raw:
            raise CheckpointError(f"{path.name} holds no tensors")
        meta_tensors = {k: torch.empty(v, device="meta") for k, v in raw.items()}
        state, original = strip_prefixes(meta_tensors)
    else:
        state, original = strip_prefixes(read_state_dict(path))
    return {k: tuple(v.shape) for k, v in state.items()}, original


def describe_foreign(shapes: dict[str, tuple[int, ...]], original_keys: dict[str, str], given: ForeignFile,
                     name: str = "the file") -> Described:
    """Complete metadata for a file without any: the architecture (given or recognised), the class count
    and channels (the dataset's, checked against the file's), and the preprocessing (required)."""
    from robaudit.models.preprocessing import check_input_range, resolve_preprocessing
    from robaudit.models.recognize import recognize  # imports this module

    recognition = recognize(shapes, original_keys=original_keys)
    detected = None
    if given.arch:
        arch = given.arch
    elif recognition.arch is not None:
        arch = detected = recognition.arch
    else:
        raise Unrecognised(f"{name}: {recognition.message}", recognition.closest)
    num_classes, in_channels = given.num_classes, given.in_channels
    if detected is not None:
        found = (recognition.num_classes, recognition.in_channels)
        if num_classes is not None and in_channels is not None and found != (num_classes, in_channels):
            raise CheckpointError(
                f"dataset/architecture mismatch: {name} is a {detected} for {found[0]} classes and {found[1]} input "
                f"channel(s), but {given.dataset or 'the dataset'} has {num_classes} and {in_channels}")
        num_classes, in_channels = found
    elif num_classes is None or in_channels is None:
        if recognition.arch is None:
            raise CheckpointError(f"{name} carries no robaudit metadata: give the dataset as well as the "
                                  "architecture (its class count and channels)")
        num_classes, in_channels = recognition.num_classes, recognition.in_channels
    assert num_classes is not None and in_channels is not None
    if detected is None:   # a wrong architecture or dataset is reported before a missing preprocessing
        probe = CheckpointMetadata(arch=arch, arch_kwargs=dict(given.arch_kwargs), num_classes=num_classes,
                                   in_channels=in_channels, mean=[0.0] * in_channels, std=[1.0] * in_channels)
        with torch.device("meta"):
            expected = build_from_metadata(probe).state_dict()
        try:
            _aligned(expected, {k: torch.empty(v, device="meta") for k, v in shapes.items()}, original_keys, arch)
        except CheckpointError as exc:
            raise _naming_the_match(exc, recognition.arch, arch) from None
    preprocessing, mean, std = resolve_preprocessing(given.preprocessing, given.mean, given.std, in_channels)
    input_size = given.input_size or (recognition.input_size if detected else None)
    meta = CheckpointMetadata(arch=arch, arch_kwargs=dict(given.arch_kwargs), num_classes=num_classes,
                              in_channels=in_channels, mean=mean, std=std, dataset=given.dataset,
                              input_size=input_size, preprocessing=preprocessing,
                              input_range=check_input_range(given.input_range))
    return Described(meta, detected, recognition.message if detected else "")


def _naming_the_match(exc: CheckpointError, found: str | None, arch: str) -> CheckpointError:
    """The mismatch error, plus which catalogue network the file is when it is one."""
    if found is None or found == arch:
        return exc
    return CheckpointError(f"{exc}; the file is a {found} (leave the architecture out to use it)")


def build_from_metadata(meta: CheckpointMetadata) -> nn.Module:
    """The NormalizedModel a metadata describes; a [0, 255] network's range is folded into Normalize."""
    from robaudit.models.preprocessing import input_scale  # imports this module

    scale = input_scale(meta.input_range)
    try:
        key, kwargs = resolve_arch(meta.arch, meta.arch_kwargs)
        return build_model(key, num_classes=meta.num_classes, in_channels=meta.in_channels,
                           mean=[m / scale for m in meta.mean], std=[s / scale for s in meta.std], **kwargs)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


def load_checkpoint(path: str | Path, *, metadata: CheckpointMetadata | None = None,
                    device: str | torch.device = "cpu",
                    foreign: ForeignFile | None = None) -> tuple[nn.Module, CheckpointMetadata]:
    """Build the architecture and load the weights strictly; returns (model in eval mode, metadata).

    A file with robaudit metadata is loaded as it states. A file without needs either complete
    ``metadata`` (the service stores it at upload) or ``foreign``: what the user said about it, from
    which describe_foreign works out the rest (recognising the architecture when none is given).
    """
    path = Path(path)
    if sniff_format(path) == "onnx":
        return _load_onnx_checkpoint(path, metadata or onnx_metadata(path, foreign), device)
    stored = read_metadata(path)
    state, original = strip_prefixes(read_state_dict(path))
    meta = stored or metadata
    if meta is None:
        if foreign is None:
            raise CheckpointError(f"{path.name} carries no robaudit metadata: give the architecture (or let it be "
                                  "recognised), the dataset and the preprocessing")
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        meta = describe_foreign(shapes, original, foreign, path.name).metadata
    meta = upgrade_format_1_metadata(meta)
    if meta.format_version == 1:   # robaudit's own old files: their keys in today's layout
        state, original = strip_prefixes(rename_format_1_keys(read_state_dict(path), meta))
    model = build_from_metadata(meta)
    try:
        load_into(model, state, arch=meta.arch, original_keys=original)
    except CheckpointError as exc:
        if stored is None:   # the user named the architecture: say what the file is, if it is anything known
            from robaudit.models.recognize import recognize  # imports this module

            found = recognize({k: tuple(v.shape) for k, v in state.items()}, original_keys=original).arch
            raise _naming_the_match(exc, found, meta.arch) from None
        raise
    return model.to(device).eval(), meta


def onnx_metadata(path: Path, foreign: ForeignFile | None) -> CheckpointMetadata | None:
    """An ONNX graph is its own architecture; what it needs is the dataset's shape and the preprocessing."""
    if foreign is None:
        return None
    if foreign.num_classes is None or foreign.in_channels is None:
        raise CheckpointError(f"{path.name} is an ONNX graph, which carries no robaudit metadata: give the dataset "
                              "(its classes, channels and image size) and the preprocessing")
    if foreign.input_range not in (None, [0.0, 1.0]):
        raise CheckpointError(f"{path.name}: an ONNX graph is given [0, 1] images; for a network trained on "
                              "[0, 255] give mean and std divided by 255 instead of input_range")
    from robaudit.models.preprocessing import resolve_preprocessing

    name, mean, std = resolve_preprocessing(foreign.preprocessing, foreign.mean, foreign.std, foreign.in_channels)
    return CheckpointMetadata(arch="onnx", num_classes=foreign.num_classes, in_channels=foreign.in_channels,
                              mean=mean, std=std, dataset=foreign.dataset, input_size=foreign.input_size,
                              preprocessing=name)


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
