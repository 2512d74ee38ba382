"""What the commands that bring schedules in share (``import celery-beat``, ``sync``):
loading the user's code, checking each definition as the API would, writing through
the project's sync, and printing the plan.

A plan lists each schedule as the trigger it becomes (``create``, ``update``,
``unchanged``; past tense with ``--apply``), each one refused with why, and the
project's other triggers, which the sync deletes: the project ends up holding exactly
these schedules.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import re
import sys
from collections.abc import Sequence
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import func, select

from app.config import Settings
from app.editing.sync import SyncResult
from app.errors import ConfigError
from app.importing.entries import Mapped
from cli.main import _pattern, _sessions


def add_project_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tenant``, ``--project`` and ``--apply``, as every such command takes them."""
    from api.schemas.fields import PROJECT_ID_PATTERN, PROJECT_ID_RULE
    from app.editing.apikeys import TENANT_PATTERN

    parser.add_argument("--tenant", required=True,
                        type=_pattern("--tenant", TENANT_PATTERN, "1-64 of A-Z a-z 0-9 . _ -"))
    parser.add_argument("--project", required=True,
                        type=_pattern("--project", re.compile(PROJECT_ID_PATTERN),
                                      PROJECT_ID_RULE.removeprefix("must be ")))
    parser.add_argument("--apply", action="store_true",
                        help="write the plan (without it nothing is written)")


def load_object(path: str) -> tuple[Any, str]:
    """The object ``MODULE:NAME`` names (imported from the current directory), and its
    module's name.

    Raises:
        ConfigError: it cannot be imported, or the module has no such name.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{path!r}: give it as MODULE:NAME (shop.celery:app)")
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail any way
        raise ConfigError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
                          ) from None
    finally:
        sys.path.remove(".")
    found = getattr(module, attribute, None)
    if found is None:
        raise ConfigError(f"{module_name!r} has no {attribute!r}")
    return found, module_name


def is_celery_app(found: Any) -> bool:
    """Whether ``found`` looks like a Celery app (its configuration and its tasks)."""
    return hasattr(found, "conf") and hasattr(found, "tasks")


def load_app(path: str) -> Any:
    """The Celery app ``MODULE:APP`` names.

    Raises:
        ConfigError: it cannot be imported, or is not a Celery app.
    """
    found, _ = load_object(path)
    if not is_celery_app(found):
        raise ConfigError(f"{path!r} is not a Celery app")
    return found


def checked(mapped: list[Mapped], settings: Settings) -> tuple[list[Mapped], list[Any]]:
    """Each definition loaded by the API's schema; one it refuses becomes a refusal."""
    from api import create_app
    from api.schemas.triggers import TriggerCreateSchema

    web = create_app(settings)
    loaded: list[Any] = []
    result: list[Mapped] = []
    try:
        with web.app_context():
            for one in mapped:
                if one.definition is not None:
                    try:
                        loaded.append(TriggerCreateSchema().load(one.definition))
                    except ValidationError as exc:
                        one = dataclasses.replace(
                            one, definition=None, refused=f"refused as the API would: "
                            f"{exc.messages}")
                result.append(one)
    finally:
        web.extensions["cronbeat"].engine.dispose()
    return result, loaded


def sync_project(args: argparse.Namespace, settings: Settings, loaded: Sequence[Any], *,
                 write: bool, **options: Any) -> SyncResult:
    """The project's sync to ``loaded`` in one transaction (a dry run unless ``write``);
    ``options`` go to :func:`app.editing.sync.sync_triggers`."""
    from app.editing import sync

    with _sessions(settings).begin() as session:
        now = session.execute(select(func.now())).scalar_one()
        return sync.sync_triggers(session, args.tenant, args.project, loaded, now=now,
                                  dry_run=not write, **options)


def describe(definition: dict[str, Any]) -> str:
    """A definition in a line: its schedule, then the task call (and its queue, and
    "(paused)" when it is written disabled)."""
    target = definition["target"]
    if "cron_expression" in definition:
        schedule = f"cron {definition['cron_expression']!r} in {definition['timezone']}"
    elif "run_at" in definition:
        run_at = str(definition["run_at"])
        # A wall time without an offset means nothing without its zone.
        zone = ("" if dt.datetime.fromisoformat(run_at).tzinfo is not None
                else f" ({definition.get('timezone', 'UTC')})")
        schedule = f"once at {run_at}{zone}"
    else:
        schedule = f"every {definition['interval_s']} s" + (
            f" from {definition['start_at']}" if "start_at" in definition else "")
    call = ", ".join([*map(repr, target.get("args", [])),
                      *(f"{k}={v!r}" for k, v in target.get("kwargs", {}).items())])
    queue = f" on {target['queue']}" if "queue" in target else ""
    paused = " (paused)" if definition.get("enabled") is False else ""
    return f"{schedule}: {target['task_name']}({call}){queue}{paused}"


def print_plan(mapped: list[Mapped], result: SyncResult, *, applied: bool, noun: str,
               absent: str) -> None:
    """Print each schedule's line, the deleted triggers' (``absent`` says why they go)
    and the counts of ``noun`` (entries, declarations)."""
    verbs = {name: verb for verb, names in (
        ("create", result.created), ("update", result.updated),
        ("unchanged", result.unchanged)) for name in names}
    done = {"create": "created", "update": "updated", "unchanged": "unchanged"}
    for one in mapped:
        if one.definition is None:
            print(f"  refused    {one.entry!r}: {one.refused}")
            continue
        verb = verbs[one.definition["name"]]
        shown = done[verb] if applied else verb
        print(f"  {shown:<10} {one.definition['name']}  {describe(one.definition)}")
        for note in one.notes:
            print(f"               note: {note}")
    for name in result.deleted:
        print(f"  {'deleted' if applied else 'delete':<10} {name}  ({absent})")
    refused = sum(1 for one in mapped if one.definition is None)
    create, update, delete = (("created", "updated", "deleted") if applied
                              else ("to create", "to update", "to delete"))
    print(f"{len(mapped)} {noun}: {len(result.created)} {create}, {len(result.updated)}"
          f" {update}, {len(result.unchanged)} unchanged, {refused} refused;"
          f" {len(result.deleted)} other triggers {delete}")
