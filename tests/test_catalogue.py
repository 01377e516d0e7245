"""Every catalogue architecture loads a state_dict saved from an independent definition of the original
network (tests/published_nets.py) and gives the same logits.

The big networks (WRN-34-20, WRN-70-16) and the TRADES-file WRNs (which differ from the RobustBench ones,
checked at full size, only by an unused sub_block1) are checked in two parts that together cover them:
every key and shape at full size on the meta device (no memory, no time), and the logits at width 1 with
the full depth, through the same catalogue name with a width override (the same code at every width).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from published_nets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    PUBLISHED,
    TIMM_MODEL,
    DMWideResNet,
    FastPreActResNet18,
    RBWideResNet,
)
from safetensors.torch import save_file
from torch import nn

from robaudit.models.checkpoint import FORMAT_VERSION, CheckpointError, CheckpointMetadata, load_checkpoint
from robaudit.models.registry import CATALOGUE, architecture_names, build_network, resolve_arch

# Checked at full size through keys and shapes only; logits at this width (kwargs override, same depth).
NARROW_KWARGS = {"wrn-34-20": {"widen_factor": 1}, "wrn-70-16": {"widen_factor": 1},
                 "trades-wrn-28-10": {"widen_factor": 1}, "trades-wrn-34-10": {"widen_factor": 1},
                 "trades-wrn-34-20": {"widen_factor": 1}, "dm-wrn-70-16": {"width": 1}}


# Keys and shapes only: robaudit builds it with the same torchvision call as torchvision:resnet50 (only the
# name differs), whose logits are checked; building and running a 69 M-parameter net twice costs ~15 s here.
SHAPES_ONLY = {"torchvision:wide_resnet50_2"}


def same_keys_and_shapes(name: str, k: int, c: int) -> None:
    with torch.device("meta"):
        ref = PUBLISHED[name](k, c).state_dict()
        ours = build_network(name, num_classes=k, in_channels=c).state_dict()
    assert {n: t.shape for n, t in ref.items()} == {n: t.shape for n, t in ours.items()}


def narrow_published(name: str, k: int, c: int) -> nn.Module:
    depth = int(name.split("-")[-2])
    if name.startswith("dm-"):
        return DMWideResNet(depth, 1, k, c)
    return RBWideResNet(depth, 1, k, c, sub_block1=name.startswith("trades-"))


def shape_of(name: str) -> tuple[int, int, int]:
    """(num_classes, in_channels, input size) to test an entry with."""
    if name.startswith("timm:"):
        return 1000, 3, 224
    entry = CATALOGUE[name]
    return (1000 if entry.input_size == 224 else 10), (1 if entry.input_size == 28 else 3), entry.input_size


def randomise(net: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere (also where the original init puts constants) and random BatchNorm
    running statistics, so every tensor of the file changes the logits; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.normal_(0, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
                m.weight.normal_(1, 0.1, generator=gen)
                m.bias.normal_(0, 0.1, generator=gen)
        for p in net.parameters():
            if bool(p.min() == p.max()):   # constant: TRADES' zero last layer, zero-initialised biases
                p.normal_(0, 0.05, generator=gen)
    return net.eval()


def save_bare(net: nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def metadata_for(name: str, k: int, c: int, **arch_kwargs: int) -> CheckpointMetadata:
    # DeepMind-layout checkpoints normalise inside their own code with CIFAR-10 statistics that are not in
    # the file: the user passes them as preprocessing. Everything else here was trained on raw [0, 1] input.
    mean, std = (list(CIFAR10_MEAN), list(CIFAR10_STD)) if name.startswith("dm-") else ([0.0] * c, [1.0] * c)
    return CheckpointMetadata(arch=name, num_classes=k, in_channels=c, mean=mean, std=std,
                              arch_kwargs=dict(arch_kwargs))


def assert_same_logits(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ref.std() > 0, "degenerate reference logits: the comparison would prove nothing"
    scale = max(1.0, float(ref.abs().max()))
    assert (ours - ref).abs().max().item() <= 1e-6 * scale


def test_every_catalogue_entry_has_a_published_definition() -> None:
    assert set(CATALOGUE) <= set(PUBLISHED)
    assert set(CATALOGUE) <= set(architecture_names())
    assert not any(n.startswith("timm:") for n in architecture_names())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_state_dict_loads_with_identical_logits(name: str, tmp_path: Path) -> None:
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    k, c, size = shape_of(name)
    overrides = NARROW_KWARGS.get(name, {})
    if name in SHAPES_ONLY or overrides:   # every key and shape at full size, without allocating
        same_keys_and_shapes(name, k, c)
    if name in SHAPES_ONLY:
        return
    if overrides:
        torch.manual_seed(0)
        ref = randomise(narrow_published(name, k, c), seed=1)
    else:
        torch.manual_seed(0)
        ref = randomise(PUBLISHED[name](k, c), seed=1)
    path = save_bare(ref, tmp_path / "published.safetensors")
    model, meta = load_checkpoint(path, metadata=metadata_for(name, k, c, **overrides))
    batch = 1 if size == 224 or overrides or sum(p.numel() for p in ref.parameters()) > 20e6 else 3
    x = torch.rand(batch, c, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_same_logits(model(x), ref(x))


def test_preact_shortcut_variant_is_an_argument(tmp_path: Path) -> None:
    """pytorch-cifar / RobustBench out_shortcut=True feed the projection the pre-activated input: same keys,
    other function. shortcut_from="preact" reproduces it; the default (fast_adversarial's) does not."""
    torch.manual_seed(0)
    ref = randomise(FastPreActResNet18(10, 3, out_shortcut=True), seed=3)
    path = save_bare(ref, tmp_path / "preact.safetensors")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    model, _ = load_checkpoint(path, metadata=CheckpointMetadata(
        arch="preactresnet18", num_classes=10, in_channels=3, mean=[0.0] * 3, std=[1.0] * 3,
        arch_kwargs={"shortcut_from": "preact"}))
    default, _ = load_checkpoint(path, metadata=metadata_for("preactresnet18", 10, 3))
    with torch.no_grad():
        assert_same_logits(model(x), ref(x))
        assert (default(x) - ref(x)).abs().max() > 1e-3


def test_feature_scattering_checkpoint_loads_as_wrn(tmp_path: Path) -> None:
    """The official Feature Scattering code saves its WideResNet (TRADES layout, forward returning
    (logits, features)) under a module.basic_net. prefix; there is no PreActResNet in that code."""
    torch.manual_seed(0)
    ref = randomise(RBWideResNet(28, 1, 10, 3, feature_output=True), seed=5)
    state = {f"module.basic_net.{k}": v for k, v in ref.state_dict().items()}
    path = tmp_path / "fs.pt"
    torch.save({"net": state}, path)
    model, _ = load_checkpoint(path, metadata=metadata_for("wrn-28-10", 10, 3, widen_factor=1))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert_same_logits(model(x), ref(x)[0])


@pytest.mark.parametrize("name", ["activation", "depth"])
def test_bad_arch_arguments_are_one_line(name: str, tmp_path: Path) -> None:
    path = save_bare(RBWideResNet(16, 1, 10, 3), tmp_path / "w.safetensors")
    kwargs: dict[str, object] = {"activation": "tanh"} if name == "activation" else {"depth": 17}
    meta = CheckpointMetadata(arch="wideresnet", num_classes=10, in_channels=3, mean=[0.0] * 3, std=[1.0] * 3,
                              arch_kwargs=kwargs)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path, metadata=meta)
    assert "\n" not in str(exc.value) and ("tanh" in str(exc.value) or "6n+4" in str(exc.value))


