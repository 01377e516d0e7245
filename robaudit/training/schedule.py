"""Step learning-rate schedule: the paper's lr x 0.1 at epochs 60 and 90 of 200, scaled to any length."""
from __future__ import annotations

import math

PAPER_EPOCHS = 200
PAPER_MILESTONES = (60, 90)
DECAY = 0.1


def _round_half_up(value: float) -> int:
    # Python's round() is banker's rounding (round(2.5) == 2); a schedule should not depend on that.
    return int(math.floor(value + 0.5))


def scaled_milestones(epochs: int) -> list[int]:
    """The paper's decay epochs at the same fractions (0.30 and 0.45) of ``epochs``, rounded half up.

    Milestones are 0-based epoch indices at which the decay takes effect (epoch
    60 is the 61st epoch, as in the official code). Each is at least 1 and the
    second is kept strictly after the first, so short runs still decay twice
    when they can: 5 epochs -> [2, 3] (lr 0.1, 0.1, 0.01, 0.001, 0.001),
    10 -> [3, 5], 200 -> [60, 90]. Milestones at or past ``epochs`` never fire.
    """
    first = max(1, _round_half_up(epochs * PAPER_MILESTONES[0] / PAPER_EPOCHS))
    second = max(first + 1, _round_half_up(epochs * PAPER_MILESTONES[1] / PAPER_EPOCHS))
    return [first, second]


def lr_at(epoch: int, base_lr: float, milestones: list[int], decay: float = DECAY) -> float:
    """Learning rate for 0-based ``epoch``: base_lr times decay for each milestone already reached."""
    lr = base_lr * decay ** sum(epoch >= m for m in milestones)
    return float(f"{lr:.12g}")  # 0.1 * 0.1 is 0.010000000000000002 in floating point; report 0.01
