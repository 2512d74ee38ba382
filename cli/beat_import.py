"""``cronbeat import celery-beat MODULE:APP --tenant T --project P [--apply]``.

Reads the Celery app's ``beat_schedule`` and zone, maps each entry to a trigger
(app.importing.celery_beat), checks every definition as the API checks a sync body
(the same schema, the operator's settings), and prints the plan: what the project's
sync would create, update, leave unchanged and delete, and each entry refused, with
why. ``--apply`` writes it through the same sync as ``PUT .../triggers``, in one
transaction, so a second run reports everything unchanged; each first run counts
from now (saving never fires a burst of missed runs). The project ends up holding
exactly the imported schedule: import into a project of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import sys
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import func, select

from app.config import Settings
from app.errors import ConfigError
from app.importing.celery_beat import Mapped, app_timezone, map_beat_schedule
from cli.main import Commands, _pattern, _sessions, command_group


@command_group
def _import_commands(commands: Commands) -> None:
    from api.schemas.fields import PROJECT_ID_PATTERN, PROJECT_ID_RULE
    from app.editing.apikeys import TENANT_PATTERN

    group = commands.add_parser("import", help="bring schedules in from elsewhere")
    sources = group.add_subparsers(dest="source", required=True, metavar="SOURCE")
    parser = sources.add_parser(
        "celery-beat", help="a Celery app's beat_schedule: plan, or --apply it")
    parser.add_argument("app", metavar="MODULE:APP", help="the Celery app, e.g. shop:app")
    parser.add_argument("--tenant", required=True,
                        type=_pattern("--tenant", TENANT_PATTERN, "1-64 of A-Z a-z 0-9 . _ -"))
    parser.add_argument("--project", required=True,
                        type=_pattern("--project", re.compile(PROJECT_ID_PATTERN),
                                      PROJECT_ID_RULE.removeprefix("must be ")))
    parser.add_argument("--apply", action="store_true",
                        help="write the plan (without it nothing is written)")
    parser.set_defaults(handler=_import_celery_beat)


def load_app(path: str) -> Any:
    """The Celery app ``MODULE:APP`` names.

    Raises:
        ConfigError: it cannot be imported, or is not a Celery app.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{path!r}: give the app as MODULE:APP (shop.celery:app)")
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail any way
        raise ConfigError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
                          ) from None
    finally:
        sys.path.remove(".")
    app = getattr(module, attribute, None)
    if app is None or not hasattr(app, "conf"):
        raise ConfigError(f"{path!r} is not a Celery app")
    return app


def _checked(mapped: list[Mapped], settings: Settings) -> tuple[list[Mapped], list[Any]]:
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


def _describe(definition: dict[str, Any]) -> str:
    target = definition["target"]
    schedule = (f"cron {definition['cron_expression']!r} in {definition['timezone']}"
                if "cron_expression" in definition else f"every {definition['interval_s']} s")
    call = ", ".join([*map(repr, target.get("args", [])),
                      *(f"{k}={v!r}" for k, v in target.get("kwargs", {}).items())])
    queue = f" on {target['queue']}" if "queue" in target else ""
    return f"{schedule}: {target['task_name']}({call}){queue}"


def _import_celery_beat(args: argparse.Namespace) -> int:
    from app.editing import sync

    app = load_app(args.app)
    zone, zone_note = app_timezone(app.conf)
    settings = Settings.from_env()
    mapped, loaded = _checked(map_beat_schedule(app.conf.beat_schedule or {}, zone), settings)
    with _sessions(settings).begin() as session:
        now = session.execute(select(func.now())).scalar_one()
        result = sync.sync_triggers(session, args.tenant, args.project, loaded, now=now,
                                    dry_run=not args.apply)
    verbs = {name: verb for verb, names in (
        ("create", result.created), ("update", result.updated),
        ("unchanged", result.unchanged)) for name in names}
    done = {"create": "created", "update": "updated", "unchanged": "unchanged"}
    print(f"celery beat schedule of {args.app} (zone {zone}) into tenant {args.tenant},"
          f" project {args.project}: "
          + ("applied" if args.apply else "plan, nothing written (--apply writes it)"))
    if zone_note:
        print(f"  note: {zone_note}")
    for one in mapped:
        if one.definition is None:
            print(f"  refused    {one.entry!r}: {one.refused}")
            continue
        verb = verbs[one.definition["name"]]
        shown = done[verb] if args.apply else verb
        print(f"  {shown:<10} {one.definition['name']}  {_describe(one.definition)}")
        for note in one.notes:
            print(f"               note: {note}")
    for name in result.deleted:
        print(f"  {'deleted' if args.apply else 'delete':<10} {name}  (not in the schedule)")
    refused = sum(1 for one in mapped if one.definition is None)
    create, update, delete = (("created", "updated", "deleted") if args.apply
                              else ("to create", "to update", "to delete"))
    print(f"{len(mapped)} entries: {len(result.created)} {create}, {len(result.updated)}"
          f" {update}, {len(result.unchanged)} unchanged, {refused} refused;"
          f" {len(result.deleted)} other triggers {delete}")
    return 0