def test_activation_variants_build_and_differ() -> None:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    outputs = {}
    for act in ("relu", "swish", "silu"):
        torch.manual_seed(0)
        net = randomise(build_network("dm-wrn-28-10", num_classes=10, in_channels=3, width=1, activation=act), 8)
        with torch.no_grad():
            outputs[act] = net(x)
    assert torch.allclose(outputs["swish"], outputs["silu"], atol=1e-5)   # the same function, two kernels
    assert (outputs["relu"] - outputs["swish"]).abs().max() > 1e-3


def test_timm_names_resolve_dynamically_and_fail_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_arch(f"timm:{TIMM_MODEL}") == ("timm", {"model_name": TIMM_MODEL})
    if pytest.importorskip("timm"):
        with pytest.raises(ValueError, match="no model named 'not_a_model'"):
            build_network("timm:not_a_model", num_classes=10, in_channels=3)
    monkeypatch.setitem(sys.modules, "timm", None)   # as if timm were not installed
    with pytest.raises(ValueError, match=r"needs timm, which is not installed: pip install 'robaudit\[timm\]'"):
        build_network(f"timm:{TIMM_MODEL}", num_classes=10, in_channels=3)


def test_unknown_names_list_the_catalogue() -> None:
    with pytest.raises(ValueError) as exc:
        resolve_arch("torchvision:resnet18")
    assert "torchvision:resnet50" in str(exc.value) and "timm:NAME" in str(exc.value)
    with pytest.raises(ValueError, match="3 input channels"):
        build_network("torchvision:resnet50", num_classes=10, in_channels=1)


