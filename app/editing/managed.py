"""Code-managed triggers: the one rule of who may change a trigger that code declares.

``cronbeat sync MODULE:APP`` writes the triggers the code declares and marks each with
its owner (``managed_by``, "MODULE:APP"). Their definitions then belong to that code, so
they cannot drift: an edit by anyone else (a PATCH, a delete, the API's own sync, a bulk
delete by ref, another ``cronbeat sync``) that would change or delete one is refused
with :class:`app.errors.CodeManaged`, unless forced. A forced edit leaves the trigger
code-managed: the owner's next sync puts the code's version back.

Pausing and resuming are operations, not edits (``enabled`` is the operator's, and
``cronbeat sync`` leaves it as it is), and so is running one now.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from app.editing.definitions import EDITABLE
from app.errors import CodeManaged
from app.models import Trigger

#: The columns anyone may change on a code-managed trigger: its paused state.
OPERATIONS = frozenset({"enabled"})


def owned_elsewhere(trigger: Trigger, owner: str | None) -> bool:
    """Whether ``trigger`` belongs to code other than ``owner`` (None: the API)."""
    return trigger.managed_by is not None and trigger.managed_by != owner


def refused_save(trigger: Trigger | None, row: Mapping[str, Any], owner: str | None) -> bool:
    """Whether saving the complete definition ``row`` over ``trigger`` by ``owner`` is an
    edit of another's trigger: it changes a column other than :data:`OPERATIONS`."""
    return trigger is not None and owned_elsewhere(trigger, owner) and any(
        getattr(trigger, column) != row[column] for column in EDITABLE
        if column not in OPERATIONS)


def check_unowned(triggers: Iterable[Trigger], *, by_name: bool = False) -> None:
    """Refuse changing or deleting ``triggers`` if any is code-managed.

    Raises:
        CodeManaged: naming each code-managed one and its owner.
    """
    owners = {t.name: t.managed_by for t in triggers if t.managed_by is not None}
    if owners:
        raise CodeManaged(owners, by_name=by_name)
