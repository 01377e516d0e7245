"""What an attack runner works with: the model and points, the spec, batching, progress and the results.

A runner attacks only clean-correct points (``Run.attack``); its per-batch records hold the
absolute indices of the points it attacked and one value per point, which ``per_point`` spreads back
over all n points.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from robaudit.attacks.common import PointStreams
from robaudit.errors import RobauditError
from robaudit.evaluation import gallery
from robaudit.evaluation.aggregate import Aggregate, PerPoint
from robaudit.evaluation.batches import Batch, Batches
from robaudit.evaluation.presets import EvalSpec
from robaudit.evaluation.progress import Progress
from robaudit.evaluation.results import Bits, within_eps
from robaudit.evaluation.runners.pgd import PGDRun
from robaudit.evaluation.store import Record


@dataclass(frozen=True)
class Inputs:
    """What a shard computes with: the model, the test points (on the model's device), the surrogate."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    surrogate: nn.Module | None = None


# attack(index, start, end) -> the per-point fields of one batch's record, for the points ``index``
PointAttack = Callable[[torch.Tensor, int, int], Record]


@dataclass
class Run:
    """One evaluation pass: a shard computing its batches, or the merge reading every batch back.

    The merge has no model and no data (``inputs=None``): it only reads stored records, and a
    runner that asks it for the model or the points gets an error naming the missing batch's job.
    """

    inputs: Inputs | None
    spec: EvalSpec
    n: int
    device: torch.device
    batches: Batches
    progress: Progress
    out: Aggregate
    clean: Bits = field(default_factory=lambda: np.zeros(0, dtype=bool))   # set by the clean pass
    num_classes: int = 0
    randomized: bool = False                                                # the forward pass is random (C11's probe)
    pgd_runs: dict[tuple[float, str], PGDRun] = field(default_factory=dict)

    def _inputs(self) -> Inputs:
        if self.inputs is None:
            raise RobauditError("the merge step reads stored batches only; it cannot run a model")
        return self.inputs

    @property
    def model(self) -> nn.Module:
        return self._inputs().model

    @property
    def x(self) -> torch.Tensor:
        return self._inputs().x

    @property
    def y(self) -> torch.Tensor:
        return self._inputs().y

    @property
    def surrogate(self) -> nn.Module:
        surrogate = self._inputs().surrogate
        if surrogate is None:
            raise RobauditError("the spec includes a transfer attack but no surrogate model was given")
        return surrogate

    @property
    def norm(self) -> str:
        return self.spec.norm

    def job(self, key: str) -> str:
        """A job's stored key under this evaluation's norm: L-inf keys are those stored before norms
        existed (so their batches are still found), other norms add ``/norm=...`` (never reused across norms)."""
        return key if self.spec.norm == "linf" else f"{key}/norm={self.spec.norm}"

    def streams(self, stream: str, index: torch.Tensor) -> PointStreams:
        """Per-point random streams for the points ``index`` (see Batches.point_streams)."""
        return self.batches.point_streams(stream, index)

    def points(self, start: int, end: int, mask: Bits | None = None) -> npt.NDArray[np.intp]:
        """Indices (absolute) in [start, end) that are clean-correct and, if given, in ``mask``."""
        keep = self.clean[start:end].copy()
        if mask is not None:
            keep &= mask[start:end]
        return start + np.nonzero(keep)[0]

    def attack(self, job: str, units_per_point: float, attack: PointAttack, empty: Record, *,
               mask: Bits | None = None, limit: int | None = None,
               source: gallery.Source | None = None) -> list[Batch]:
        """``attack`` on the clean-correct points (in ``mask``) of each batch; a batch without any stores ``empty``.

        ``source``: the attack keeps adversarial examples for the gallery (its records' ``adv``, made
        with ``adversarial``); the merge collects them into ``out.captures``.
        """

        def compute(start: int, end: int) -> Record:
            index = self.points(start, end, mask)
            if len(index) == 0:
                return {"index": [], **empty}
            return {"index": index.tolist(), **attack(torch.as_tensor(index, device=self.device), start, end)}

        keep = self.gallery_limit(source.eps) if source is not None else 0
        records = self.batches.run(job, compute, units_per_point, limit=limit, gallery=keep)
        if source is not None:
            self.out.captures += [(source, record["adv"]) for _, _, record in records if record.get("adv")]
        return records

    def gallery_limit(self, eps: float) -> int:
        """How many of the first points keep adversarial examples from an attack at ``eps``: the gallery's N
        for attacks inside the primary eps's ball (they count towards its worst case), else none."""
        return self.spec.gallery_examples if within_eps(eps, self.spec.primary_eps) else 0

    def adversarial(self, index: torch.Tensor, eps: float, x_adv: torch.Tensor, broken: torch.Tensor,
                    step: torch.Tensor | None = None, restart: torch.Tensor | None = None,
                    passes: int = 1) -> Record:
        """The record field ``adv`` for the broken points of ``index`` that the gallery keeps (or nothing);
        ``passes`` > 1: the predicted class is by logits averaged over that many passes (EOT attacks)."""
        record = gallery.adversarial_record(self.model, index, x_adv, broken, step, self.gallery_limit(eps),
                                            restart, passes)
        return {} if record is None else {"adv": record}

    def per_point(self, records: list[Batch], name: str, fill: int) -> PerPoint:
        """One value per point from the records' ``name`` field; ``fill`` for points not attacked."""
        values = np.full(self.n, fill, dtype=np.int64)
        for _, _, record in records:
            if record["index"]:
                values[np.asarray(record["index"])] = np.asarray(record[name], dtype=np.int64)
        return values

    def note(self, text: str) -> None:
        self.out.notes.append(text)
