"""What an import plans for one schedule it brings in: a trigger definition, or why none
(shared by celery beat's and code's declarations)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclasses.dataclass(frozen=True)
class Mapped:
    """One schedule brought in: its trigger definition, or why it has none."""

    entry: str
    definition: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()
    refused: str | None = None


def trigger_name(entry: str) -> str:
    """A trigger name for a schedule's name: other characters become ``-``."""
    return _NAME_CHARS.sub("-", entry).strip("-")[:200]


def distinct_names(mapped: Iterable[Mapped], what: str) -> list[Mapped]:
    """``mapped`` in order, each one whose name an earlier one took refused (a project
    holds one trigger of a name); ``what`` names the kind of schedule in the reason."""
    result: list[Mapped] = []
    taken: set[str] = set()
    for one in mapped:
        if one.definition is not None:
            if one.definition["name"] in taken:
                one = Mapped(one.entry, refused=f"its name {one.definition['name']!r} is"
                             f" another {what}'s too")
            else:
                taken.add(one.definition["name"])
        result.append(one)
    return result
