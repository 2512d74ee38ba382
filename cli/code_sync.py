"""``cronbeat sync SOURCE --tenant T --project P [--apply] [--force]``: schedules as code.

SOURCE is ``MODULE:APP``, a Celery app whose tasks declare their schedules with
``@cronbeat.schedule`` (its modules are imported as a worker imports them: ``imports``,
``include``, autodiscovery), or ``MODULE:NAME``, a list of ``cronbeat.Schedule``. Each
declaration is mapped to a trigger (app.importing.code), checked as the API checks it,
and the plan printed; ``--apply`` writes it in one transaction through the project's
sync, marking every trigger it writes as managed by SOURCE: the API and the console
then refuse to edit them unless forced (app.editing.managed). The project holds exactly
the declared schedules: a trigger no longer declared is deleted. A second run reports
everything unchanged; a trigger paused meanwhile stays paused. A declaration refused
makes the command exit 1, and ``--apply`` then writes nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

from app.config import Settings
from app.errors import CodeManaged, ConfigError, Conflict, managed_by_code
from app.importing.code import map_declarations
from cli.main import Commands, command_group
from cli.plans import (
    add_project_arguments,
    checked,
    is_celery_app,
    load_object,
    print_plan,
    sync_project,
)
from cronbeat.declarations import Declared, ScheduleError, declared_in, registry


@command_group
def _sync_commands(commands: Commands) -> None:
    parser = commands.add_parser(
        "sync", help="make a project hold exactly the schedules your code declares"
                     " (cronbeat.schedule): plan, or --apply it")
    parser.add_argument(
        "source", metavar="MODULE:APP",
        help="the Celery app whose tasks declare schedules (shop.celery:app), or a list"
             " of cronbeat.Schedule (shop.schedules:SCHEDULES)")
    add_project_arguments(parser)
    parser.add_argument("--force", action="store_true",
                        help="also take over triggers that other code manages")
    parser.set_defaults(handler=_sync)


def collect(source: str) -> list[Declared]:
    """The declarations SOURCE holds (see the module doc).

    Raises:
        ConfigError: it cannot be imported, is neither an app nor a list, or a
            declaration is wrong.
    """
    found, module = load_object(source)
    try:
        if is_celery_app(found):
            _import_task_modules(found)
            return registry.collect(found)
        if isinstance(found, list | tuple):
            return declared_in(found, module)
    except ScheduleError as exc:
        raise ConfigError(str(exc)) from None
    raise ConfigError(f"{source!r} is neither a Celery app nor a list of cronbeat.Schedule")


def _import_task_modules(app: Any) -> None:
    try:
        app.loader.import_default_modules()
    except Exception as exc:  # the user's modules may fail any way
        raise ConfigError(f"cannot import the task modules of the app: {type(exc).__name__}:"
                          f" {exc}") from None


def _sync(args: argparse.Namespace) -> int:
    mapped = map_declarations(collect(args.source))
    settings = Settings.from_env()
    mapped, loaded = checked(mapped, settings)
    refused = sum(1 for one in mapped if one.definition is None)
    # A declaration refused is not written, and its trigger would be deleted as no longer
    # declared: a deploy job stops (exit 1) rather than drop a schedule over a typo.
    write = args.apply and not refused
    try:
        result = sync_project(args, settings, loaded, write=write, owner=args.source,
                              force=args.force)
    except CodeManaged as exc:
        phrase, it = managed_by_code(exc.owners)
        raise Conflict(f"{phrase}, not {args.source}: sync {it} from there, or pass --force"
                       f" to take {it} over; nothing written") from None
    if write:
        state = "applied"
    elif args.apply:
        state = f"nothing written: {refused} refused (fix them, then --apply)"
    else:
        state = "plan, nothing written (--apply writes it)"
    print(f"schedules declared in {args.source} into tenant {args.tenant}, project"
          f" {args.project}, which holds exactly these: {state}")
    print_plan(mapped, result, applied=write, noun="declarations",
               absent=f"not declared in {args.source}")
    return 1 if refused else 0
