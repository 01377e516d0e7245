"""What the checkpoint checks need to know of a dataset (robaudit.data.DatasetInfo has it).

Its own module so that the validator and its ONNX branch share it without importing each other."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class DatasetShape(Protocol):
    @property
    def num_classes(self) -> int: ...
    @property
    def in_channels(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def mean(self) -> Sequence[float]: ...
    @property
    def std(self) -> Sequence[float]: ...
