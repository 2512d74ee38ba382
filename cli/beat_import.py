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
import datetime as dt
from collections.abc import Callable

from sqlalchemy import func, select

from app.config import Settings
from app.importing.entries import Mapped
from cli.main import Commands, _sessions, command_group
from cli.plans import add_project_arguments, checked, load_app, print_plan


@command_group
def _import_commands(commands: Commands) -> None:
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
        add_project_arguments(parser)


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
        mapped, loaded = checked(map_entries(now), settings)
        result = sync.sync_triggers(session, args.tenant, args.project, loaded, now=now,
                                    dry_run=not args.apply)
    print(f"{source} into tenant {args.tenant}, project {args.project}: "
          + ("applied" if args.apply else "plan, nothing written (--apply writes it)"))
    for note in notes:
        print(f"  note: {note}")
    print_plan(mapped, result, applied=args.apply, noun="entries", absent="not in the schedule")
    return 0
