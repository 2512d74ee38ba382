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

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from app.editing.definitions import EDITABLE
from app.errors import CodeManaged
from app.models import Trigger

log = logging.getLogger("app.editing")

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


def guard(triggers: Iterable[Trigger], *, force: bool, edit: str, by_name: bool = False,
          log_forced: bool = True) -> None:
    """Refuse changing or deleting ``triggers`` if any is code-managed; with ``force``,
    let it happen and log each one (``trigger.forced_edit``: the owner's next sync puts
    the code's version back, so an operator should know who forced what).

    Raises:
        CodeManaged: naming each code-managed one and its owner (not with ``force``).
    """
    owned = [t for t in triggers if t.managed_by is not None]
    if owned and not force:
        raise CodeManaged({t.name: t.managed_by or "" for t in owned}, by_name=by_name)
    for trigger in owned if log_forced else ():
        log.warning("a code-managed trigger was changed by force", extra={
            "action": "trigger.forced_edit", "edit": edit, "tenant_id": trigger.tenant_id,
            "project_id": trigger.project_id, "trigger_id": str(trigger.id),
            "trigger_name": trigger.name, "managed_by": trigger.managed_by})
