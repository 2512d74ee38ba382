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

from app.config import Settings
from app.importing.celery_beat import app_timezone, map_beat_schedule
from cli.main import Commands, command_group
from cli.plans import add_project_arguments, checked, load_app, print_plan, sync_project


@command_group
def _import_commands(commands: Commands) -> None:
    group = commands.add_parser("import", help="bring schedules in from elsewhere")
    sources = group.add_subparsers(dest="source", required=True, metavar="SOURCE")
    parser = sources.add_parser(
        "celery-beat", help="a Celery app's beat_schedule: plan, or --apply it")
    parser.add_argument("app", metavar="MODULE:APP", help="the Celery app, e.g. shop:app")
    add_project_arguments(parser)
    parser.set_defaults(handler=_import_celery_beat)


def _import_celery_beat(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    zone, zone_note = app_timezone(app.conf)
    settings = Settings.from_env()
    mapped, loaded = checked(map_beat_schedule(app.conf.beat_schedule or {}, zone), settings)
    result = sync_project(args, settings, loaded, write=args.apply)
    print(f"celery beat schedule of {args.app} (zone {zone}) into tenant {args.tenant},"
          f" project {args.project}: "
          + ("applied" if args.apply else "plan, nothing written (--apply writes it)"))
    if zone_note:
        print(f"  note: {zone_note}")
    print_plan(mapped, result, applied=args.apply, noun="entries", absent="not in the schedule")
    return 0
