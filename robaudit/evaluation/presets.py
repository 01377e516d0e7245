"""What an evaluation runs: the EvalSpec, the three presets, and build_spec's validation.

Presets (eps in [0, 1] pixel units; default = the dataset's ``default_eps``, 0.3 MNIST, 8/255 CIFAR):

* ``quick``: FGSM, PGD-20 and CW-20 at one eps.
* ``paper``: the Feature Scattering repo's protocol (RS-FGSM; PGD-20 with alpha = eps/4; CW-20 with
  kappa = 50; random start, no restarts) plus PGD-100 and CW-100. PGD-20 and PGD-100 are read off
  one 100-step run (see robaudit.attacks.pgd), likewise CW.
* ``audit``: ``paper`` plus textbook FGSM, the accuracy-vs-eps curve (PGD-20 at 0.25..1.25 x eps,
  nested), the steps curve of the 100-step runs, PGD-20 with 5 restarts, AutoAttack standard
  (stage by stage, on the first 200 points: see AUDIT_AUTOATTACK_EXAMPLES), random noise (100
  draws), a transfer attack when a surrogate is given, PGD at eps = 0.5 and 1.0 on the first 200
  points (check C2), and every diagnostic.

Step size: ``alpha = max(eps/4, 2.5*eps/steps)`` for the longest run unless given; rows read off a
long run at fewer steps state that run's alpha. 20 * alpha >= eps always holds for the default, so
the steps curve measures the defense rather than the step size; a user alpha that breaks this is
reported in ``notes``. Under L2 the same rule gives the L2 length of each normalised-gradient step.

Norm (``norm``: linf, l2 or l1; robaudit.norms): one per evaluation. The default eps is the
dataset's for that norm (robaudit.data); the eps curve takes the same fractions of it; the large-eps
check C2 runs at half and all of the norm's diameter of the image box (L-inf 0.5 and 1; L2
0.5*sqrt(d) and sqrt(d); d = pixels per image). An attack without a version for the norm is refused
when asked for by name and left out of a preset (registry: ``AttackInfo.norms``); under L1 only
AutoAttack (its APGD-L1 standard version, stage by stage) and random noise exist, so the L1 audit
has no PGD rows and no PGD curves.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, TypeVar

from robaudit.data import DATASETS, dataset_info
from robaudit.errors import RobauditError
from robaudit.evaluation.diagnostics import Thresholds
from robaudit.evaluation.registry import ATTACKS
from robaudit.evaluation.runners.pgd import STEPS_CURVE_GRID
from robaudit.norms import DEFAULT_NORM, check_norm, diameter, label, large_eps

T = TypeVar("T")
# ATTACKS (the registry, name -> entry) is what --attacks accepts, including attacks registered later.
PRESETS = ("quick", "paper", "audit")
PRECISION_CHOICES = ("fp32", "bf16")
EPS_CURVE_FRACTIONS = (0.25, 0.5, 0.75, 1.0, 1.25)
LARGE_EPS = (0.5, 1.0)
# AutoAttack costs ~3 s of one CPU core per robust MNIST digit on a PGD-AT SmallCNN (APGD-T 0.7 s,
# FAB-T 1.2 s, Square 1.6 s; measured, see the README of benchmarks/), so the audit runs it on the
# first 200 points to fit 1,000 digits in 15 minutes on 2 cores. --aa-examples changes it.
AUDIT_AUTOATTACK_EXAMPLES = 200
# The gallery keeps the adversarial examples of the first 100 points by default, in every preset: the
# same N everywhere lets a quick run's stored batches serve a later audit (the N is part of their keys).
DEFAULT_GALLERY_EXAMPLES = 100


@dataclass(frozen=True)
class EvalSpec:
    dataset: str
    n_examples: int
    eps: tuple[float, ...]
    attacks: tuple[str, ...]
    steps: tuple[int, ...] = (20,)
    preset: str | None = None
    alpha: float | None = None          # PGD/CW step size; None: max(eps/4, 2.5*eps/max(steps))
    kappa: float = 50.0                 # CW margin confidence (Feature Scattering repo: 50)
    restarts: int = 1                   # > 1: extra PGD restarts on the points PGD-restart_steps left robust
    restart_steps: int = 20
    eps_curve: tuple[float, ...] = ()   # absolute eps grid for accuracy vs eps (nested, PGD-CE)
    eps_curve_steps: int = 20
    large_eps: tuple[float, ...] = ()   # check C2: PGD at these eps on the first large_eps_examples points
    large_eps_examples: int = 200
    large_eps_steps: int = 50
    noise_draws: int = 100
    transfer_steps: int = 20
    autoattack_examples: int | None = None  # AutoAttack on the first N points only (None: all)
    gallery_examples: int = 0           # keep adversarial examples of the first N points (robaudit.evaluation.gallery)
    diagnostics: bool = True
    # A randomized forward pass (found by check C11's probe, so with diagnostics on): add EOT-PGD and
    # AutoAttack rand (robaudit.evaluation.runners.randomized), judged over eot_draws passes.
    auto_eot: bool = True
    eot_draws: int = 20
    thresholds: Thresholds = field(default_factory=Thresholds)
    batch_size: int = 500               # with auto_batch_size: the size resolve_batch_size found
    seed: int = 0
    # Speed levers (robaudit.evaluation.accel, autobatch); all off by default.
    auto_batch_size: bool = False       # find the largest batch that fits (GPU) or runs fastest (CPU)
    precision: str = "fp32"             # "bf16": autocast the attack passes; C10 compares gradients with fp32
    channels_last: bool = False
    compile: bool = False               # torch.compile the forward (needs a C++ compiler on CPU)
    # The threat model (robaudit.norms); results stored before it existed are L-inf.
    norm: str = DEFAULT_NORM
    input_dims: int | None = None       # pixels per image: the L2/L1 diameter of the image box (check C2)

    @property
    def primary_eps(self) -> float:
        """The eps the curves, restarts and probes are built around: the first one given."""
        return self.eps[0]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("eps", "attacks", "steps", "eps_curve", "large_eps"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalSpec:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("eps", "attacks", "steps", "eps_curve", "large_eps"):
            if key in values:
                values[key] = tuple(values[key])
        if isinstance(values.get("thresholds"), dict):
            values["thresholds"] = Thresholds(**values["thresholds"])
        return cls(**values)


def _preset(name: str, eps: float, surrogate: bool, norm: str = DEFAULT_NORM, dims: int = 1) -> dict[str, Any]:
    if name == "quick":
        # Under L1 robaudit has no PGD of its own: AutoAttack's APGD-CE (L1 version) stands in.
        return dict(attacks=("fgsm", "pgd", "cw") if norm != "l1" else ("apgd-ce",), steps=(20,))
    if name == "paper":
        return dict(attacks=("rs-fgsm", "pgd", "cw"), steps=(20, 100))
    if name == "audit":
        attacks = ("fgsm", "rs-fgsm", "pgd", "cw", "autoattack", "noise") + (("transfer",) if surrogate else ())
        return dict(attacks=attacks, steps=(20, 100), restarts=5, restart_steps=20,
                    eps_curve=tuple(round(f * eps, 6) for f in EPS_CURVE_FRACTIONS), eps_curve_steps=20,
                    large_eps=LARGE_EPS if norm == "linf" else large_eps(norm, dims), large_eps_examples=200,
                    large_eps_steps=50,
                    autoattack_examples=AUDIT_AUTOATTACK_EXAMPLES)
    raise RobauditError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")


# What build_spec accepts for a list: a comma- or space-separated string, a list or tuple, or one value.
ListArg = str | float | int | list[Any] | tuple[Any, ...] | None


def _as_tuple(value: ListArg, kind: Callable[[Any], T], what: str) -> tuple[T, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] | tuple[Any, ...] = [v for v in value.replace(",", " ").split() if v]
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        items = [value]
    try:
        return tuple(kind(v) for v in items)
    except (TypeError, ValueError):
        raise RobauditError(f"bad {what}: {items!r}") from None


def attacks_for(norm: str) -> tuple[str, ...]:
    """The registered attacks that have a version under ``norm``, in registry order."""
    norm = check_norm(norm)
    return tuple(name for name, info in ATTACKS.items() if norm in info.norms)


def _parse_eps(value: Any) -> float:
    """A float, or a fraction such as '8/255'."""
    if isinstance(value, str) and "/" in value:
        num, _, den = value.partition("/")
        return float(num) / float(den)
    return float(value)


def build_spec(preset: str | None = None, attacks: ListArg = None, eps: ListArg = None, steps: ListArg = None,
               dataset: str = "mnist10k",
               n_examples: int = 1000, surrogate: bool = False, *, norm: str = DEFAULT_NORM, alpha: float | None = None,
               restarts: int | None = None, batch_size: int | str | None = None, seed: int | None = None,
               thresholds: Thresholds | dict[str, Any] | None = None, noise_draws: int | None = None,
               kappa: float | None = None, autoattack_examples: int | None = None, precision: str = "fp32",
               channels_last: bool = False, compile: bool = False, eot_draws: int | None = None,
               auto_eot: bool = True, gallery_examples: int | None = None,
               input_dims: int | None = None) -> EvalSpec:
    """Validate the request and build the spec; every problem is a RobauditError with a plain reason.

    ``attacks`` replaces the preset's attack list (curves that need PGD are dropped when PGD is);
    with neither ``preset`` nor ``attacks`` the ``quick`` preset is used. ``batch_size="auto"``
    leaves the size to ``robaudit.evaluation.autobatch.resolve_batch_size`` at evaluation time.
    """
    info = dataset_info(dataset)
    norm = check_norm(norm)
    dims = int(input_dims) if input_dims is not None else info.input_dims
    eps_values = _as_tuple(eps, _parse_eps, "eps") or (info.default_eps_for(norm),)
    largest = diameter(norm, dims)
    for value in eps_values:
        if norm == "linf" and not 0.0 < value <= 1.0:
            raise RobauditError(f"eps must be in (0, 1] in pixel units (e.g. 0.3 or 8/255), got {value:g}")
        if not 0.0 < value <= largest * (1 + 1e-9):
            raise RobauditError(f"{label(norm)} eps must be in (0, {largest:g}] for {dims} pixels in [0, 1] "
                                f"(a larger budget reaches nothing new), got {value:g}")
    if len(set(eps_values)) != len(eps_values):
        raise RobauditError("eps values must be distinct")
    if preset is None and attacks is None:
        preset = "quick"
    values: dict[str, Any] = _preset(preset, eps_values[0], surrogate, norm, dims) if preset is not None else \
        dict(attacks=(), steps=(20,))
    available = attacks_for(norm)
    if attacks is not None:
        chosen = _as_tuple(attacks, str, "attacks")
        unknown = [a for a in chosen if a not in ATTACKS]
        if unknown:
            raise RobauditError(f"unknown attack {unknown[0]!r}; choose from: {', '.join(ATTACKS)}")
        if not chosen:
            raise RobauditError("no attacks given")
        missing = [a for a in chosen if a not in available]
        if missing:
            raise RobauditError(f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no {label(norm)} "
                                f"version; under {norm} choose from: {', '.join(available)}")
        values["attacks"] = tuple(dict.fromkeys(chosen))
    else:   # a preset runs what exists under the norm
        values["attacks"] = tuple(a for a in values["attacks"] if a in available)
        if not values["attacks"]:
            raise RobauditError(f"the {preset} preset has no attack with an {label(norm)} version; choose "
                                f"--attacks from: {', '.join(available)}")
    if "pgd" not in values["attacks"]:
        values.update(eps_curve=(), restarts=1, large_eps=())
    if "transfer" in values["attacks"] and not surrogate:
        raise RobauditError("the transfer attack needs a surrogate model (--surrogate CHECKPOINT)")
    if steps is not None:
        values["steps"] = tuple(sorted(set(_as_tuple(steps, int, "steps"))))
        if not values["steps"]:
            raise RobauditError("no step counts given")
    if any(s < 1 for s in values["steps"]):
        raise RobauditError("steps must be at least 1")
    if max(values["steps"]) > STEPS_CURVE_GRID[-1]:
        raise RobauditError(f"at most {STEPS_CURVE_GRID[-1]} steps are supported")
    if isinstance(n_examples, bool) or int(n_examples) < 1:
        raise RobauditError(f"n_examples must be a positive integer, got {n_examples!r}")
    if alpha is not None and not 0.0 < alpha <= largest:
        raise RobauditError(f"alpha must be in (0, {largest:g}], got {alpha:g}")
    if restarts is not None:
        if restarts < 1:
            raise RobauditError("restarts must be at least 1")
        values["restarts"] = restarts
    if values.get("restarts", 1) > 1:
        values["restart_steps"] = min(values.get("restart_steps", 20), max(values["steps"]))
    auto_batch = batch_size == "auto"
    if auto_batch:
        batch_size = None
    elif batch_size is not None:
        try:
            batch_size = int(batch_size)
        except (TypeError, ValueError):
            raise RobauditError(f"batch size must be a positive integer or 'auto', got {batch_size!r}") from None
        if batch_size < 1:
            raise RobauditError("batch size must be at least 1")
    if precision not in PRECISION_CHOICES:
        raise RobauditError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISION_CHOICES)}")
    if autoattack_examples is not None:
        if autoattack_examples < 0:
            raise RobauditError("the number of AutoAttack examples must be positive (0 = all points)")
        values["autoattack_examples"] = autoattack_examples or None
    if gallery_examples is None:
        gallery_examples = DEFAULT_GALLERY_EXAMPLES
    if isinstance(gallery_examples, bool) or int(gallery_examples) < 0:
        raise RobauditError(f"the gallery's number of points must be 0 (none) or more, got {gallery_examples!r}")
    if noise_draws is not None and noise_draws < 1:
        raise RobauditError("noise draws must be at least 1")
    if eot_draws is not None and not 1 <= eot_draws <= 1000:
        raise RobauditError(f"EOT draws must be 1 to 1000, got {eot_draws}")
    if isinstance(thresholds, dict):
        thresholds = Thresholds.from_overrides(thresholds)
    spec = EvalSpec(dataset=dataset, n_examples=int(n_examples), eps=eps_values, preset=preset, alpha=alpha,
                    thresholds=thresholds or Thresholds(), auto_batch_size=auto_batch, precision=precision,
                    channels_last=bool(channels_last), compile=bool(compile), auto_eot=bool(auto_eot),
                    gallery_examples=int(gallery_examples), norm=norm, input_dims=dims, **values)
    overrides: dict[str, Any] = {k: v for k, v in dict(batch_size=batch_size, seed=seed, noise_draws=noise_draws,
                                                       kappa=kappa, eot_draws=eot_draws).items() if v is not None}
    return replace(spec, **overrides)


__all__ = ["ATTACKS", "PRECISION_CHOICES", "PRESETS", "EvalSpec", "attacks_for", "build_spec", "DATASETS"]