def format_1_keys(state: dict[str, torch.Tensor], arch: str, per_group: int = 0) -> dict[str, torch.Tensor]:
    """The keys robaudit wrote before format 2, spelled out here from the old layouts: PreActResNet-18 kept
    its eight blocks in ``layers`` with a bare-conv ``shortcut``; WideResNet kept ``blocks.N``, ``shortcut``
    and a final ``bn``. Both under the Normalize wrapper's ``1.``."""
    old = {}
    for key, value in state.items():
        parts = key.split(".")
        if arch == "preactresnet18" and parts[0].startswith("layer"):
            index = 2 * (int(parts[0][5:]) - 1) + int(parts[1])
            rest = ".".join(parts[2:]).replace("shortcut.0.", "shortcut.")
            key = f"layers.{index}.{rest}"
        elif arch == "wideresnet" and parts[0].startswith("block"):
            index = per_group * (int(parts[0][5:]) - 1) + int(parts[2])
            key = f"blocks.{index}." + ".".join(parts[3:]).replace("convShortcut.", "shortcut.")
        elif arch == "wideresnet" and parts[0] == "bn1":
            key = "bn." + ".".join(parts[1:])
        old[f"1.{key}"] = value
    return old


@pytest.mark.parametrize("arch", ["preactresnet18", "wideresnet"])
def test_format_1_checkpoint_still_loads_with_the_same_logits(arch: str, tmp_path: Path) -> None:
    """A robaudit checkpoint written before the published layouts (format 1) loads unchanged: keys renamed,
    and its PreActResNet's projection shortcuts still fed the pre-activated input (as robaudit's were)."""
    assert FORMAT_VERSION == 2
    torch.manual_seed(0)
    if arch == "preactresnet18":
        ref, kwargs, per_group = randomise(FastPreActResNet18(10, 3, out_shortcut=True), 9), {}, 0
    else:
        ref, kwargs, per_group = randomise(RBWideResNet(16, 2, 10, 3), 9), {"depth": 16, "widen_factor": 2}, 2
    state = format_1_keys(ref.state_dict(), arch, per_group)
    state |= {"0.mean": torch.zeros(1, 3, 1, 1), "0.std": torch.ones(1, 3, 1, 1)}
    meta = CheckpointMetadata(arch=arch, arch_kwargs=kwargs, num_classes=10, in_channels=3, mean=[0.0] * 3,
                              std=[1.0] * 3, dataset="cifar10", format_version=1)
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"robaudit": meta.to_json()})
    model, loaded = load_checkpoint(path)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        assert_same_logits(model(x), ref(x))
    assert loaded.format_version == 1


def test_no_two_catalogue_entries_have_the_same_keys_and_shapes() -> None:
    """Recognition of an upload matches keys and shapes against the catalogue: every entry must be
    distinguishable from every other (variants with the same keys are arch_kwargs, not names)."""
    seen: dict[frozenset[tuple[str, tuple[int, ...]]], str] = {}
    for name in CATALOGUE:
        k, c, _ = shape_of(name)
        with torch.device("meta"):
            state = build_network(name, num_classes=k, in_channels=c).state_dict()
        signature = frozenset((key, tuple(t.shape)) for key, t in state.items())
        assert signature not in seen, f"{name} and {seen.get(signature)} have the same keys and shapes"
        seen[signature] = name
