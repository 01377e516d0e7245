"""How far an evaluation is: done and total work units, the current stage, its timing, the ETA; cancellation."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from robaudit.errors import Cancelled


@dataclass
class EvalProgress:
    done: float          # work units finished (about one forward+backward of one image each)
    total: float         # estimated work units in the whole evaluation
    stage: str
    eta_seconds: float | None


@dataclass
class Progress:
    """Done and total work units, the current stage and its timing; polls should_stop for the caller."""

    report_to: Callable[[EvalProgress], None] | None = None
    should_stop: Callable[[], bool] | None = None
    done: float = 0.0
    total: float = 1.0
    stage: str = "starting"
    timing: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    computed_any: bool = False   # no ETA until some work was computed rather than read back
    last_poll: float = 0.0

    def poll(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled(f"evaluation stopped during {self.stage}; finished batches are stored")

    def throttled_poll(self, seconds: float) -> None:
        """Report and poll at most once every ``seconds`` (from inside a long attack such as AutoAttack)."""
        now = time.monotonic()
        if now - self.last_poll >= seconds:
            self.last_poll = now
            self.report()
            self.poll()

    def report(self) -> None:
        if self.report_to is None:
            return
        elapsed = time.monotonic() - self.started
        done = min(self.done, self.total)
        eta = elapsed / done * (self.total - done) if done > 0 and self.computed_any else None
        self.report_to(EvalProgress(done=done, total=self.total, stage=self.stage, eta_seconds=eta))

    def advance(self, units: float) -> None:
        self.done += units
        self.report()

    def credit(self, units: float) -> None:
        """Count finished work without reporting it (inside AutoAttack, which reports when it polls)."""
        self.done += units

    def replan(self, old_units: float, new_units: float) -> None:
        """A stage's planned work changed from ``old_units`` to ``new_units`` (AutoAttack, as points fall)."""
        self.total += new_units - old_units

    @contextmanager
    def stage_of(self, name: str) -> Iterator[None]:
        self.stage = name
        t0 = time.monotonic()
        self.report()
        try:
            yield
        finally:
            self.timing[name] = self.timing.get(name, 0.0) + time.monotonic() - t0

    def finish(self) -> None:
        self.stage = "done"
        self.done = self.total
        self.report()

    def elapsed(self) -> float:
        return time.monotonic() - self.started
