"""``cronbeat import celery-beat MODULE:APP ...`` and ``cronbeat import django-celery-beat
--database-url URL ...``, each with ``--tenant T --project P [--apply]``.

The first reads a Celery app's ``beat_schedule`` and zone (app.importing.celery_beat);
the second reads django-celery-beat's tables from another PostgreSQL database, only
reading it, in a read-only transaction (app.importing.django_source), and maps its
periodic tasks (app.importing.django_celery_beat). Both then check every definition as
the API checks a sync body (the same schema, the operator's settings) and print the
plan: what the project's sync would create, update, leave unchanged and delete, and each
entry refused, with why. ``--apply`` writes it through the same sync as ``PUT
.../triggers``, in one transaction, so a second run reports everything unchanged; each
first run counts from now (saving never fires a burst of missed runs). The project ends
up holding exactly the imported schedule: import into a project of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import re
import sys
from collections.abc import Callable
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import func, select

from app.config import Settings
from app.errors import ConfigError
from app.importing.entries import Mapped
from cli.main import Commands, _pattern, _sessions, command_group


@command_group
def _import_commands(commands: Commands) -> None:
    from api.schemas.fields import PROJECT_ID_PATTERN, PROJECT_ID_RULE
    from app.editing.apikeys import TENANT_PATTERN

    group = commands.add_parser("import", help="bring schedules in from elsewhere")
    sources = group.add_subparsers(dest="source", required=True, metavar="SOURCE")
    beat = sources.add_parser(
        "celery-beat", help="a Celery app's beat_schedule: plan, or --apply it")
    beat.add_argument("app", metavar="MODULE:APP", help="the Celery app, e.g. shop:app")
    beat.set_defaults(handler=_import_celery_beat)
    django = sources.add_parser(
        "django-celery-beat",
        help="django-celery-beat's periodic tasks, read from its database: plan, or --apply")
    django.add_argument("--database-url", required=True, metavar="URL",
                        help="the Django project's PostgreSQL database (only read)")
    django.set_defaults(handler=_import_django_celery_beat)
    for parser in (beat, django):
        parser.add_argument("--tenant", required=True, type=_pattern(
            "--tenant", TENANT_PATTERN, "1-64 of A-Z a-z 0-9 . _ -"))
        parser.add_argument("--project", required=True, type=_pattern(
            "--project", re.compile(PROJECT_ID_PATTERN),
            PROJECT_ID_RULE.removeprefix("must be ")))
        parser.add_argument("--apply", action="store_true",
                            help="write the plan (without it nothing is written)")


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
    if "cron_expression" in definition:
        schedule = f"cron {definition['cron_expression']!r} in {definition['timezone']}"
    elif "run_at" in definition:
        schedule = f"once at {definition['run_at']}"
    else:
        schedule = f"every {definition['interval_s']} s" + (
            f" from {definition['start_at']}" if "start_at" in definition else "")
    call = ", ".join([*map(repr, target.get("args", [])),
                      *(f"{k}={v!r}" for k, v in target.get("kwargs", {}).items())])
    queue = f" on {target['queue']}" if "queue" in target else ""
    paused = " (paused)" if definition.get("enabled") is False else ""
    return f"{schedule}: {target['task_name']}({call}){queue}{paused}"


def _import_celery_beat(args: argparse.Namespace) -> int:
    from app.importing.celery_beat import app_timezone, map_beat_schedule

    app = load_app(args.app)
    zone, zone_note = app_timezone(app.conf)
    return _plan_or_apply(
        args, f"celery beat schedule of {args.app} (zone {zone})",
        [zone_note] if zone_note else [],
        lambda now: map_beat_schedule(app.conf.beat_schedule or {}, zone))


def _import_django_celery_beat(args: argparse.Namespace) -> int:
    from app.importing.django_celery_beat import map_periodic_tasks
    from app.importing.django_source import read_only, read_periodic_tasks, shown, source_url

    url = source_url(args.database_url, "--database-url")
    # Read before Cronbeat's transaction opens: the other database's latency stays out
    # of it.
    with read_only(url) as connection:
        rows = read_periodic_tasks(connection, url)
    return _plan_or_apply(args, f"django-celery-beat periodic tasks of {shown(url)}", [],
                          lambda now: map_periodic_tasks(rows, now))


def _plan_or_apply(args: argparse.Namespace, source: str, notes: list[str],
                   map_entries: Callable[[dt.datetime], list[Mapped]]) -> int:
    """Map the source's entries at the transaction's ``now``, check them, sync (a dry
    run unless ``--apply``) and print the plan; returns the exit status."""
    from app.editing import sync

    settings = Settings.from_env()
    with _sessions(settings).begin() as session:
        # One instant for the mapping (what is already past) and the sync (first runs).
        now = session.execute(select(func.now())).scalar_one()
        mapped, loaded = _checked(map_entries(now), settings)
        result = sync.sync_triggers(session, args.tenant, args.project, loaded, now=now,
                                    dry_run=not args.apply)
    verbs = {name: verb for verb, names in (
        ("create", result.created), ("update", result.updated),
        ("unchanged", result.unchanged)) for name in names}
    done = {"create": "created", "update": "updated", "unchanged": "unchanged"}
    print(f"{source} into tenant {args.tenant}, project {args.project}: "
          + ("applied" if args.apply else "plan, nothing written (--apply writes it)"))
    for note in notes:
        print(f"  note: {note}")
    for one in mapped:
        if one.definition is None:
            print(f"  refused    {one.entry!r}: {one.refused}")
            continue
        verb = verbs[one.definition["name"]]
        label = done[verb] if args.apply else verb
        print(f"  {label:<10} {one.definition['name']}  {_describe(one.definition)}")
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
