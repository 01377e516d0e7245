"""What an attack costs, for the progress bar and the ETA: one unit is about one forward+backward of one image."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robaudit.evaluation.presets import EvalSpec


def every_point(spec: EvalSpec, start: int, end: int) -> int:
    return end - start


@dataclass(frozen=True)
class Cost:
    per_step: float                                          # units per point and step (iterate, draw, query)
    steps: Callable[[EvalSpec], float]                       # steps per point
    share: float = 1.0                                       # expected share of those steps taken (early stops)
    points: Callable[[EvalSpec, int, int], int] = every_point   # how many of the points [start, end) it runs on

    def per_point(self, spec: EvalSpec) -> float:
        """Expected units per point it runs on."""
        return self.share * self.per_step * self.steps(spec)

    def units(self, spec: EvalSpec, start: int, end: int) -> float:
        """Expected units at one eps over the test points [start, end) (a shard, or all n)."""
        return self.points(spec, start, end) * self.per_point(spec)


def fixed(steps: float) -> Callable[[EvalSpec], float]:
    return lambda spec: steps
