"""Schedules declared in code (``cronbeat.schedule``, ``cronbeat.Schedule``) as trigger
definitions (pure): each becomes the definition ``cronbeat sync`` writes, named as
declared or after its task; a name an earlier declaration took is refused."""

from __future__ import annotations

from collections.abc import Iterable

from app.importing.entries import Mapped, trigger_name, unique_names
from cronbeat.declarations import Declared


def map_declared(one: Declared) -> Mapped:
    """Map one collected declaration."""
    name = one.schedule.name or trigger_name(one.task_name)
    entry = one.schedule.name or one.task_name
    notes = () if name == entry else (f"named {name!r}",)
    return Mapped(entry, one.schedule.definition(one.task_name, name), notes)


def map_declarations(declared: Iterable[Declared]) -> list[Mapped]:
    """Map every declaration, in order (see the module doc)."""
    return unique_names(map(map_declared, declared), "declaration")
