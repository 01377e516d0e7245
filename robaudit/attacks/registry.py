"""One entry per attack: everything the engine, the progress estimate, the diagnostics and the charts
need to know about it. Adding an attack is one module (its runner) plus one entry here.

Row names in the results JSON are an entry's ``name``; AutoAttack's cumulative stages come as
``autoattack:<stage>`` and the curves' bitsets as ``<name>-steps-curve`` / ``<name>-eps-curve``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AttackInfo:
    name: str           # the name users pass (--attacks) and results rows carry
    family: str         # chart family: one colour and marker per family
    label: str          # how pages and reports name it
    white_box: bool     # uses the model's gradients (the diagnostics compare these with black-box ones)
    stepped: bool       # has a step count that the steps-curve and the labels show (PGD-20)
    order: int          # position in the attack ladder, weakest first


ATTACKS: dict[str, AttackInfo] = {a.name: a for a in (
    AttackInfo("noise", "noise", "random noise", white_box=False, stepped=False, order=1),
    AttackInfo("transfer", "transfer", "transfer", white_box=False, stepped=True, order=2),
    AttackInfo("fgsm", "fgsm", "FGSM", white_box=True, stepped=False, order=3),
    AttackInfo("rs-fgsm", "rs-fgsm", "RS-FGSM", white_box=True, stepped=False, order=4),
    AttackInfo("pgd", "pgd", "PGD", white_box=True, stepped=True, order=5),
    AttackInfo("cw", "cw", "CW", white_box=True, stepped=True, order=6),
    AttackInfo("apgd-ce", "apgd-ce", "APGD-CE", white_box=True, stepped=True, order=7),
    AttackInfo("apgd-t", "apgd-dlr", "APGD-T", white_box=True, stepped=True, order=8),
    AttackInfo("fab-t", "fab", "FAB-T", white_box=True, stepped=False, order=9),
    AttackInfo("square", "square", "Square", white_box=False, stepped=False, order=10),
    AttackInfo("autoattack", "autoattack", "AutoAttack", white_box=False, stepped=False, order=12),
)}

# Row families that are not attacks but share the charts' vocabulary.
CLEAN, WORST, AA_STAGE = "clean", "worst", "aa-stage"
PSEUDO_FAMILIES = {CLEAN: ("clean", 0), AA_STAGE: ("AutoAttack stage", 11), WORST: ("worst case", 99)}


def family_of(name: str) -> str:
    """The chart family of a results row's attack name (``autoattack:apgd-t`` is an AutoAttack stage)."""
    if name.startswith("autoattack:"):
        return AA_STAGE
    if name in (CLEAN, WORST, "worst-case"):
        return WORST if name != CLEAN else CLEAN
    base = name.removesuffix("-steps-curve").removesuffix("-eps-curve").removesuffix("-large-eps")
    info = ATTACKS.get(base)
    return info.family if info is not None else base


def is_white_box(name: str) -> bool:
    """Whether a results row or bitset name comes from a gradient attack (AutoAttack stages count by stage)."""
    if name.startswith("autoattack:"):
        name = name.split(":", 1)[1]
    base = name.removesuffix("-steps-curve").removesuffix("-eps-curve")
    info = ATTACKS.get(base)
    return info is not None and info.white_box
