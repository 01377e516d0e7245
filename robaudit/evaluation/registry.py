"""One entry per attack: everything the engine, the progress estimate, the diagnostics and the charts
need to know about it. Adding an attack is one module (its runner) plus one entry here, or a call to
``register`` from outside the package::

    def run_my_attack(run, attack, eps):             # see robaudit.evaluation.runners
        ...

    register(AttackInfo("my-attack", "my-attack", "My attack", white_box=True, stepped=False, order=13,
                        run_order=65, cost=Cost(1.0, fixed(2)), runner=run_my_attack))

Row names in the results JSON are an entry's ``name``; AutoAttack's cumulative stages come as
``autoattack:<stage>`` and the curves' bitsets as ``<name>-steps-curve`` / ``<name>-eps-curve``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from robaudit.evaluation.cost import Cost, fixed
from robaudit.evaluation.results import EPS_CURVE, LARGE_EPS, STEPS_CURVE
from robaudit.evaluation.runners.autoattack import STAGE_COSTS, STANDARD_COST, run_single_stage, run_standard
from robaudit.evaluation.runners.noise import run_noise
from robaudit.evaluation.runners.onestep import run_one_step
from robaudit.evaluation.runners.pgd import run_pgd
from robaudit.evaluation.runners.randomized import EOT_PGD_STEPS, RAND_COST, run_autoattack_rand, run_eot_pgd
from robaudit.evaluation.runners.transfer import run_transfer

if TYPE_CHECKING:
    from robaudit.evaluation.presets import EvalSpec
    from robaudit.evaluation.run import Run

# runner(run, attack, eps): attack the clean-correct points at eps and add the rows (robaudit.evaluation.runners)
Runner = Callable[["Run", "AttackInfo", float], None]


@dataclass(frozen=True)
class AttackInfo:
    name: str           # the name users pass (--attacks) and results rows carry
    family: str         # chart family: one colour and marker per family
    label: str          # how pages and reports name it
    white_box: bool     # uses the model's gradients (the diagnostics compare these with black-box ones)
    stepped: bool       # has a step count that the steps-curve and the labels show (PGD-20)
    order: int          # position in the attack ladder of the charts, weakest first
    run_order: float    # position in the evaluation's schedule at each eps (PGD's follow-ups sit at 45-47)
    cost: Cost          # work units, for the progress bar and the ETA
    runner: Runner
    norms: tuple[str, ...] = ("linf",)   # the threat models it has a version for (robaudit.norms)


def _long_run_steps(spec: EvalSpec) -> float:
    return max(spec.steps) + 1       # iterates 0..steps are each scored


LINF_L2, EVERY_NORM = ("linf", "l2"), ("linf", "l2", "l1")
# In the order ``--attacks`` lists them. FGSM under L2 is FGM (one normalised-gradient step of length
# eps), PGD and CW are PGD-L2, transfer is PGD-L2 on the surrogate; AutoAttack has all three norms.
ATTACKS: dict[str, AttackInfo] = {a.name: a for a in (
    AttackInfo("fgsm", "fgsm", "FGSM", white_box=True, stepped=False, order=3, run_order=10,
               cost=Cost(1.0, fixed(2)), runner=partial(run_one_step, random_start=False), norms=LINF_L2),
    AttackInfo("rs-fgsm", "rs-fgsm", "RS-FGSM", white_box=True, stepped=False, order=4, run_order=20,
               cost=Cost(1.0, fixed(2)), runner=partial(run_one_step, random_start=True), norms=LINF_L2),
    AttackInfo("pgd", "pgd", "PGD", white_box=True, stepped=True, order=5, run_order=30,
               cost=Cost(1.0, _long_run_steps), runner=partial(run_pgd, loss="ce"), norms=LINF_L2),
    AttackInfo("cw", "cw", "CW", white_box=True, stepped=True, order=6, run_order=40,
               cost=Cost(1.0, _long_run_steps), runner=partial(run_pgd, loss="cw"), norms=LINF_L2),
    AttackInfo("apgd-ce", "apgd-ce", "APGD-CE", white_box=True, stepped=True, order=7, run_order=80,
               cost=STAGE_COSTS["apgd-ce"], runner=run_single_stage, norms=EVERY_NORM),
    AttackInfo("apgd-t", "apgd-dlr", "APGD-T", white_box=True, stepped=True, order=8, run_order=90,
               cost=STAGE_COSTS["apgd-t"], runner=run_single_stage, norms=EVERY_NORM),
    AttackInfo("fab-t", "fab", "FAB-T", white_box=True, stepped=False, order=9, run_order=100,
               cost=STAGE_COSTS["fab-t"], runner=run_single_stage, norms=EVERY_NORM),
    AttackInfo("square", "square", "Square", white_box=False, stepped=False, order=10, run_order=110,
               cost=STAGE_COSTS["square"], runner=run_single_stage, norms=EVERY_NORM),
    AttackInfo("autoattack", "autoattack", "AutoAttack", white_box=False, stepped=False, order=12, run_order=120,
               cost=STANDARD_COST, runner=run_standard, norms=EVERY_NORM),
    AttackInfo("transfer", "transfer", "transfer", white_box=False, stepped=True, order=2, run_order=70,
               cost=Cost(1.0, lambda spec: spec.transfer_steps + 1), runner=run_transfer, norms=LINF_L2),
    # For a randomized forward pass: each step averages eot_draws passes (added by the engine when C11's
    # probe finds the forward pass random; robaudit.evaluation.runners.randomized).
    AttackInfo("eot-pgd", "eot-pgd", "EOT-PGD", white_box=True, stepped=True, order=13, run_order=125,
               cost=Cost(1.0, lambda spec: spec.eot_draws * (EOT_PGD_STEPS + 1)), runner=run_eot_pgd,
               norms=LINF_L2),
    AttackInfo("autoattack-rand", "autoattack-rand", "AutoAttack rand", white_box=True, stepped=False, order=14,
               run_order=130, cost=RAND_COST, runner=run_autoattack_rand,
               norms=LINF_L2),
    # A point stops being sampled once fooled: about half the draws are made (0.4: forward only).
    AttackInfo("noise", "noise", "random noise", white_box=False, stepped=False, order=1, run_order=60,
               cost=Cost(0.4, lambda spec: spec.noise_draws, share=0.5), runner=run_noise, norms=EVERY_NORM),
)}

# What the engine adds when the forward pass is random (EvalSpec.auto_eot).
RANDOMIZED_ATTACKS = ("eot-pgd", "autoattack-rand")

# Row families that are not attacks but share the charts' vocabulary.
CLEAN, WORST, AA_STAGE = "clean", "worst", "aa-stage"
PSEUDO_FAMILIES = {CLEAN: ("clean", 0), AA_STAGE: ("AutoAttack stage", 11), WORST: ("worst case", 99)}


def register(info: AttackInfo) -> None:
    """Add an attack; from then on ``--attacks`` accepts its name and evaluations run it in its slot."""
    if info.name in ATTACKS:
        raise ValueError(f"an attack named {info.name!r} is already registered")
    if ":" in info.name or "@" in info.name or "/" in info.name:
        raise ValueError(f"attack names cannot contain ':', '@' or '/' (they are part of result keys): {info.name!r}")
    ATTACKS[info.name] = info


def unregister(name: str) -> AttackInfo:
    """Remove an attack added with ``register`` (and return its entry)."""
    return ATTACKS.pop(name)


def family_of(name: str) -> str:
    """The chart family of a results row's attack name (``autoattack:apgd-t`` is an AutoAttack stage)."""
    if name.startswith("autoattack:"):
        return AA_STAGE
    if name in (CLEAN, WORST, "worst-case"):
        return WORST if name != CLEAN else CLEAN
    base = name.removesuffix(STEPS_CURVE).removesuffix(EPS_CURVE).removesuffix(LARGE_EPS)
    info = ATTACKS.get(base)
    return info.family if info is not None else base


def is_white_box(name: str) -> bool:
    """Whether a results row or bitset name comes from a gradient attack (AutoAttack stages count by stage)."""
    if name.startswith("autoattack:"):
        name = name.split(":", 1)[1]
    base = name.removesuffix(STEPS_CURVE).removesuffix(EPS_CURVE)   # large-eps runs are a check, not an attack
    info = ATTACKS.get(base)
    return info is not None and info.white_box
