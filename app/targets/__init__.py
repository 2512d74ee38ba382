"""Target kinds, one module each (:mod:`app.targets.base` says what a kind is)."""

from __future__ import annotations

from app.enums import TargetKind
from app.targets.base import Delivery, Target
from app.targets.task import Task
from app.targets.webhook import Webhook

__all__ = ["Delivery", "Target", "all_columns", "target_of"]

_KINDS: dict[TargetKind, Target] = {kind.kind: kind for kind in (Webhook(), Task())}


def target_of(kind: TargetKind | str) -> Target:
    """The target kind ``kind`` names."""
    return _KINDS[TargetKind(kind)]


def all_columns() -> dict[str, object]:
    """Every kind's target columns, with their values on a trigger of another kind."""
    return {column: value for target in _KINDS.values()
            for column, value in target.columns.items()}
